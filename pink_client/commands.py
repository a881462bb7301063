"""The subcommands of ``pink``: one ``cmd_NAME(args) -> exit code`` per command."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import shlex
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from pink.states import JobState

from .archive import ImageArchive, docker_image_id, read_image_archive
from .arrays import array_request, cancel_array, counts_text, fold_rows, get_array, job_or_array, print_array, wait_for_array
from .errors import (
    EXIT_AUTH, EXIT_JOB_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, CliError, HttpError,
)
from .http import Api, job_of
from .inputs import InputArchive, send_input
from .jobs import describe, download_output, submit, wait_for_job
from .jobspec import job_spec, spec_headers
from .reactions import status_rows
from .logs import show_log, wait_following_log
from .output import (
    Ui, format_time, gpu_use, human_bytes, human_duration, isatty, print_json, print_table, starts_by,
)
from .usage import list_pages
from .settings import (
    Settings, is_loopback, load_config, normalize_url, resolve_settings, save_config,
)

log = logging.getLogger(__name__)

def ui_for(args: argparse.Namespace) -> Ui:
    return Ui(
        quiet=bool(getattr(args, "quiet", False)), fmt=getattr(args, "fmt", "table") or "table"
    )


def _api(args: argparse.Namespace) -> Api:
    return Api(resolve_settings(args))


def cmd_submit(args: argparse.Namespace) -> int:
    ui = ui_for(args)
    if bool(args.tarball) == bool(args.image):
        raise CliError(
            EXIT_USAGE,
            "give either IMAGE.tar (from `docker save`) or --image NAME (a local docker image), "
            "not both",
        )
    if args.download:
        args.wait = True
    key = args.idempotency_key or str(uuid.uuid4())
    spec = job_spec(args)
    params: dict[str, Any] = {}
    array_request(args, params, spec)
    headers = spec_headers(spec)
    for field, value in (
        ("gpus", args.gpus),
        ("timeout", args.timeout),
        ("output", args.job_output),
        ("priority", args.priority),
    ):
        if value is not None:
            params[field] = value

    inputs = InputArchive(Path(args.input)) if args.input else None

    with _api(args) as api:
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
        if inputs is not None:
            # The input goes first, where the job fits and next to its image if possible; the
            # job then goes where the input is.
            placement = {"gpus": args.gpus, "data": ",".join(args.data or ()) or None,
                         "cpus": args.cpus, "memory": args.memory, "image": image_id}
            params["input"] = send_input(
                api, inputs, {k: v for k, v in placement.items() if v is not None}, ui)

        job = submit(api, params, headers, key, ui, image_id=image_id, archive=archive,
                     image=args.image)
        ui.info(f"submitted job {job['id']} ({job.get('state', '?')})")
        return after_submit(api, args, ui, job)


def after_submit(api: Api, args: argparse.Namespace, ui: Ui, job: dict[str, Any]) -> int:
    """What ``pink submit`` and ``pink resubmit`` do with the job (or array) they made: its id
    on stdout; with --wait, follow it (its log on stdout, unless JSON) and, with --download,
    fetch its archive. The exit code."""
    if job.get("array_id"):
        return _submitted_array(api, args, ui, job)
    if args.fmt == "json" and not args.wait:
        print_json(job)
        return EXIT_OK
    if args.fmt != "json":
        print(job["id"], flush=True)
    if not args.wait:
        return EXIT_OK
    try:
        # The log on stdout as the job runs (not in JSON: stdout is the job's JSON then).
        job = (wait_for_job if args.fmt == "json" else wait_following_log)(api, str(job["id"]), ui)
    except KeyboardInterrupt:
        raise CliError(130, f"stopped waiting; job {job['id']} keeps running: follow it with "
                            f"`pink status {job['id']}` or stop it with `pink cancel {job['id']}`") from None
    ui.info(describe(job))
    if args.download:
        if not job.get("output_bytes"):
            ui.info(f"job {job['id']} has no output archive to download")
        else:
            download_output(api, job, Path(args.download), ui)
    if args.fmt == "json":
        print_json(job)
    return EXIT_OK if job.get("state") == JobState.SUCCEEDED.value else EXIT_JOB_FAILED


def _submitted_array(api: Api, args: argparse.Namespace, ui: Ui, first: dict[str, Any]) -> int:
    """Say which array was made (its id on stdout); with --wait, wait for all of its jobs."""
    array = get_array(api, str(first["array_id"]))
    ui.info(f"submitted array {array['id']}: {array['size']} jobs"
            + (f", at most {array['limit']} at once" if array.get("limit") else ""))
    if args.fmt != "json":
        print(array["id"], flush=True)
    if args.wait:
        try:
            array = wait_for_array(api, array["id"], ui)
        except KeyboardInterrupt:
            raise CliError(130, f"stopped waiting; array {array['id']} keeps running: "
                                f"`pink status {array['id']}`, `pink cancel {array['id']}`") from None
    if args.fmt == "json":
        print_json(array)
    if not args.wait:
        return EXIT_OK
    return EXIT_OK if set(array["counts"]) == {JobState.SUCCEEDED.value} else EXIT_JOB_FAILED


def cmd_login(args: argparse.Namespace) -> int:
    ui = ui_for(args)
    cfg = load_config()
    file_url = normalize_url(str(cfg.get("url") or ""))
    url = normalize_url(args.server or args.url or os.environ.get("PINK_URL") or file_url)
    if not url:
        raise CliError(EXIT_USAGE, "give the server: pink login https://SERVER --user NAME")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not isatty(sys.stdin):
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
    if urlsplit(url).scheme == "http" and not is_loopback(url):
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
    ui = ui_for(args)
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
        # Its place in its worker's queue (1 starts next); "-" once it left the queue.
        str(job["queue_position"]) if job.get("state") == "QUEUED" and job.get("queue_position") else "-",
        starts_by(job, now, short=True) or "-",
        str(job.get("worker") or "-"),
        str(job.get("gpus", 0)),
        human_duration(now - job["created_at"]) if job.get("created_at") else "-",
        human_duration(runtime),
        human_bytes(job.get("output_bytes")) if job.get("output_bytes") else "-",
    ]


def cmd_ls(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    if args.state:
        params["state"] = args.state
    if args.all:
        params["all"] = 1
    with _api(args) as api:
        jobs = list_pages(api, params, args.limit, args.before or "")
    if args.fmt == "json":
        print_json(jobs)
        return EXIT_OK
    now = time.time()
    print_table(
        ["ID", "NAME", "STATE", "QUEUE", "STARTS BY", "WORKER", "GPUS", "AGE", "RUNTIME", "OUTPUT"],
        [_job_row(j, now) for j in jobs] if args.expand else fold_rows(jobs, _job_row, now),
    )
    return EXIT_OK


def _kept_label(job: dict[str, Any], expires: float | None, now: float) -> str:
    """What the worker keeps until ``expires``: the archive and the log, or the log alone (a
    job cancelled before it ran, with --discard, or with --output none has no archive)."""
    kept = "output and log" if job.get("output_bytes") else "log"
    return f"{kept} deleted after" if expires and expires < now else f"{kept} kept until"


def _entries(job: dict[str, Any]) -> list[tuple[str, Any]]:
    """The archive's top entries, one row each (``changes`` and ``path:`` modes)."""
    rows = []
    for i, entry in enumerate(job.get("output_entries") or ()):
        kind = entry.get("type", "file")
        size = "deleted" if kind == "deleted" else f"{kind}, {human_bytes(entry.get('bytes') or 0)}"
        rows.append(("archive holds" if i == 0 else "", f"{entry.get('name')}  ({size})"))
    return rows


