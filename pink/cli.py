"""``pink``: the command-line client of the PINK web API (docs/api.md).

It runs on a user's laptop and needs nothing of PINK but this package and ``requests``. Every
failure ends in one line on stderr that says what went wrong and what to do next, and in one of
the exit codes of docs/api.md:

0 ok · 1 the job ended badly (with --wait) · 2 usage error · 3 server unreachable / network
or TLS error · 4 not logged in / token refused · 5 the server refused the request.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TextIO
from urllib.parse import quote, urlsplit

import requests
import urllib3.exceptions

from . import __version__
from .states import TERMINAL, JobState

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_NETWORK = 3
EXIT_AUTH = 4
EXIT_REFUSED = 5

API_PREFIX = "/api/v1"
CHUNK = 1 << 20
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
# After the last byte the server still finishes validating and storing the archive.
UPLOAD_READ_TIMEOUT_S = 600.0
#: One try plus three retries, all with the same Idempotency-Key.
UPLOAD_ATTEMPTS = 4
DOWNLOAD_ATTEMPTS = 4
LOG_FOLLOW_ATTEMPTS = 10
#: First pause between retries; it doubles each time.
RETRY_BACKOFF_S = 1.0
POLL_MIN_S = 0.2
POLL_MAX_S = 2.0
#: How long ``--wait`` keeps trying while the server cannot be reached (a web server restart).
WAIT_NETWORK_GRACE_S = 120.0
#: A docker image config is a few kB; refuse to load a "config" that is not one.
MAX_CONFIG_BYTES = 64 << 20
#: Gateway answers that mean "the web server behind the load balancer went away": retry.
RETRY_STATUSES = frozenset({502, 504})

TERMINAL_STATES = frozenset(s.value for s in TERMINAL)
STATE_NAMES = tuple(s.value for s in JobState)
IMAGE_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
DIFF_ID_RE = IMAGE_ID_RE
COMPRESSED_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\xfd7zXZ\x00": "xz",
    b"BZh": "bzip2",
}


# --------------------------------------------------------------------------------- errors


class CliError(Exception):
    """A failure to report to the person: ``str(exc)`` is the message, ``code`` the exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class NetworkError(CliError):
    """The server could not be reached or the connection broke. Worth retrying."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_NETWORK, message)


class HttpError(CliError):
    """The server answered with a non-2xx status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(EXIT_AUTH if status == 401 else EXIT_REFUSED, message)
        self.status = status


def _is_transient(exc: CliError) -> bool:
    return isinstance(exc, NetworkError) or (
        isinstance(exc, HttpError) and exc.status in RETRY_STATUSES
    )


# ------------------------------------------------------------------------------- settings


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


def _is_loopback(url: str) -> bool:
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


# ---------------------------------------------------------------------------- formatting


def human_bytes(n: float | int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} PB"  # pragma: no cover - loop always returns


