"""Where the CLI finds its server, token and CA: flags, environment, then the config file.

The config file (``~/.config/pink/cli.json`` or ``$PINK_CLI_CONFIG``) is written by
``pink login``; it holds a bearer token, so only its owner may read it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import EXIT_AUTH, EXIT_USAGE, CliError

API_PREFIX = "/api/v1"


def config_path() -> Path:
    env = os.environ.get("PINK_CLI_CONFIG")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".config" / "pink" / "cli.json"


def load_config() -> dict[str, Any]:
    path = config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CliError(EXIT_AUTH, f"cannot read the CLI config {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CliError(
            EXIT_AUTH,
            f"the CLI config {path} is not valid JSON ({exc}); "
            "delete it and run `pink login` again",
        ) from exc
    if not isinstance(data, dict):
        raise CliError(
            EXIT_AUTH, f"the CLI config {path} is not a JSON object; delete it and log in again"
        )
    return data


def save_config(data: dict[str, Any]) -> Path:
    """Write the config atomically, readable by its owner only (it holds a bearer token)."""
    path = config_path()
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)
        # mkdir's mode is filtered by the umask; the token's folder must be private anyway.
        os.chmod(folder, 0o700)
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def normalize_url(url: str) -> str:
    """``https://lb.example/`` or ``lb.example/api/v1`` → ``https://lb.example``."""
    url = url.strip()
    if not url:
        return ""
    if "://" not in url:
        url = "https://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(
            EXIT_USAGE, f"{url!r} is not a server URL; give one like https://pink.example.org"
        )
    path = parts.path.rstrip("/")
    if path.endswith(API_PREFIX):
        path = path[: -len(API_PREFIX)]
    return f"{parts.scheme}://{parts.netloc}{path}"


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclasses.dataclass(frozen=True)
class Settings:
    url: str
    token: str
    ca_cert: str


def resolve_settings(args: argparse.Namespace) -> Settings:
    """Flags beat environment variables, which beat the config file."""
    cfg = load_config()
    file_url = normalize_url(str(cfg.get("url") or ""))
    url = normalize_url(args.url or os.environ.get("PINK_URL") or file_url)
    # The saved token and CA belong to the saved server: never send that token elsewhere.
    same_server = bool(url) and url == file_url
    token = (
        args.token
        or os.environ.get("PINK_TOKEN")
        or (str(cfg.get("token") or "") if same_server else "")
    )
    ca_cert = (
        args.ca_cert
        or os.environ.get("PINK_CA_CERT")
        or (str(cfg.get("ca_cert") or "") if same_server else "")
    )
    return Settings(url=url, token=token, ca_cert=ca_cert)
