"""PINK's own configuration and accounts for the dev cluster: pink.toml files, pink-admin runs.

Config files are written with ``tomli_w`` and read back with :func:`pink.config.load`, so a bad
key fails here and not in a daemon's log; users and tokens are made by ``pink-admin``, the
command an operator uses on a deployed web server.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import tomli_w

from pink import config as pink_config

from .process import REPO_ROOT, ServiceError, write_private

_SECTIONS = {"etcd": pink_config.EtcdConfig, "web": pink_config.WebConfig, "worker": pink_config.WorkerConfig,
             "notify": pink_config.NotifyConfig, "scheduling": pink_config.SchedulingConfig}


def write_config(path: str | os.PathLike[str], **sections: Mapping[str, Any]) -> Path:
    """Write a pink TOML config (sections ``etcd``, ``web``, ``worker``) and check it loads.

    Values are TOML's (str, int, float, bool, lists of them) or paths. Unknown sections or keys
    raise :class:`pink.errors.ConfigError`, like the loader does. The file is 0600 because the
    web section holds the session secret.
    """
    document: dict[str, dict[str, Any]] = {}
    for section, values in sections.items():
        if section not in _SECTIONS:
            raise pink_config.ConfigError(f"unknown config section [{section}]; known: {sorted(_SECTIONS)}")
        bad = set(values) - {f.name for f in dataclasses.fields(_SECTIONS[section])}
        if bad:
            raise pink_config.ConfigError(f"unknown key(s) in [{section}]: {sorted(bad)}")
        document[section] = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in values.items()}
    target = Path(path)
    write_private(target, "# Written by pink_dev.\n\n" + tomli_w.dumps(document))
    pink_config.load(str(target), env={})  # fail here, not in a daemon's log
    return target


def run_admin(config_path: str | os.PathLike[str], *args: str, stdin: str | None = None,
              timeout: float = 60.0) -> str:
    """Run ``python -m webapp.admin --config CFG ARGS...`` (pink-admin) and return its stdout."""
    cmd = [sys.executable, "-m", "webapp.admin", "--config", str(config_path), *args]
    result = subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
        env=dict(os.environ, PINK_CONFIG=str(config_path)),
    )
    if result.returncode != 0:
        raise ServiceError(
            f"pink-admin {' '.join(args)} failed (status {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result.stdout


_ADMIN_BATCH = """
import contextlib, io, json, sys
from webapp import admin
results = []
for argv, stdin in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    sys.stdin = io.StringIO(stdin or "")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = admin.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    results.append([code, out.getvalue(), err.getvalue()])
sys.__stdout__.write(json.dumps(results))
"""


def run_admin_batch(config_path: str | os.PathLike[str], calls: Sequence[tuple[Sequence[str], str | None]],
                    timeout: float = 120.0) -> list[str]:
    """Run several ``pink-admin`` commands in one interpreter (start-up is most of their cost).

    ``calls`` are ``(args, stdin)`` pairs as for :func:`run_admin`; returns each stdout.
    Raises ServiceError naming the first command that failed.
    """
    spec = [(["--config", str(config_path), *args], stdin) for args, stdin in calls]
    result = subprocess.run(
        [sys.executable, "-c", _ADMIN_BATCH], input=json.dumps(spec), capture_output=True, text=True,
        timeout=timeout, cwd=REPO_ROOT, env=dict(os.environ, PINK_CONFIG=str(config_path)),
    )
    try:
        rows = json.loads(result.stdout)
    except ValueError:
        raise ServiceError(f"pink-admin batch failed (status {result.returncode}): {result.stderr.strip()}") from None
    outputs = []
    for (args, _), (code, out, err) in zip(calls, rows):
        if code not in (0, None):
            raise ServiceError(f"pink-admin {' '.join(args)} failed (status {code}): {(err or out).strip()}")
        outputs.append(out)
    return outputs


def create_user(config_path: str | os.PathLike[str], name: str, password: str, admin: bool = False,
                exist_ok: bool = False) -> None:
    args = ["user", "add", name, *(["--admin"] if admin else []), "--password-stdin",
            *(["--exist-ok"] if exist_ok else [])]
    run_admin(config_path, *args, stdin=password + "\n")


def token_from_output(out: str, name: str) -> str:
    """The token that ``pink-admin token create NAME`` printed (its last line)."""
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if not lines:
        raise ServiceError(f"pink-admin token create {name} printed no token")
    return lines[-1]


def create_token(config_path: str | os.PathLike[str], name: str) -> str:
    return token_from_output(run_admin(config_path, "token", "create", name), name)