def human_duration(seconds: float | int | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_time(t: float | None) -> str:
    if not t:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(t)))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    for row in (headers, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def parse_duration(text: str) -> int:
    """``3600``, ``90s``, ``30m``, ``2h`` or ``1d`` → seconds (argparse type)."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if not m or int(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; use seconds or e.g. 90s, 30m, 2h, 1d"
        )
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# ------------------------------------------------------------------------ person-facing UI


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A one-line progress bar on stderr (TTY), or a single summary line when it is not one."""

    REDRAW_S = 0.1

    def __init__(
        self, verb: str, total: int | None, *, bar: bool, summary: bool, done: int = 0
    ) -> None:
        self.verb = verb
        self.total = total
        self.bar = bar
        self.summary = summary
        self.stream = sys.stderr
        self.reset(done)

    def reset(self, done: int = 0) -> None:
        self.done = done
        self.start_done = done
        self.t0 = time.monotonic()
        self._drawn_at = 0.0
        self._dirty = False

    def add(self, n: int) -> None:
        self.done += n
        if self.bar:
            now = time.monotonic()
            if now - self._drawn_at >= self.REDRAW_S:
                self._draw(now)

    def _rate(self, now: float) -> float:
        return (self.done - self.start_done) / max(now - self.t0, 1e-6)

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        rate = self._rate(now)
        text = f"{self.verb} {human_bytes(self.done)}"
        fill = 0.0
        if self.total:
            fill = min(1.0, self.done / self.total)
            eta = (self.total - self.done) / rate if rate > 0 else None
            text += f" / {human_bytes(self.total)} {fill * 100:3.0f}%"
            text += (
                f"  {rate / 1e6:.1f} MB/s  ETA {human_duration(eta) if eta is not None else '?'}"
            )
        else:
            text += f"  {rate / 1e6:.1f} MB/s"
        columns = shutil.get_terminal_size((80, 24)).columns
        width = max(0, min(30, columns - len(text) - 4))
        bar = (
            f"[{'#' * int(fill * width)}{'.' * (width - int(fill * width))}] "
            if width >= 10
            else ""
        )
        line = (bar + text)[: max(columns - 1, 1)]
        self.stream.write("\r" + line.ljust(max(columns - 1, 1)))
        self.stream.flush()
        self._dirty = True

    def finish(self) -> None:
        now = time.monotonic()
        if self.bar:
            self._draw(now)
            self.stream.write("\n")
            self.stream.flush()
            self._dirty = False
        elif self.summary:
            moved = self.done - self.start_done
            self.stream.write(
                f"{self.verb} {human_bytes(moved)} in {now - self.t0:.1f} s"
                f" ({self._rate(now) / 1e6:.1f} MB/s)\n"
            )
            self.stream.flush()

    def abort(self) -> None:
        """End a drawn bar's line so the next message starts on a fresh one."""
        if self._dirty:
            self.stream.write("\n")
            self.stream.flush()
            self._dirty = False


@dataclasses.dataclass
class Ui:
    quiet: bool = False
    fmt: str = "table"

    def info(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def progress(self, verb: str, total: int | None, done: int = 0) -> Progress:
        bar = not self.quiet and self.fmt != "json" and _isatty(sys.stderr)
        return Progress(verb, total, bar=bar, summary=not self.quiet and not bar, done=done)


def _ui(args: argparse.Namespace) -> Ui:
    return Ui(
        quiet=bool(getattr(args, "quiet", False)), fmt=getattr(args, "fmt", "table") or "table"
    )


# ---------------------------------------------------------------------------- HTTP client


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions requests/urllib3 wrapped in it, outermost first."""
    chain = [exc]
    while len(chain) < 8:
        cur = chain[-1]
        nested = getattr(cur, "reason", None)
        if not isinstance(nested, BaseException):
            nested = next((a for a in reversed(cur.args) if isinstance(a, BaseException)), None)
        if nested is None or nested in chain:
            break
        chain.append(nested)
    return chain


def _short_reason(exc: BaseException) -> str:
    """The useful part of a requests/urllib3 exception ("Connection refused", ...)."""
    inner = _exception_chain(exc)[-1]
    text = str(inner)
    m = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if m:
        return m.group(1).strip()
    text = re.sub(r"<[^>]+ object at 0x[0-9a-f]+>: ", "", text)
    return text[:300] or type(inner).__name__


def _never_connected(exc: BaseException) -> bool:
    """True when no connection was made at all (refused, no route, unknown host)."""
    return any(
        isinstance(
            e, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
        )
        for e in _exception_chain(exc)
    )


def _error_message(resp: requests.Response) -> str:
    """The server's ``{"error": ...}`` message, or the status line when there is none."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    return f"HTTP {resp.status_code} {resp.reason or ''}".strip()


class Api:
    """One ``requests`` session against ``<url>/api/v1``, mapping failures to CliErrors."""

    def __init__(self, settings: Settings, *, need_token: bool = True) -> None:
        if not settings.url:
            raise CliError(
                EXIT_AUTH,
                "no PINK server is configured: run `pink login https://SERVER --user NAME` "
                "(or pass --url / set PINK_URL)",
            )
        if need_token and not settings.token:
            raise CliError(
                EXIT_AUTH,
                f"not logged in to {settings.url}: run `pink login {settings.url} --user NAME` "
                "(or set PINK_TOKEN)",
            )
        if settings.ca_cert and not os.path.isfile(settings.ca_cert):
            raise CliError(
                EXIT_USAGE,
                f"CA certificate {settings.ca_cert} does not exist: pass --ca-cert with the "
                "cluster's CA file (or unset PINK_CA_CERT / log in again without it)",
            )
        self.url = settings.url
        self.session = requests.Session()
        # Verification is never switched off: the cluster's CA when given, system CAs otherwise.
        self.verify: str | bool = settings.ca_cert or True
        self.session.headers["User-Agent"] = f"pink-cli/{__version__}"
        if settings.token:
            self.session.headers["Authorization"] = f"Bearer {settings.token}"

    def __enter__(self) -> "Api":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # urllib3 2.x only drops its pools on clear() and closes their sockets when they are
        # garbage collected; a traceback kept from a failed attempt can hold a pool, and with it
        # an open connection, indefinitely. Close them now.
        for adapter in self.session.adapters.values():
            managers = [
                getattr(adapter, "poolmanager", None),
                *getattr(adapter, "proxy_manager", {}).values(),
            ]
            for manager in managers:
                pools = getattr(manager, "pools", None)
                if pools is None:
                    continue
                for key in list(pools.keys()):
                    pool = pools.get(key)
                    if pool is not None:
                        pool.close()
        self.session.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        ok: Sequence[int] = (200, 201, 204),
        timeout: tuple[float, float | None] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        url = self.url + API_PREFIX + path
        log.debug("%s %s", method, url)
        try:
            resp = self.session.request(
                method,
                url,
                timeout=timeout or (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                # A redirect would drop the token (other host) or turn a POST into a GET.
                allow_redirects=False,
                # Per request: set on the session, $REQUESTS_CA_BUNDLE would win over --ca-cert.
                verify=self.verify,
                **kwargs,
            )
        except requests.exceptions.SSLError as exc:
            reason = _short_reason(exc)
            hint = (
                " If the cluster uses its own CA, pass --ca-cert FILE (the CA certificate of the"
                " cluster, e.g. ssl/ca.crt) or log in again with it."
                if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate" in reason.lower()
                else ""
            )
            raise CliError(EXIT_NETWORK, f"TLS with {self.url} failed: {reason}.{hint}") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            if _never_connected(exc):
                raise NetworkError(
                    f"cannot reach {self.url}: {_short_reason(exc)}. "
                    "Check the URL and that the cluster is up"
                ) from exc
            if isinstance(exc, requests.exceptions.Timeout):
                raise NetworkError(
                    f"{self.url} did not answer in time ({_short_reason(exc)}); try again later"
                ) from exc
            raise NetworkError(f"the connection to {self.url} broke: {_short_reason(exc)}") from exc
        except requests.exceptions.RequestException as exc:
            raise NetworkError(f"request to {self.url} failed: {_short_reason(exc)}") from exc
        log.debug("-> %s", resp.status_code)
        if resp.status_code in ok:
            return resp
        with resp:
            if 300 <= resp.status_code < 400:
                where = resp.headers.get("Location", "?")
                raise HttpError(
                    resp.status_code,
                    f"{self.url} redirects to {where}: "
                    "use that server URL (pink login URL or --url)",
                )
            message = _error_message(resp)
        if resp.status_code == 401:
            raise HttpError(
                401,
                f"the server refused the credentials ({message}): "
                f"run `pink login {self.url} --user NAME` again",
            )
        raise HttpError(
            resp.status_code, f"the server refused the request (HTTP {resp.status_code}): {message}"
        )

    def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        resp = self.send(method, path, **kwargs)
        with resp:
            if resp.status_code == 204:
                return {}
            try:
                data = resp.json()
            except ValueError as exc:
                raise CliError(
                    EXIT_REFUSED,
                    f"{self.url} answered {method} {path} with something that is not JSON: "
                    "is the URL that of a PINK server?",
                ) from exc
        if not isinstance(data, dict):
            raise CliError(
                EXIT_REFUSED, f"{self.url} answered {method} {path} with unexpected JSON"
            )
        return data

    def job(self, job_id: str) -> dict[str, Any]:
        return _job_of(self.json("GET", f"/jobs/{quote(job_id, safe='')}"))


def _job_of(data: dict[str, Any]) -> dict[str, Any]:
    job = data.get("job")
    if not isinstance(job, dict) or "id" not in job:
        raise CliError(
            EXIT_REFUSED,
            "the server's answer has no job record; is it a PINK server of the same version?",
        )
    return job


def _api(args: argparse.Namespace, *, need_token: bool = True) -> Api:
    return Api(resolve_settings(args), need_token=need_token)


# ------------------------------------------------------------------------- image archives


@dataclasses.dataclass(frozen=True)
class ImageArchive:
    path: Path
    size: int
    image_id: str
    tags: tuple[str, ...]
    #: The image's layers, bottom first (config rootfs.diff_ids).
    diff_ids: tuple[str, ...] = ()
    #: Per layer, the byte range [start, end) of the member holding its tar (headers, data and
    #: padding), or None when it cannot be left out of a thin archive.
    layer_spans: tuple[tuple[int, int] | None, ...] = ()

    def thin_ranges(self, omit: int) -> list[tuple[int, int]]:
        """Byte ranges of the archive without the members of its ``omit`` bottom layers
        (manifest and config unchanged: what `docker load` takes when it holds those layers).
        Empty when they cannot be left out."""
        if omit <= 0 or omit > len(self.layer_spans):
            return []
        kept = set(self.layer_spans[omit:])
        cut = sorted({span for span in self.layer_spans[:omit] if span is not None and span not in kept})
        if len(cut) < len({span for span in self.layer_spans[:omit] if span not in kept}):
            return []  # a layer we cannot place in the file
        ranges, pos = [], 0
        for start, end in cut:
            if start > pos:
                ranges.append((pos, start))
            pos = end
        if pos < self.size:
            ranges.append((pos, self.size))
        return ranges


def _layer_spans(tf: tarfile.TarFile, layer_paths: list) -> tuple[tuple[int, int] | None, ...]:
    """Where each layer's regular file sits in the archive (symlinks followed)."""
    if tf.pax_headers:
        return tuple(None for _ in layer_paths)  # a global header shapes later members: keep all
    members = {m.name.rstrip("/"): m for m in tf.getmembers()}
    spans: list[tuple[int, int] | None] = []
    for path in layer_paths:
        member = members.get(str(path).rstrip("/")) if isinstance(path, str) else None
        for _ in range(8):
            if member is None or not member.issym():
                break
            target = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), member.linkname))
            member = members.get(target)
        if member is None or not member.isfile():
            spans.append(None)
            continue
        end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        spans.append((member.offset, end))
    return tuple(spans)


