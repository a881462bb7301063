"""Printing a job's log: once, or followed until the job ends (``pink logs [-f]`` and
``pink submit --wait``, which follows the log of the job it waits for)."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable
from urllib.parse import quote

import urllib3.exceptions

from .errors import CliError, NetworkError, is_transient
from .http import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, Api, short_reason
from .jobs import TERMINAL_STATES, backoff, describe, wait_for_job
from .output import Ui

LOG_FOLLOW_ATTEMPTS = 10
#: States in which a job has no log yet.
NOT_STARTED = ("UPLOADING", "QUEUED")


def write_stdout(data: bytes) -> None:
    out = getattr(sys.stdout, "buffer", None)
    if out is not None:
        sys.stdout.flush()
        out.write(data)
        out.flush()
    else:
        sys.stdout.write(data.decode("utf-8", "replace"))
        sys.stdout.flush()


def print_log(api: Api, job_id: str, follow: bool, ui: Ui, offset: int = 0,
              on_job: Callable[[dict[str, Any]], None] | None = None) -> int:
    """Write the job's log from ``offset`` to stdout; with ``follow``, until the job ends
    (reconnecting from where it broke off; ``on_job`` sees the job each time it is read
    then). Returns the offset reached."""
    path = f"/jobs/{quote(job_id, safe='')}/logs"
    failures = 0
    while True:
        params: dict[str, Any] = {"offset": offset}
        if follow:
            params["follow"] = 1
        try:
            resp = api.send(
                "GET",
                path,
                params=params,
                stream=True,
                # A followed log can be silent for hours; the job's end closes the stream.
                timeout=(CONNECT_TIMEOUT_S, None if follow else READ_TIMEOUT_S),
                headers={"Accept-Encoding": "identity"},
            )
            with resp:
                read1: Callable[[int], bytes] | None = getattr(resp.raw, "read1", None)
                while True:
                    try:
                        # read1 returns what has arrived, so a followed log shows up at once.
                        data = read1(65536) if read1 else resp.raw.read(65536)
                    except (urllib3.exceptions.HTTPError, OSError) as exc:
                        raise NetworkError(f"the log stream broke off ({short_reason(exc)})") from exc
                    if not data:
                        break
                    write_stdout(data)
                    offset += len(data)
                    failures = 0
            if not follow:
                return offset
            # A proxy or worker timeout can end a followed stream early: only the job's
            # end is the log's end.
            job = api.job(job_id)
            if on_job is not None:
                on_job(job)
            state = str(job.get("state"))
            if state in TERMINAL_STATES:
                return offset
            raise NetworkError(f"the log stream ended while the job is {state}")
        except CliError as exc:
            if not follow or not is_transient(exc):
                raise
            failures += 1
            if failures >= LOG_FOLLOW_ATTEMPTS:
                raise
            delay = min(backoff(failures), 10.0)
            ui.info(f"{exc}; reconnecting in {delay:.3g} s from byte {offset}")
            time.sleep(delay)


def show_log(api: Api, job_id: str, follow: bool, ui: Ui) -> None:
    """``pink logs``: a job that has not started has no log; say so, and with ``follow``
    wait for it to start (telling its state changes on stderr) and follow its log."""
    job = api.job(job_id)
    if str(job.get("state")) in NOT_STARTED:
        if not follow:
            ui.info(f"{describe(job)}: it has not started, so it has no log yet "
                    f"(`pink logs -f {job_id}` waits for it)")
            return
        wait_for_job(api, job_id, ui, until_started=True)
    print_log(api, job_id, follow, ui)


def wait_following_log(api: Api, job_id: str, ui: Ui) -> dict[str, Any]:
    """``pink submit --wait``: state changes on stderr, the log on stdout as it runs; returns
    the job once it has ended."""
    job = wait_for_job(api, job_id, ui, until_started=True)
    last = str(job.get("state"))

    def tell(job: dict[str, Any]) -> None:
        nonlocal last
        if str(job.get("state")) != last:
            last = str(job.get("state"))
            ui.info(describe(job))

    if last not in NOT_STARTED:
        print_log(api, job_id, follow=True, ui=ui, on_job=tell)
    return wait_for_job(api, job_id, ui, last=last)