def cmd_status(args: argparse.Namespace) -> int:
    with _api(args) as api:
        kind, job = job_or_array(lambda: api.job(args.job), lambda: get_array(api, args.job))
    if kind == "array":
        print_json(job) if args.fmt == "json" else print_array(job)
        return EXIT_OK
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
            ("starts", starts_by(job, now) or "unknown (no estimate: the worker is down or drained, or "
                                              "the job waits for something no time limit frees)"),
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
        # The image's own size (its worker's docker counts it at the start) and what was sent.
        ("image size", human_bytes(job.get("image_size")) if job.get("image_size") else None),
        ("uploaded", _uploaded(job)),
        ("created", format_time(job.get("created_at"))),
        ("updated", format_time(job.get("updated_at"))),
        ("started", format_time(started) if started else None),
        ("finished", format_time(finished) if finished else None),
        ("runtime", human_duration((finished or now) - started) if started else None),
        ("exit code", job.get("exit_code")),
        ("reason", job.get("reason")),
        ("gpu time", human_duration(job.get("gpu_seconds")) if job.get("gpu_seconds") else None),
        ("gpu use", gpu_use(job)),
        ("output", f"{job.get('output')}, thrown away by a cancel with --discard"
         if job.get("discard_output") else job.get("output")),
        ("output size", human_bytes(job.get("output_bytes")) if job.get("output_bytes") else None),
        ("output sha256", job.get("output_sha256")),
        *_entries(job),
        # Only about files there are: a job cancelled before it started has neither.
        (_kept_label(job, expires, now),
         format_time(expires) if expires and (job.get("output_bytes") or job.get("log_bytes")) else None),
        ("log size", human_bytes(job.get("log_bytes")) if job.get("log_bytes") else None),
        ("resubmit of", job.get("resubmit_of")),
        *status_rows(job),
        *_ran_with(job),
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


def _uploaded(job: dict[str, Any]) -> str | None:
    """What was sent for the job: its upload's bytes, or none when its worker held the image."""
    if job.get("image_bytes"):
        return human_bytes(job["image_bytes"])
    if job.get("image_id") and job.get("state") != JobState.UPLOADING.value:
        return "nothing (its worker held the image)"
    return None