def _read_member(tf: tarfile.TarFile, member: tarfile.TarInfo, limit: int, what: str) -> bytes:
    if not member.isfile():
        raise CliError(
            EXIT_USAGE,
            f"{tf.name}: {member.name} is not a regular file; is it a `docker save` archive?",
        )
    if member.size > limit:
        raise CliError(
            EXIT_USAGE,
            f"{tf.name}: {what} {member.name} is implausibly large ({human_bytes(member.size)})",
        )
    f = tf.extractfile(member)
    assert f is not None  # isfile() was checked
    with f:
        return f.read()


def read_image_archive(path: Path) -> ImageArchive:
    """Find the image id of a ``docker save`` tarball without reading its layers.

    tarfile's member index seeks from header to header, so the cost is one read per member
    header even though Docker 20.10 puts manifest.json at the very end.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(6)
    except FileNotFoundError:
        raise CliError(
            EXIT_USAGE,
            f"{path}: no such file (give the tarball written by `docker save -o FILE IMAGE`)",
        ) from None
    except OSError as exc:
        raise CliError(EXIT_USAGE, f"cannot read {path}: {exc.strerror}") from exc
    for prefix, kind in COMPRESSED_MAGIC.items():
        if magic.startswith(prefix):
            raise CliError(
                EXIT_USAGE,
                f"{path} is {kind}-compressed; PINK takes the plain tar that `docker save` writes: "
                "decompress it first, or pass --image NAME to export a local image",
            )
    try:
        with tarfile.open(path, mode="r:") as tf:
            try:
                manifest_member = tf.getmember("manifest.json")
            except KeyError:
                raise CliError(
                    EXIT_USAGE,
                    f"{path} has no manifest.json: "
                    "it is not a complete `docker save` archive (truncated?)",
                ) from None
            try:
                manifest = json.loads(
                    _read_member(tf, manifest_member, MAX_CONFIG_BYTES, "manifest")
                )
            except ValueError as exc:
                raise CliError(
                    EXIT_USAGE, f"{path}: manifest.json is not valid JSON ({exc})"
                ) from exc
            if not isinstance(manifest, list) or not manifest or not isinstance(manifest[0], dict):
                raise CliError(EXIT_USAGE, f"{path}: manifest.json lists no image")
            if len(manifest) != 1:
                raise CliError(
                    EXIT_USAGE,
                    f"{path} holds {len(manifest)} images; PINK runs one: "
                    "`docker save` a single image per file",
                )
            entry = manifest[0]
            config_name = entry.get("Config")
            if not isinstance(config_name, str) or not config_name:
                raise CliError(EXIT_USAGE, f"{path}: manifest.json names no image config")
            try:
                config_member = tf.getmember(config_name)
            except KeyError:
                raise CliError(
                    EXIT_USAGE,
                    f"{path}: the image config {config_name} named by manifest.json is missing",
                ) from None
            config = _read_member(tf, config_member, MAX_CONFIG_BYTES, "image config")
            diff_ids: tuple[str, ...] = ()
            spans: tuple[tuple[int, int] | None, ...] = ()
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                found = json.loads(config)["rootfs"]["diff_ids"]
                layers = entry.get("Layers")
                if (isinstance(found, list) and isinstance(layers, list) and len(layers) == len(found)
                        and all(isinstance(d, str) and DIFF_ID_RE.match(d) for d in found)):
                    diff_ids = tuple(found)
                    spans = _layer_spans(tf, layers)
    except tarfile.TarError as exc:
        raise CliError(
            EXIT_USAGE, f"{path} is not a tar archive ({exc}); give the output of `docker save`"
        ) from exc
    tags = tuple(str(t) for t in (entry.get("RepoTags") or []) if isinstance(t, str))
    return ImageArchive(
        path=path, size=size, image_id="sha256:" + hashlib.sha256(config).hexdigest(), tags=tags,
        diff_ids=diff_ids, layer_spans=spans,
    )


def _docker(argv: list[str]) -> str:
    docker = shutil.which("docker")
    if not docker:
        raise CliError(
            EXIT_USAGE,
            "docker is not on PATH, so --image cannot export the image: "
            "run `docker save -o image.tar NAME` where docker is and pass image.tar",
        )
    log.debug("running docker %s", argv)
    try:
        done = subprocess.run([docker, *argv], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip() or f"exit status {exc.returncode}"
        raise CliError(EXIT_USAGE, f"`docker {' '.join(argv)}` failed: {detail}") from exc
    return done.stdout


def docker_image_id(name: str) -> str:
    image_id = _docker(["image", "inspect", "--format", "{{.Id}}", "--", name]).strip()
    if not IMAGE_ID_RE.match(image_id):
        raise CliError(
            EXIT_USAGE,
            f"docker reported {image_id!r} as the id of {name}, which is not a sha256 image id",
        )
    return image_id


def docker_save(name: str, dest: Path, ui: Ui) -> ImageArchive:
    ui.info(f"exporting {name} with docker save ...")
    _docker(["save", "-o", str(dest), "--", name])
    return read_image_archive(dest)


# -------------------------------------------------------------------------------- submit


class _FileBody:
    """An upload body of known length read in 1 MiB blocks.

    Having ``__len__`` and ``__iter__`` but no ``read`` makes requests send Content-Length
    (the server requires it) instead of chunked encoding, and makes urllib3 pull our blocks
    rather than its own 16 KiB ones.
    """

    def __init__(
        self, path: Path, size: int, progress: Progress,
        ranges: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        self.path = path
        #: The byte ranges of the file to send (a thin archive skips some members).
        self.ranges = list(ranges) if ranges else [(0, size)]
        self.size = sum(end - start for start, end in self.ranges)
        self.progress = progress

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        with open(self.path, "rb") as f:
            for start, end in self.ranges:
                f.seek(start)
                left = end - start
                while left > 0:
                    block = f.read(min(CHUNK, left))
                    if not block:
                        # Sending fewer bytes than announced would hang the server; stop now.
                        raise CliError(
                            EXIT_USAGE, f"{self.path} got shorter while it was being uploaded"
                        )
                    left -= len(block)
                    self.progress.add(len(block))
                    yield block


def _backoff(attempt: int) -> float:
    return RETRY_BACKOFF_S * (2 ** (attempt - 1))


def _submit_held(
    api: Api, params: dict[str, Any], image_id: str, key: str
) -> dict[str, Any] | None:
    """Submit against an image a worker holds: empty body. None when no worker has it anymore."""
    try:
        resp = api.send(
            "POST",
            "/jobs",
            params={**params, "image": image_id},
            data=b"",
            headers={"Idempotency-Key": key, "Content-Length": "0"},
            ok=(200, 201),
        )
    except HttpError as exc:
        if exc.status == 409:
            log.info("server no longer has %s on a worker: %s", image_id, exc)
            return None
        raise
    with resp:
        return _job_of(resp.json())


def _upload(
    api: Api, archive: ImageArchive, params: dict[str, Any], key: str, ui: Ui,
    omit: int = 0,
) -> dict[str, Any] | None:
    """POST the tarball; retry broken connections with the same key, so at most one job exists.

    With ``omit``, a thin archive without its ``omit`` bottom layers; None when no worker holds
    them any more (then send the whole archive)."""
    ranges = archive.thin_ranges(omit) if omit else None
    if omit:
        params = {**params, "omitted_layers": ",".join(archive.diff_ids[:omit])}
    total = sum(end - start for start, end in ranges) if ranges else archive.size
    progress = ui.progress("uploading", total)
    for attempt in range(1, UPLOAD_ATTEMPTS + 1):
        progress.reset()
        try:
            resp = api.send(
                "POST",
                "/jobs",
                params=params,
                data=_FileBody(archive.path, archive.size, progress, ranges),
                headers={"Idempotency-Key": key, "Content-Type": "application/x-tar"},
                timeout=(CONNECT_TIMEOUT_S, UPLOAD_READ_TIMEOUT_S),
                ok=(200, 201),
            )
        except CliError as exc:
            progress.abort()
            if omit and isinstance(exc, HttpError) and exc.status == 409:
                log.info("thin upload refused: %s", exc)
                return None
            if not _is_transient(exc):
                raise
            if attempt == UPLOAD_ATTEMPTS:
                raise CliError(
                    exc.code,
                    f"{exc}. The upload failed {attempt} times; run the same command again with "
                    f"--idempotency-key {key} so that a job the server did create "
                    "is not duplicated",
                ) from exc
            delay = _backoff(attempt)
            ui.info(
                f"upload interrupted ({exc}); retrying in {delay:.3g} s "
                "with the same idempotency key"
                f" (retry {attempt} of {UPLOAD_ATTEMPTS - 1})"
            )
            time.sleep(delay)
            continue
        with resp:
            job = _job_of(resp.json())
            replay = resp.status_code == 200
        progress.finish()
        if replay:
            ui.info(
                f"the server already had job {job['id']} for idempotency key {key}: "
                "not submitted twice"
            )
        return job
    raise AssertionError("unreachable")  # pragma: no cover


def held_layers(api: Api, archive: ImageArchive) -> tuple[int, str]:
    """The most bottom layers of the archive some worker holds for us (and which), so that a
    thin archive can leave them out; (0, "") when none or the server cannot tell."""
    if not archive.diff_ids or not any(archive.layer_spans):
        return 0, ""
    try:
        data = api.json("POST", "/layers", json={"diff_ids": list(archive.diff_ids)})
    except HttpError as exc:
        if exc.status == 401:
            raise
        log.info("cannot ask which layers the workers hold (%s); sending the whole archive", exc)
        return 0, ""
    best, where = 0, ""
    for w in data.get("workers") or []:
        n = w.get("layers") if isinstance(w, dict) else None
        if isinstance(n, int) and best < n <= len(archive.diff_ids) and archive.thin_ranges(n):
            best, where = n, str(w.get("name", "?"))
    return best, where


def image_holders(api: Api, image_id: str) -> list[str]:
    """Workers that already hold the image; empty when unknown (then we upload)."""
    try:
        data = api.json("GET", f"/images/{image_id}")
    except HttpError as exc:
        if exc.status == 401:
            raise
        # Only an optimisation: if the server cannot tell, sending the bytes is always correct.
        log.info("cannot ask which workers hold %s (%s); uploading", image_id, exc)
        return []
    workers = data.get("workers") or []
    return [str(w) for w in workers] if isinstance(workers, list) else []


def cmd_submit(args: argparse.Namespace) -> int:
    ui = _ui(args)
    if bool(args.tarball) == bool(args.image):
        raise CliError(
            EXIT_USAGE,
            "give either IMAGE.tar (from `docker save`) or --image NAME (a local docker image), "
            "not both",
        )
    if args.download:
        args.wait = True
    key = args.idempotency_key or str(uuid.uuid4())
    params: dict[str, Any] = {}
    for field, value in (
        ("gpus", args.gpus),
        ("timeout", args.timeout),
        ("output", args.job_output),
        ("priority", args.priority),
    ):
        if value is not None:
            params[field] = value

    with _api(args) as api, contextlib.ExitStack() as cleanup:
        archive: ImageArchive | None = None
        if args.image:
            image_id = docker_image_id(args.image)
            default_name = args.image
        else:
            archive = read_image_archive(Path(args.tarball))
            image_id = archive.image_id
            default_name = archive.tags[0] if archive.tags else Path(args.tarball).name
        params["name"] = args.name if args.name is not None else default_name
        log.info("image id %s", image_id)

        job: dict[str, Any] | None = None
        holders = image_holders(api, image_id)
        if holders:
            job = _submit_held(api, params, image_id, key)
            if job is not None:
                ui.info(f"image already on worker {', '.join(holders)}: 0 bytes sent")
            else:
                ui.info(f"image {image_id} is no longer on a worker; uploading it")
        if job is None:
            if archive is None:
                # The server needs Content-Length, so the export goes to a file, not a pipe.
                tmp = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="pink-save-")))
                archive = docker_save(args.image, tmp / "image.tar", ui)
            omit, where = held_layers(api, archive)
            if omit:
                thin = sum(end - start for start, end in archive.thin_ranges(omit))
                ui.info(
                    f"worker {where} holds {omit} of the image's {len(archive.diff_ids)} layers: "
                    f"sending {human_bytes(thin)} of {human_bytes(archive.size)}"
                )
                job = _upload(api, archive, params, key, ui, omit=omit)
                if job is None:
                    ui.info("the worker no longer holds those layers; sending the whole archive")
            if job is None:
                job = _upload(api, archive, params, key, ui)
        ui.info(f"submitted job {job['id']} ({job.get('state', '?')})")
        if args.fmt == "json" and not args.wait:
            print_json(job)
            return EXIT_OK
        if args.fmt != "json":
            print(job["id"], flush=True)
        if not args.wait:
            return EXIT_OK

        try:
            job = wait_for_job(api, str(job["id"]), ui)
        except KeyboardInterrupt:
            raise CliError(
                130,
                f"stopped waiting; job {job['id']} keeps running: follow it with "
                f"`pink status {job['id']}` or stop it with `pink cancel {job['id']}`",
            ) from None
        rc = EXIT_OK if job.get("state") == JobState.SUCCEEDED.value else EXIT_JOB_FAILED
        if args.download:
            if job.get("output") == "none" or not (
                job.get("output_bytes") or job.get("output_sha256")
            ):
                ui.info(f"job {job['id']} has no output archive to download")
            else:
                download_output(api, job, Path(args.download), ui)
        if args.fmt == "json":
            print_json(job)
        return rc


def _describe(job: dict[str, Any]) -> str:
    state = str(job.get("state", "?"))
    text = f"job {job.get('id')}: {state}"
    if state == JobState.QUEUED.value:
        extra = []
        if job.get("queue_position") is not None:
            extra.append(f"position {job['queue_position']}")
        if job.get("waiting_reason"):
            extra.append(str(job["waiting_reason"]))
        if extra:
            text += f" ({'; '.join(extra)})"
    elif state in (JobState.STARTING.value, JobState.RUNNING.value) and job.get("worker"):
        gpus = job.get("gpu_indices") or []
        text += f" on {job['worker']}" + (
            f", GPUs {','.join(str(g) for g in gpus)}" if gpus else ""
        )
    elif state in TERMINAL_STATES:
        extra = []
        if job.get("exit_code") is not None:
            extra.append(f"exit code {job['exit_code']}")
        if job.get("reason"):
            extra.append(str(job["reason"]))
        if extra:
            text += f" ({'; '.join(extra)})"
    return text


def wait_for_job(api: Api, job_id: str, ui: Ui) -> dict[str, Any]:
    """Poll until the job is terminal, telling each state change on stderr."""
    delay = POLL_MIN_S
    last: str | None = None
    failing_since: float | None = None
    while True:
        try:
            job = api.job(job_id)
        except CliError as exc:
            if not (_is_transient(exc) or (isinstance(exc, HttpError) and exc.status == 503)):
                raise
            now = time.monotonic()
            if failing_since is None:
                failing_since = now
                ui.info(f"lost contact with the server ({exc}); still waiting for job {job_id}")
            elif now - failing_since > WAIT_NETWORK_GRACE_S:
                raise CliError(
                    exc.code,
                    f"{exc}. Gave up waiting after {WAIT_NETWORK_GRACE_S:.0f} s; the job may still "
                    f"run: check it later with `pink status {job_id}`",
                ) from exc
        else:
            failing_since = None
            state = str(job.get("state"))
            if state != last:
                ui.info(_describe(job))
                last = state
                # Changes come in bursts (QUEUED → STARTING → RUNNING): look again soon.
                delay = POLL_MIN_S
            if state in TERMINAL_STATES:
                return job
        time.sleep(delay)
        delay = min(delay * 1.5, POLL_MAX_S)


# ------------------------------------------------------------------------------ download


def _parse_content_range(value: str) -> tuple[int, int | None]:
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if not m:
        raise NetworkError(f"the server sent a malformed Content-Range header {value!r}")
    return int(m.group(1)), (None if m.group(3) == "*" else int(m.group(3)))


def _hash_file(path: Path, hasher: Any) -> None:
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            hasher.update(block)


def _fetch_once(api: Api, job_id: str, part: Path, expected_size: int | None, ui: Ui) -> str:
    """Bring ``part`` to the full archive, resuming what it holds. Returns the sha256 hex."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}  # byte offsets must be those of the archive itself
    if have:
        headers["Range"] = f"bytes={have}-"
    resp = api.send(
        "GET",
        f"/jobs/{quote(job_id, safe='')}/output",
        headers=headers,
        stream=True,
        ok=(200, 206, 416),
    )
    with resp:
        hasher = hashlib.sha256()
        if resp.status_code == 416:
            if have and expected_size is not None and have == expected_size:
                # A previous run got every byte but stopped before renaming.
                _hash_file(part, hasher)
                return hasher.hexdigest()
            part.unlink(missing_ok=True)
            raise NetworkError(f"the server could not resume from byte {have}; starting over")
        if resp.status_code == 206:
            start, total = _parse_content_range(resp.headers.get("Content-Range", ""))
            if start != have:
                part.unlink(missing_ok=True)
                raise NetworkError(
                    f"the server resumed at byte {start} instead of {have}; starting over"
                )
            _hash_file(part, hasher)
            mode = "ab"
            ui.info(f"resuming download at {human_bytes(have)}")
        else:
            if have:
                ui.info("the server does not resume downloads; starting from the beginning")
            have = 0
            mode = "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else expected_size
        progress = ui.progress("downloading", total, done=have)
        try:
            with open(part, mode) as f:
                for block in resp.iter_content(CHUNK):
                    f.write(block)
                    hasher.update(block)
                    progress.add(len(block))
                # No fsync (as scp, curl): the sha256 check catches a .part file that a crash
                # left short or damaged, and a resumed download that does not match starts over.
        except requests.exceptions.RequestException as exc:
            progress.abort()
            raise NetworkError(f"the download broke off ({_short_reason(exc)})") from exc
        except OSError as exc:
            progress.abort()
            raise CliError(EXIT_USAGE, f"cannot write {part}: {exc.strerror}") from exc
        got = part.stat().st_size
        if total is not None and got != total:
            progress.abort()
            raise NetworkError(f"the download ended after {got} of {total} bytes")
        progress.finish()
        return hasher.hexdigest()


