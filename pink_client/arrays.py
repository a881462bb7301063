"""Job arrays in the CLI: ``pink submit --array 0-99%8`` / ``--array-file F``, arrays folded
into one line by ``pink ls``, and ``pink status`` / ``pink cancel`` of an array id."""

from __future__ import annotations

import argparse
import shlex
import time
from typing import Any
from urllib.parse import quote

from pink.arrays import ArrayRangeError, counts, parse_array
from pink.states import JobState

from .errors import EXIT_USAGE, CliError, HttpError
from .http import Api
from .output import Ui, format_time, human_duration, print_table

#: The CLI checks ranges before sending anything; the server applies its own maximum.
MAX_LOCAL = 100_000


def read_array_file(path: str) -> list[list[str]]:
    """One job per non-empty line of ``path``, each split like a shell line into its command
    (lines starting with # are comments)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise CliError(EXIT_USAGE, f"--array-file {path}: {exc.strerror or exc}") from None
    argvs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise CliError(EXIT_USAGE, f"--array-file {path}, line {number}: {exc}") from None
        argvs.append(argv)
    if not argvs:
        raise CliError(EXIT_USAGE, f"--array-file {path} has no command lines")
    return argvs


def array_request(args: argparse.Namespace, params: dict[str, Any], spec: dict[str, Any]) -> None:
    """Put ``--array`` in the query ``params`` and ``--array-file``'s commands in the header
    ``spec``, checked first (exit 2 for a bad range)."""
    text = getattr(args, "array", None)
    path = getattr(args, "array_file", None)
    if path:
        if "command" in spec:
            raise CliError(EXIT_USAGE, "--array-file gives each job its command: leave out -- COMMAND")
        if text and not (text.startswith("%") and text[1:].isdigit() and int(text[1:]) > 0):
            raise CliError(EXIT_USAGE, "with --array-file, --array may only be %N (how many run at once)")
        spec["array_args"] = read_array_file(path)
    elif text:
        try:
            parse_array(text, MAX_LOCAL)
        except ArrayRangeError as exc:
            raise CliError(EXIT_USAGE, f"--array: {exc}") from None
    if text:
        params["array"] = text


def counts_text(by_state: dict[str, int]) -> str:
    """``{"RUNNING": 2, "QUEUED": 5}`` -> ``"2 RUNNING, 5 QUEUED"`` in the states' order."""
    order = [s.value for s in JobState]
    return ", ".join(f"{n} {s}" for s, n in sorted(by_state.items(), key=lambda i: order.index(i[0])))


def fold_rows(jobs: list[dict[str, Any]], job_row, now: float) -> list[list[str]]:
    """Rows of ``pink ls``: one per single job, one per array (where its newest job is) with
    its counts per state in the STATE column and its limit (%N) in the QUEUE column."""
    rows: list[list[str]] = []
    arrays: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        array_id = job.get("array_id") or ""
        if not array_id:
            rows.append(job_row(job, now))
            continue
        if array_id not in arrays:
            arrays[array_id] = []
            rows.append([array_id])  # filled in below, when all its listed jobs are known
        arrays[array_id].append(job)
    for row in rows:
        if len(row) == 1:
            members = arrays[row[0]]
            first = members[0]
            shown = f"{len(members)} of {first.get('array_size', len(members))}"
            workers = sorted({str(j.get("worker") or "-") for j in members})
            created = min(j.get("created_at") or now for j in members)
            limit = first.get("array_limit")
            row[:] = [row[0], f"{first.get('name') or '-'} [array, {shown}]",
                      counts_text(counts(str(j.get("state", "?")) for j in members)),
                      f"%{limit}" if limit else "-", ",".join(workers), str(first.get("gpus", 0)),
                      human_duration(now - created), "-", "-"]
    return rows


def get_array(api: Api, array_id: str) -> dict[str, Any]:
    data = api.json("GET", f"/arrays/{quote(array_id, safe='')}")
    return data["array"]


def print_array(array: dict[str, Any]) -> None:
    """``pink status ARRAY``: the array, then a line per job."""
    now = time.time()
    limit = f", at most {array['limit']} at once" if array.get("limit") else ""
    for key, value in (("array", array["id"]), ("name", array.get("name") or "-"),
                       ("jobs", f"{array['size']}{limit}"), ("states", counts_text(array["counts"])),
                       ("workers", ", ".join(array.get("workers") or ())),
                       ("image", array.get("image_id")), ("created", format_time(array.get("created_at")))):
        print(f"{key.ljust(8)}  {value}")
    rows = []
    for j in array.get("jobs") or []:
        started = j.get("started_at")
        runtime = ((j.get("finished_at") or now) - started) if started else None
        exit_code = j.get("exit_code")
        rows.append([str(j.get("array_index")), str(j["id"]), str(j.get("state", "?")), str(j.get("worker") or "-"),
                     human_duration(runtime), "-" if exit_code is None else str(exit_code)])
    if rows:
        print_table(["INDEX", "ID", "STATE", "WORKER", "RUNTIME", "EXIT"], rows)


def cancel_array(api: Api, array_id: str, discard: bool = False) -> dict[str, Any]:
    return api.json("POST", f"/arrays/{quote(array_id, safe='')}/cancel" + ("?discard=1" if discard else ""))


def job_or_array(call_job, call_array):
    """``call_job()``; when the server knows no such job, ``call_array()`` (an id names a job
    or an array). A 404 of both is the job's."""
    try:
        return "job", call_job()
    except HttpError as exc:
        if exc.status != 404:
            raise
        try:
            return "array", call_array()
        except HttpError as again:
            if again.status == 404:
                raise exc from None
            raise


def wait_for_array(api: Api, array_id: str, ui: Ui) -> dict[str, Any]:
    """Poll until every job of the array has ended, telling the counts when they change."""
    last = ""
    delay = 0.5
    while True:
        array = get_array(api, array_id)
        text = counts_text(array["counts"])
        if text != last:
            ui.info(f"array {array_id}: {text}")
            last = text
        if array.get("ended"):
            return array
        time.sleep(delay)
        delay = min(delay * 1.5, 5.0)
