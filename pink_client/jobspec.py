"""What a job runs with, from ``pink submit``'s options: the command after ``--``,
``--entrypoint``, ``-e/--env`` and ``--env-file`` (docker's syntax), ``--workdir``, ``--data``,
``--cpus``, ``--memory``, ``--shm-size``, ``--retry-lost``, ``--notify`` and ``--webhook``. They travel as the ``Pink-Job-Spec`` header, a
JSON object (docs/api.md); the server checks every field and answers 400 naming a wrong one.
Sizes go as written ("16g"): the server parses them."""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import Any, Mapping

from .errors import EXIT_USAGE, CliError

SPEC_HEADER = "Pink-Job-Spec"
#: The largest header the server takes; checked here so no tarball is sent for nothing.
MAX_SPEC_BYTES = 32 << 10


def env_assignment(text: str, environ: Mapping[str, str], where: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> (KEY, VALUE); a bare ``KEY`` takes its value from ``environ``."""
    name, sep, value = text.partition("=")
    if not name or any(c.isspace() for c in name):
        raise CliError(EXIT_USAGE, f"{where}: {name!r} is not a variable name (give KEY=VALUE)")
    if sep:
        return name, value
    if name not in environ:
        raise CliError(EXIT_USAGE, f"{where}: {name} is not set in your environment; give {name}=VALUE")
    return name, environ[name]


def read_env_file(path: str, environ: Mapping[str, str]) -> dict[str, str]:
    """docker's ``--env-file``: one ``KEY=VALUE`` a line, the value taken as written (quotes
    included); blank lines and lines starting with ``#`` are skipped; a bare ``KEY`` is taken
    from ``environ``."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(EXIT_USAGE, f"cannot read --env-file {path}: {exc}") from exc
    env = {}
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r").lstrip()
        if line and not line.startswith("#"):
            name, value = env_assignment(line, environ, f"{path}, line {number}")
            env[name] = value
    return env


def job_spec(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The header's fields for the options given (none: an empty dict). ``-e`` wins over
    ``--env-file``, a later one over an earlier one, as in ``docker run``."""
    spec: dict[str, Any] = {}
    if args.argv is not None:
        spec["command"] = args.argv
    if args.entrypoint is not None:
        try:
            spec["entrypoint"] = shlex.split(args.entrypoint)  # "" clears the image's
        except ValueError as exc:
            raise CliError(EXIT_USAGE, f"--entrypoint {args.entrypoint!r}: {exc}") from None
    env: dict[str, str] = {}
    for path in args.env_file or ():
        env.update(read_env_file(path, environ))
    for item in args.env or ():
        name, value = env_assignment(item, environ, "-e")
        env[name] = value
    if env:
        spec["env"] = env
    if args.data:
        spec["data"] = args.data
    for key, value in (("workdir", args.workdir), ("cpus", args.cpus), ("memory", args.memory),
                       ("shm_size", args.shm_size), ("retry_lost", getattr(args, "retry_lost", None)),
                       ("webhook", getattr(args, "webhook", None))):
        if value is not None:
            spec[key] = value
    if getattr(args, "notify", False):
        spec["notify"] = True
    return spec


def spec_headers(spec: dict[str, Any]) -> dict[str, str]:
    """The request header carrying ``spec`` (none for an empty one)."""
    if not spec:
        return {}
    value = json.dumps(spec, ensure_ascii=True, separators=(",", ":"))
    if len(value) > MAX_SPEC_BYTES:
        raise CliError(EXIT_USAGE, f"the command, entrypoint and environment take {len(value)} bytes "
                                   f"as JSON; the server takes at most {MAX_SPEC_BYTES}")
    return {SPEC_HEADER: value}