def _fetch_with_retries(
    api: Api, job_id: str, part: Path, dest: Path, expected_size: int | None, ui: Ui
) -> str:
    """_fetch_once, resuming after broken connections. Returns the sha256 hex of ``part``."""
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            return _fetch_once(api, job_id, part, expected_size, ui)
        except CliError as exc:
            if not _is_transient(exc):
                raise
            if attempt == DOWNLOAD_ATTEMPTS:
                raise CliError(
                    exc.code,
                    f"{exc}. Gave up after {attempt} tries; {part} keeps what arrived: run "
                    f"`pink download {job_id} -o {dest}` again to resume",
                ) from exc
            delay = _backoff(attempt)
            ui.info(f"{exc}; retrying in {delay:.3g} s")
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def download_output(api: Api, job: dict[str, Any], dest: Path, ui: Ui) -> Path:
    """Download a job's archive to ``dest`` via ``dest.part`` and check its sha256."""
    job_id = str(job["id"])
    if job.get("output") == "none":
        raise CliError(
            EXIT_REFUSED, f"job {job_id} was submitted with --output none: it has no output archive"
        )
    part = dest.with_name(dest.name + ".part")
    expected_size = job.get("output_bytes") or None
    expected = str(job.get("output_sha256") or "").lower().removeprefix("sha256:")
    resumed = part.exists() and part.stat().st_size > 0
    digest = _fetch_with_retries(api, job_id, part, dest, expected_size, ui)
    if expected and digest != expected and resumed:
        # The partial file may be left from another archive saved under the same name.
        ui.info("the resumed download does not match the server's sha256; downloading it afresh")
        part.unlink(missing_ok=True)
        digest = _fetch_with_retries(api, job_id, part, dest, expected_size, ui)
    if not expected:
        ui.info(
            f"warning: the server recorded no sha256 for job {job_id}; the download is not verified"
        )
    elif digest != expected:
        part.unlink(missing_ok=True)
        raise CliError(
            EXIT_REFUSED,
            f"the download of job {job_id} is corrupt: its sha256 is {digest} but the server "
            f"recorded {expected}. Removed {part}; run `pink download {job_id}` again, "
            "and if it fails again the archive on the worker is damaged",
        )
    os.replace(part, dest)
    ui.info(
        f"saved {dest} ({human_bytes(dest.stat().st_size)}"
        f"{', sha256 verified' if expected else ''})"
    )
    return dest


