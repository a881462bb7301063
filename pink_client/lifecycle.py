"""``pink resubmit`` (an ended job again, from the image its worker holds, with changes),
``pink reorder`` (a queued job's order among the user's own jobs) and ``pink rm`` (delete ended
jobs with their output and log)."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any
from urllib.parse import quote

from .commands import after_submit, ui_for
from .errors import EXIT_OK, CliError
from .http import Api, job_of
from .jobspec import job_spec
from .output import format_time, print_json
from .settings import resolve_settings


def resubmit_changes(args: argparse.Namespace, old_env: dict[str, str]) -> dict[str, Any]:
    """The body of POST /jobs/<id>/resubmit: only what the options change. ``-e``/``--env-file``
    add to (or replace single variables of) the old job's environment, ``old_env``."""
    changes = job_spec(args)
    if "env" in changes:
        changes["env"] = {**old_env, **changes["env"]}
    for key, value in (("gpus", args.gpus), ("timeout", args.timeout), ("output", args.job_output),
                       ("name", args.name), ("priority", args.priority),
                       ("user_priority", args.user_priority)):
        if value is not None:
            changes[key] = value
    return changes


def cmd_resubmit(args: argparse.Namespace) -> int:
    ui = ui_for(args)
    if args.download:
        args.wait = True
    with Api(resolve_settings(args)) as api:
        old = api.job(args.job)
        changes = resubmit_changes(args, dict(old.get("env") or {}))
        job = job_of(api.json(
            "POST", f"/jobs/{quote(args.job, safe='')}/resubmit", json=changes,
            headers={"Idempotency-Key": args.idempotency_key or str(uuid.uuid4())}, ok=(200, 201),
        ))
        ui.info(f"resubmitted job {args.job} as job {job['id']} ({job.get('state', '?')}) on worker "
                f"{job.get('worker', '?')}: 0 bytes sent, the worker holds the image")
        return after_submit(api, args, ui, job)


def cmd_reorder(args: argparse.Namespace) -> int:
    with Api(resolve_settings(args)) as api:
        job = job_of(api.json("PATCH", f"/jobs/{quote(args.job, safe='')}",
                              json={"user_priority": args.user_priority}))
    if args.fmt == "json":
        print_json(job)
    else:
        print(f"job {job['id']}: user priority {job.get('user_priority', 0)}, queue position "
              f"{job.get('queue_position') or '?'}" + (f" ({job['waiting_reason']})" if job.get("waiting_reason") else ""))
    return EXIT_OK


def cmd_rm(args: argparse.Namespace) -> int:
    """Delete each job; a refusal of one (still running, not found) is told and the others
    are still deleted. The exit code is that of the last refusal (0 when all went)."""
    ui = ui_for(args)
    rc = EXIT_OK
    deleted = []
    with Api(resolve_settings(args)) as api:
        for job_id in args.jobs:
            try:
                data = api.json("DELETE", f"/jobs/{quote(job_id, safe='')}").get("deleted") or {}
            except CliError as exc:
                print(f"pink: {job_id}: {exc}", file=sys.stderr)
                rc = exc.code
                continue
            deleted.append(data)
            if args.fmt != "json":
                print(job_id, flush=True)
            ui.info(f"deleted job {job_id} at {format_time(data.get('at'))}: its record now, its output and "
                    f"log on worker {data.get('worker') or '?'} within moments")
    if args.fmt == "json":
        print_json(deleted)
    return rc
