"""Moving jobs and their bytes: submit an image (by reference when a worker holds it, as a
thin or whole upload otherwise, retried with one idempotency key), wait for a job to end, and
download its output archive (resumed, sha256-checked)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import quote

import requests

from pink.states import TERMINAL, JobState

from .archive import ImageArchive, docker_save
from .errors import EXIT_REFUSED, EXIT_USAGE, CliError, HttpError, NetworkError, is_transient
from .http import CONNECT_TIMEOUT_S, Api, job_of, short_reason
from .output import Progress, Ui, human_bytes, starts_by

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# After the last byte the server still finishes validating and storing the archive.
UPLOAD_READ_TIMEOUT_S = 600.0
#: One try plus three retries, all with the same Idempotency-Key.
UPLOAD_ATTEMPTS = 4
DOWNLOAD_ATTEMPTS = 4
#: First pause between retries; it doubles each time.
RETRY_BACKOFF_S = 1.0
POLL_MIN_S = 0.2
POLL_MAX_S = 2.0
#: How long ``--wait`` keeps trying while the server cannot be reached (a web server restart).
WAIT_NETWORK_GRACE_S = 120.0

TERMINAL_STATES = frozenset(s.value for s in TERMINAL)


def backoff(attempt: int) -> float:
    """The pause before retry number ``attempt`` (1, 2, ...)."""
    return RETRY_BACKOFF_S * (2 ** (attempt - 1))


# -------------------------------------------------------------------------------- submit


class StreamBody:
    """An upload body of known length: the blocks ``blocks()`` yields, counted on ``progress``.

    Having ``__len__`` and ``__iter__`` but no ``read`` makes requests send Content-Length
    (the server requires it) instead of chunked encoding, and makes urllib3 pull our blocks
    rather than its own 16 KiB ones. Each iteration calls ``blocks()`` afresh (a retry).
    """

    def __init__(self, size: int, blocks: Callable[[], Iterator[bytes]], progress: Progress,
                 what: str) -> None:
        self.size = size
        self.blocks = blocks
        self.progress = progress
        self.what = what

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        left = self.size
        for block in self.blocks():
            left -= len(block)
            if left < 0:
                break
            self.progress.add(len(block))
            yield block
        if left:
            # Sending fewer or more bytes than announced would hang or confuse the server.
            raise CliError(EXIT_USAGE, f"{self.what} changed size while it was being sent")


def _file_blocks(path: Path, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
    """The byte ranges of a file (a thin archive skips some members), in 1 MiB blocks."""
    with open(path, "rb") as f:
        for start, end in ranges:
            f.seek(start)
            left = end - start
            while left > 0 and (block := f.read(min(CHUNK, left))):
                left -= len(block)
                yield block


def _submit_held(
    api: Api, params: dict[str, Any], headers: dict[str, str], image_id: str, key: str
) -> dict[str, Any] | None:
    """Submit against an image a worker holds: empty body. None when no worker has it anymore."""
    try:
        resp = api.send(
            "POST",
            "/jobs",
            params={**params, "image": image_id},
            data=b"",
            headers={**headers, "Idempotency-Key": key, "Content-Length": "0"},
            ok=(200, 201),
        )
    except HttpError as exc:
        if exc.status == 409:
            log.info("server no longer has %s on a worker: %s", image_id, exc)
            return None
        raise
    with resp:
        return job_of(resp.json())


def _upload(
    api: Api, archive: ImageArchive, params: dict[str, Any], headers: dict[str, str], key: str,
    ui: Ui, omit: int = 0,
) -> dict[str, Any] | None:
    """POST the tarball; retry broken connections with the same key, so at most one job exists.

    With ``omit``, a thin archive without its ``omit`` bottom layers; None when no worker holds
    them any more (then send the whole archive)."""
    ranges = archive.thin_ranges(omit) if omit else [(0, archive.size)]
    if omit:
        params = {**params, "omitted_layers": ",".join(archive.diff_ids[:omit])}
    total = sum(end - start for start, end in ranges)
    for attempt in range(1, UPLOAD_ATTEMPTS + 1):
        progress = ui.progress("uploading", total)
        try:
            resp = api.send(
                "POST",
                "/jobs",
                params=params,
                data=StreamBody(total, lambda: _file_blocks(archive.path, ranges), progress,
                                str(archive.path)),
                headers={**headers, "Idempotency-Key": key, "Content-Type": "application/x-tar"},
                timeout=(CONNECT_TIMEOUT_S, UPLOAD_READ_TIMEOUT_S),
                ok=(200, 201),
            )
        except CliError as exc:
            progress.abort()
            if omit and isinstance(exc, HttpError) and exc.status == 409:
                log.info("thin upload refused: %s", exc)
                return None
            if not is_transient(exc):
                raise
            if attempt == UPLOAD_ATTEMPTS:
                raise CliError(
                    exc.code,
                    f"{exc}. The upload failed {attempt} times; run the same command again with "
                    f"--idempotency-key {key} so that a job the server did create "
                    "is not duplicated",
                ) from exc
            delay = backoff(attempt)
            ui.info(
                f"upload interrupted ({exc}); retrying in {delay:.3g} s "
                "with the same idempotency key"
                f" (retry {attempt} of {UPLOAD_ATTEMPTS - 1})"
            )
            time.sleep(delay)
            continue
        with resp:
            job = job_of(resp.json())
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


def holders(api: Api, path: str, **kwargs: Any) -> list[str]:
    """The workers that ``GET path`` (an image's or an input's) says hold it for us; empty
    when unknown (then we upload)."""
    try:
        data = api.json("GET", path, **kwargs)
    except HttpError as exc:
        if exc.status == 401:
            raise
        # Only an optimisation: if the server cannot tell, sending the bytes is always correct.
        log.info("cannot ask which workers hold %s (%s); uploading", path, exc)
        return []
    workers = data.get("workers") or []
    return [str(w) for w in workers] if isinstance(workers, list) else []


def submit(
    api: Api, params: dict[str, Any], headers: dict[str, str], key: str, ui: Ui, *,
    image_id: str, archive: ImageArchive | None, image: str | None,
) -> dict[str, Any]:
    """Create the job for image ``image_id`` with query ``params`` and ``headers`` (the job
    spec): by reference when a worker holds it, otherwise by uploading ``archive`` (thin when
    a worker holds its bottom layers), which is first exported with `docker save` from the
    local ``image`` when there is none."""
    job: dict[str, Any] | None = None
    held = holders(api, f"/images/{image_id}")
    if held:
        job = _submit_held(api, params, headers, image_id, key)
        if job is not None:
            ui.info(f"image already on worker {', '.join(held)}: 0 bytes sent")
            return job
        ui.info(f"image {image_id} is no longer on a worker; uploading it")
    with contextlib.ExitStack() as cleanup:
        if archive is None:
            assert image is not None  # the caller gives one of the two
            # The server needs Content-Length, so the export goes to a file, not a pipe.
            tmp = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="pink-save-")))
            archive = docker_save(image, tmp / "image.tar", ui)
        omit, where = held_layers(api, archive)
        if omit:
            thin = sum(end - start for start, end in archive.thin_ranges(omit))
            ui.info(
                f"worker {where} holds {omit} of the image's {len(archive.diff_ids)} layers: "
                f"sending {human_bytes(thin)} of {human_bytes(archive.size)}"
            )
            job = _upload(api, archive, params, headers, key, ui, omit=omit)
            if job is not None:
                return job
            ui.info("the worker no longer holds those layers; sending the whole archive")
        job = _upload(api, archive, params, headers, key, ui)
        assert job is not None  # only a thin upload can be refused
        return job


# ---------------------------------------------------------------------------------- wait


def describe(job: dict[str, Any]) -> str:
    """One line about a job's state: queue position, where it runs, or how it ended."""
    state = str(job.get("state", "?"))
    text = f"job {job.get('id')}: {state}"
    extra: list[str] = []
    if state == JobState.QUEUED.value:
        if job.get("queue_position") is not None:
            extra.append(f"position {job['queue_position']}")
        if job.get("waiting_reason"):
            extra.append(str(job["waiting_reason"]))
        eta = starts_by(job, time.time())
        if eta:
            extra.append(f"starts {eta}" if eta != "now" else "starts now")
    elif state in (JobState.STARTING.value, JobState.RUNNING.value) and job.get("worker"):
        gpus = job.get("gpu_indices") or []
        text += f" on {job['worker']}" + (
            f", GPUs {','.join(str(g) for g in gpus)}" if gpus else ""
        )
    elif state in TERMINAL_STATES:
        if job.get("exit_code") is not None:
            extra.append(f"exit code {job['exit_code']}")
        if job.get("reason"):
            extra.append(str(job["reason"]))
    return text + (f" ({'; '.join(extra)})" if extra else "")


def wait_for_job(api: Api, job_id: str, ui: Ui, until_started: bool = False,
                 last: str | None = None) -> dict[str, Any]:
    """Poll until the job is terminal (with ``until_started``: until it has left the queue),
    telling each state change (from ``last``, the state already told) on stderr."""
    delay = POLL_MIN_S
    failing_since: float | None = None
    while True:
        try:
            job = api.job(job_id)
        except CliError as exc:
            if not (is_transient(exc) or (isinstance(exc, HttpError) and exc.status == 503)):
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
                ui.info(describe(job))
                last = state
                # Changes come in bursts (QUEUED → STARTING → RUNNING): look again soon.
                delay = POLL_MIN_S
            if state in TERMINAL_STATES or (until_started and state not in ("UPLOADING", "QUEUED")):
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
            raise NetworkError(f"the download broke off ({short_reason(exc)})") from exc
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
            if not is_transient(exc):
                raise
            if attempt == DOWNLOAD_ATTEMPTS:
                raise CliError(
                    exc.code,
                    f"{exc}. Gave up after {attempt} tries; {part} keeps what arrived: run "
                    f"`pink download {job_id} -o {dest}` again to resume",
                ) from exc
            delay = backoff(attempt)
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