# ------------------------------------------------------------------------------ commands


def cmd_login(args: argparse.Namespace) -> int:
    ui = _ui(args)
    cfg = load_config()
    file_url = normalize_url(str(cfg.get("url") or ""))
    url = normalize_url(args.server or args.url or os.environ.get("PINK_URL") or file_url)
    if not url:
        raise CliError(EXIT_USAGE, "give the server: pink login https://SERVER --user NAME")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not _isatty(sys.stdin):
            raise CliError(
                EXIT_USAGE,
                "no terminal to ask for the password on: pipe it in with --password-stdin",
            )
        password = getpass.getpass(f"password for {args.user} at {url}: ")
    if not password:
        raise CliError(EXIT_USAGE, "empty password")
    ca_cert = (
        args.ca_cert
        or os.environ.get("PINK_CA_CERT")
        or (str(cfg.get("ca_cert") or "") if url == file_url else "")
    )
    if ca_cert:
        ca_cert = os.path.abspath(ca_cert)
    if urlsplit(url).scheme == "http" and not _is_loopback(url):
        ui.info(f"warning: {url} is plain HTTP: the password and the token travel unencrypted")
    with Api(Settings(url=url, token="", ca_cert=ca_cert), need_token=False) as api:
        try:
            data = api.json(
                "POST",
                "/tokens",
                json={
                    "username": args.user,
                    "password": password,
                    "name": f"cli@{socket.gethostname()}",
                },
                ok=(200, 201),
            )
        except HttpError as exc:
            if exc.status == 401:
                raise CliError(
                    EXIT_AUTH, f"{url} refused user {args.user!r}: wrong user name or password"
                ) from exc
            raise
    token = data.get("token")
    if not isinstance(token, str) or not token:
        raise CliError(
            EXIT_REFUSED, f"{url} answered the login without a token; is it a PINK server?"
        )
    path = save_config(
        {
            "url": url,
            "token": token,
            "ca_cert": ca_cert,
            "token_id": data.get("id") or "",
            "user": data.get("user") or args.user,
        }
    )
    ui.info(f"logged in to {url} as {data.get('user') or args.user}; token saved in {path}")
    return EXIT_OK