def _ran_with(job: dict[str, Any]) -> list[tuple[str, Any]]:
    """Rows of `pink status` for what the job runs with; env values as the server shows them
    (the owner's only: "***" for anyone else)."""
    if "cpus" not in job:  # a server from before jobs had these
        return []
    command, entrypoint = job.get("command"), job.get("entrypoint")
    cpus, memory, shm = job.get("cpus"), job.get("memory_bytes"), job.get("shm_bytes")
    rows: list[tuple[str, Any]] = [
        ("command", "the image's" if command is None else shlex.join(command)),
        ("entrypoint", "the image's" if entrypoint is None else shlex.join(entrypoint) or "none"),
        ("workdir", job.get("workdir") or "the image's"),
        ("datasets", ", ".join(f"{d} (/data/{d})" for d in job.get("datasets") or ()) or "none"),
        ("input", f"{job['input']} (/in)" if job.get("input") else "none"),
        ("cpus", f"{cpus:g}" if cpus else "no limit"),
        ("memory", human_bytes(memory, binary=True) if memory else "no limit"),
        ("shm size", human_bytes(shm, binary=True) if shm else "docker's default (64 MiB)"),
    ]
    for i, (name, value) in enumerate(sorted((job.get("env") or {}).items())):
        rows.append(("env" if i == 0 else "", f"{name}={value}"))
    return rows


def cmd_logs(args: argparse.Namespace) -> int:
    with _api(args) as api:
        show_log(api, args.job, args.follow, ui_for(args))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    ui = ui_for(args)
    with _api(args) as api:
        query = "?discard=1" if args.discard else ""
        kind, answer = job_or_array(lambda: job_of(api.json("POST", f"/jobs/{quote(args.job, safe='')}/cancel{query}")),
                                    lambda: cancel_array(api, args.job, args.discard))
    if kind == "array":
        if args.fmt == "json":
            print_json(answer)
        else:
            print(f"{args.job}  {counts_text(answer['array']['counts'])}")
            ui.info(f"array {args.job}: cancelled {len(answer['cancelled'])} jobs that had not ended")
        return EXIT_OK
    job = answer
    if args.fmt == "json":
        print_json(job)
    else:
        print(f"{job['id']}  {job.get('state', '?')}")
        ui.info(describe(job))
        if job.get("state") == JobState.EXPORTING.value:
            ui.info(f"its worker stops it and keeps what it wrote as its output; `pink status {job['id']}` "
                    f"shows when it is CANCELLED")
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    ui = ui_for(args)
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
    sick_lines = []
    for w in workers:
        status = "up" if w.get("alive") else "down"
        if w.get("drained"):
            status += ",drained"
        gpus = w.get("gpus") or []
        quarantined = w.get("quarantined") or {}
        sick_lines += [f"{w.get('name', '?')} GPU {i}: {why}" for i, why in
                       sorted(quarantined.items(), key=lambda kv: int(kv[0]))]
        rows.append(
            [
                str(w.get("name", "?")),
                status,
                f"{len(w.get('gpus_free') or [])}/{len(gpus)}",
                ",".join(sorted(quarantined, key=int)) or "-",
                str(w.get("cpus", "-")),
                human_bytes(w.get("memory_bytes")) if w.get("memory_bytes") else "-",
                human_bytes(w.get("disk_free_bytes")) if w.get("disk_free_bytes") is not None else "-",
                str(w.get("running", 0)),
                _slots_cell(w),
                str(w.get("queued", 0)),
                str(len(w.get("images") or [])),
                human_bytes(w.get("image_cache_bytes") or 0) if w.get("alive") else "-",
            ]
        )
    print_table(
        ["NAME", "STATUS", "GPUS FREE", "QUARANTINED", "CPUS", "MEMORY", "DISK FREE", "RUNNING", "SLOTS", "QUEUED",
         "IMAGES", "IMAGE CACHE"],
        rows,
    )
    if sick_lines:
        print("\nquarantined GPUs (no new jobs):")
        for line in sick_lines:
            print(f"  {line}")
    return EXIT_OK


def _slots_cell(w: dict[str, Any]) -> str:
    """The job slots in force; "3 (config 4)" while an admin's live setting differs."""
    slots, configured = w.get("max_parallel_jobs"), w.get("slots_configured")
    if slots is None:
        return "-"
    return f"{slots} (config {configured})" if configured and configured != slots else str(slots)


def cmd_datasets(args: argparse.Namespace) -> int:
    with _api(args) as api:
        datasets = api.json("GET", "/datasets").get("datasets") or []
    if args.fmt == "json":
        print_json(datasets)
        return EXIT_OK
    if not datasets:
        ui_for(args).info("no worker offers a dataset (worker.datasets in the workers' configuration)")
        return EXIT_OK
    print_table(
        ["NAME", "AVAILABLE", "WORKERS"],
        [[str(d.get("name", "?")), "yes" if d.get("available") else "no",
          ",".join(d.get("workers") or []) or "-"] for d in datasets],
    )
    return EXIT_OK