def cmd_logout(args: argparse.Namespace) -> int:
    ui = _ui(args)
    cfg = load_config()
    if not cfg.get("token"):
        ui.info("not logged in")
        return EXIT_OK
    url = normalize_url(str(cfg.get("url") or ""))
    token_id = str(cfg.get("token_id") or "")
    if url and token_id:
        try:
            settings = Settings(
                url=url, token=str(cfg["token"]), ca_cert=str(cfg.get("ca_cert") or "")
            )
            with Api(settings) as api:
                api.send(
                    "DELETE", f"/tokens/{quote(token_id, safe='')}", ok=(200, 204, 401, 404)
                ).close()
        except CliError as exc:
            ui.info(
                f"warning: could not revoke the token on the server ({exc}); "
                "it stays valid until it is deleted there"
            )
    # Keep the server and CA so that the next `pink login` needs no URL.
    save_config({k: v for k, v in cfg.items() if k in ("url", "ca_cert")})
    ui.info(f"logged out of {url or 'the server'}")
    return EXIT_OK


def _job_row(job: dict[str, Any], now: float) -> list[str]:
    started = job.get("started_at")
    runtime = ((job.get("finished_at") or now) - started) if started else None
    return [
        str(job.get("id", "")),
        str(job.get("name") or "-"),
        str(job.get("state", "?")),
        str(job.get("worker") or "-"),
        str(job.get("gpus", 0)),
        human_duration(now - job["created_at"]) if job.get("created_at") else "-",
        human_duration(runtime),
        human_bytes(job.get("output_bytes")) if job.get("output_bytes") else "-",
    ]


def cmd_ls(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.state:
        params["state"] = args.state
    if args.all:
        params["all"] = 1
    with _api(args) as api:
        jobs = api.json("GET", "/jobs", params=params).get("jobs") or []
    if args.fmt == "json":
        print_json(jobs)
        return EXIT_OK
    now = time.time()
    print_table(
        ["ID", "NAME", "STATE", "WORKER", "GPUS", "AGE", "RUNTIME", "OUTPUT"],
        [_job_row(j, now) for j in jobs],
    )
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with _api(args) as api:
        job = api.job(args.job)
    if args.fmt == "json":
        print_json(job)
        return EXIT_OK
    now = time.time()
    started, finished = job.get("started_at"), job.get("finished_at")
    expires = job.get("output_expires_at")
    rows: list[tuple[str, Any]] = [
        ("id", job.get("id")),
        ("name", job.get("name")),
        ("user", job.get("user")),
        ("state", job.get("state")),
    ]
    if job.get("state") == JobState.QUEUED.value:
        rows += [
            ("queue position", job.get("queue_position")),
            ("waiting for", job.get("waiting_reason")),
        ]
    rows += [
        ("worker", job.get("worker")),
        (
            "gpus",
            f"{job.get('gpus', 0)}"
            + (
                f" (indices {','.join(map(str, job['gpu_indices']))})"
                if job.get("gpu_indices")
                else ""
            ),
        ),
        ("priority", job.get("priority")),
        ("timeout", human_duration(job.get("timeout_s")) if job.get("timeout_s") else None),
        ("image", job.get("image_id")),
        ("image size", human_bytes(job.get("image_bytes")) if job.get("image_bytes") else None),
        ("created", format_time(job.get("created_at"))),
        ("updated", format_time(job.get("updated_at"))),
        ("started", format_time(started) if started else None),
        ("finished", format_time(finished) if finished else None),
        ("runtime", human_duration((finished or now) - started) if started else None),
        ("exit code", job.get("exit_code")),
        ("reason", job.get("reason")),
        ("gpu time", human_duration(job.get("gpu_seconds")) if job.get("gpu_seconds") else None),
        ("output", job.get("output")),
        ("output size", human_bytes(job.get("output_bytes")) if job.get("output_bytes") else None),
        ("output sha256", job.get("output_sha256")),
        ("outputs deleted after" if expires and expires < now else "outputs kept until",
         format_time(expires) if expires else None),
        ("log size", human_bytes(job.get("log_bytes")) if job.get("log_bytes") else None),
        ("resubmit of", job.get("resubmit_of")),
    ]
    shown = [(k, str(v)) for k, v in rows if v not in (None, "")]
    width = max(len(k) for k, _ in shown)
    for k, v in shown:
        print(f"{k.ljust(width)}  {v}")
    history = job.get("history") or []
    if history:
        print("history:")
        for h in history:
            reason = f"  {h['reason']}" if h.get("reason") else ""
            print(f"  {format_time(h.get('at'))}  {str(h.get('state', '?')).ljust(10)}{reason}")
    return EXIT_OK


def _write_stdout(data: bytes) -> None:
    out = getattr(sys.stdout, "buffer", None)
    if out is not None:
        sys.stdout.flush()
        out.write(data)
        out.flush()
    else:
        sys.stdout.write(data.decode("utf-8", "replace"))
        sys.stdout.flush()


def cmd_logs(args: argparse.Namespace) -> int:
    ui = _ui(args)
    path = f"/jobs/{quote(args.job, safe='')}/logs"
    offset = 0
    failures = 0
    with _api(args) as api:
        while True:
            params: dict[str, Any] = {"offset": offset}
            if args.follow:
                params["follow"] = 1
            try:
                resp = api.send(
                    "GET",
                    path,
                    params=params,
                    stream=True,
                    # A followed log can be silent for hours; the job's end closes the stream.
                    timeout=(CONNECT_TIMEOUT_S, None if args.follow else READ_TIMEOUT_S),
                    headers={"Accept-Encoding": "identity"},
                )
                with resp:
                    read1: Callable[[int], bytes] | None = getattr(resp.raw, "read1", None)
                    while True:
                        try:
                            # read1 returns what has arrived, so a followed log shows up at once.
                            data = read1(65536) if read1 else resp.raw.read(65536)
                        except (urllib3.exceptions.HTTPError, OSError) as exc:
                            raise NetworkError(
                                f"the log stream broke off ({_short_reason(exc)})"
                            ) from exc
                        if not data:
                            break
                        _write_stdout(data)
                        offset += len(data)
                        failures = 0
                if not args.follow:
                    return EXIT_OK
                # A proxy or worker timeout can end a followed stream early: only the job's
                # end is the log's end.
                state = str(api.job(args.job).get("state"))
                if state in TERMINAL_STATES:
                    return EXIT_OK
                raise NetworkError(f"the log stream ended while the job is {state}")
            except CliError as exc:
                if not args.follow or not _is_transient(exc):
                    raise
                failures += 1
                if failures >= LOG_FOLLOW_ATTEMPTS:
                    raise
                delay = min(_backoff(failures), 10.0)
                ui.info(f"{exc}; reconnecting in {delay:.3g} s from byte {offset}")
                time.sleep(delay)


def cmd_cancel(args: argparse.Namespace) -> int:
    ui = _ui(args)
    with _api(args) as api:
        job = _job_of(api.json("POST", f"/jobs/{quote(args.job, safe='')}/cancel"))
    if args.fmt == "json":
        print_json(job)
    else:
        print(f"{job['id']}  {job.get('state', '?')}")
        ui.info(_describe(job))
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    ui = _ui(args)
    with _api(args) as api:
        job = api.job(args.job)
        dest = Path(args.file or f"pink-{job['id']}.tar.zst")
        download_output(api, job, dest, ui)
    print(dest)
    return EXIT_OK


def cmd_workers(args: argparse.Namespace) -> int:
    with _api(args) as api:
        workers = api.json("GET", "/workers").get("workers") or []
    if args.fmt == "json":
        print_json(workers)
        return EXIT_OK
    rows = []
    for w in workers:
        status = "up" if w.get("alive") else "down"
        if w.get("drained"):
            status += ",drained"
        gpus = w.get("gpus") or []
        rows.append(
            [
                str(w.get("name", "?")),
                status,
                f"{len(w.get('gpus_free') or [])}/{len(gpus)}",
                str(w.get("cpus", "-")),
                human_bytes(w.get("memory_bytes")) if w.get("memory_bytes") else "-",
                (
                    human_bytes(w.get("disk_free_bytes"))
                    if w.get("disk_free_bytes") is not None
                    else "-"
                ),
                str(w.get("running", 0)),
                str(w.get("queued", 0)),
                str(len(w.get("images") or [])),
            ]
        )
    print_table(
        [
            "NAME",
            "STATUS",
            "GPUS FREE",
            "CPUS",
            "MEMORY",
            "DISK FREE",
            "RUNNING",
            "QUEUED",
            "IMAGES",
        ],
        rows,
    )
    return EXIT_OK


# -------------------------------------------------------------------------------- parser


def _add_globals(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Global options, accepted before and after the subcommand.

    On the subparsers the defaults are SUPPRESS, so an option given before the subcommand is
    not overwritten by the subparser's default.
    """

    def d(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    g = parser.add_argument_group("connection and output")
    g.add_argument(
        "--url",
        default=d(None),
        help="server URL (default: $PINK_URL or the one from `pink login`)",
    )
    g.add_argument(
        "--ca-cert",
        default=d(None),
        metavar="FILE",
        help="CA certificate to verify the server with ($PINK_CA_CERT)",
    )
    g.add_argument(
        "--token",
        default=d(None),
        help="API token ($PINK_TOKEN; default: the one from `pink login`)",
    )
    g.add_argument(
        "-v", "--verbose", action="count", default=d(0), help="log more (-vv: HTTP details)"
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=d(False),
        help="no progress or status messages on stderr",
    )


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--format",
        dest="fmt",
        choices=("table", "json"),
        default="table",
        help="output format",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pink",
        description="Run docker images on the GPU servers of a PINK cluster.",
        epilog="Exit codes: 0 ok, 1 job ended badly (--wait), 2 usage, 3 network/TLS, "
        "4 not logged in, 5 refused.",
    )
    parser.add_argument("--version", action="version", version=f"pink {__version__}")
    _add_globals(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_globals(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func, fmt="table")
        return p

    p = add("login", cmd_login, "log in and save an API token")
    p.add_argument(
        "server", nargs="?", metavar="URL", help="server URL, e.g. https://pink.example.org"
    )
    p.add_argument("--user", "-u", required=True)
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin",
    )

    add("logout", cmd_logout, "revoke and forget the saved token")

    p = add("submit", cmd_submit, "submit a docker image as a job")
    p.add_argument(
        "tarball", nargs="?", metavar="IMAGE.tar", help="archive written by `docker save`"
    )
    p.add_argument(
        "--image",
        metavar="NAME",
        help="export this local docker image instead (skipped when a worker has it)",
    )
    p.add_argument("--gpus", type=non_negative_int, help="GPUs to reserve (0 = CPU only)")
    p.add_argument(
        "--timeout",
        type=parse_duration,
        metavar="SECONDS",
        help="run time limit: seconds, or 30m, 2h, 1d",
    )
    p.add_argument(
        "--output",
        dest="job_output",
        choices=("full", "none"),
        help="keep the container's filesystem (full) or not",
    )
    p.add_argument("--name", help="a name for the job (default: the image's tag)")
    p.add_argument("--priority", type=int, help="higher runs first among your jobs")
    p.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="resubmitting with the same key returns the same job",
    )
    p.add_argument(
        "--wait", action="store_true", help="wait for the job to end; exit 1 unless it SUCCEEDED"
    )
    p.add_argument(
        "--download", metavar="FILE", help="with --wait: download the output archive to FILE"
    )
    _add_format(p)

    p = add("ls", cmd_ls, "list jobs, newest first")
    p.add_argument("--state", type=str.upper, choices=STATE_NAMES, help="only jobs in this state")
    p.add_argument("--all", action="store_true", help="everyone's jobs (admins)")
    p.add_argument(
        "-n", "--limit", type=positive_int, default=50, help="at most this many (default 50)"
    )
    _add_format(p)

    p = add("status", cmd_status, "show everything about a job")
    p.add_argument("job", metavar="ID")
    _add_format(p)

    p = add("logs", cmd_logs, "print a job's log")
    p.add_argument("job", metavar="ID")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")

    p = add("cancel", cmd_cancel, "cancel a job")
    p.add_argument("job", metavar="ID")
    _add_format(p)

    p = add("download", cmd_download, "download a job's output archive (resumes a partial one)")
    p.add_argument("job", metavar="ID")
    p.add_argument(
        "-o", "--file", metavar="FILE", help="where to save it (default pink-ID.tar.zst)"
    )

    p = add("workers", cmd_workers, "list the worker servers")
    _add_format(p)
    return parser


def _setup_logging(verbosity: int) -> None:
    if verbosity <= 0:
        return
    level = logging.DEBUG if verbosity >= 2 else logging.INFO
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pink").setLevel(level)
    if verbosity < 2:
        logging.getLogger("urllib3").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help
        return (
            exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
        )
    _setup_logging(args.verbose or 0)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"pink: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("pink: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `pink logs ID | head`: the reader left. Point stdout at /dev/null so the interpreter's
        # final flush does not print a second traceback.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
