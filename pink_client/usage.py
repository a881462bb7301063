"""``pink usage``: jobs, GPU-hours, CPU-hours and bytes per user or per day (GET /api/v1/usage);
and the paging of ``pink ls`` (GET /api/v1/jobs?before=ID, the answer's ``next``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from .errors import EXIT_OK
from .http import Api
from .output import human_bytes, print_json, print_table
from .settings import resolve_settings

#: The most jobs one page of GET /jobs may carry (the server's cap).
PAGE_MAX = 1000


def cmd_usage(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("since", args.since), ("until", args.until), ("user", args.user)) if v}
    with Api(resolve_settings(args)) as api:
        answer = api.json("GET", "/usage", params=params)
    if args.fmt == "json":
        print_json(answer)
        return EXIT_OK
    key = "day" if args.by == "day" else "user"
    rows = answer["by_day"] if args.by == "day" else answer["by_user"]
    print(f"usage of jobs that ended {answer['since']} .. {answer['until']} (UTC)")
    print_table([key.upper(), "JOBS", "BY END", "GPU-HOURS", "CPU-HOURS", "IN", "OUT"],
                [_row(r[key], r) for r in rows] + [_row("TOTAL", answer["total"])])
    return EXIT_OK


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3f}" if 0 < seconds < 36 else f"{seconds / 3600:.1f}"


def _row(first: str, u: dict[str, Any]) -> list[str]:
    states = ", ".join(f"{k.lower()} {n}" for k, n in sorted(u["states"].items())) or "-"
    return [first, str(u["jobs"]), states, _hours(u["gpu_seconds"]), _hours(u["cpu_seconds"]),
            human_bytes(u["bytes_in"]), human_bytes(u["bytes_out"])]


def list_pages(api: Api, params: dict[str, Any], limit: int, before: str = "",
               note: Callable[[str], None] = lambda text: print(text, file=sys.stderr)) -> list[dict]:
    """Up to ``limit`` jobs, newest first, older than ``before`` (when given), page after page;
    when more remain, ``note`` says how to list them."""
    jobs: list[dict] = []
    cursor = before
    while len(jobs) < limit:
        page = dict(params, limit=min(PAGE_MAX, limit - len(jobs)), **({"before": cursor} if cursor else {}))
        answer = api.json("GET", "/jobs", params=page)
        jobs += answer.get("jobs") or []
        cursor = answer.get("next") or ""
        if not cursor:
            break
    if cursor:
        note(f"older jobs: pink ls{' --all' if params.get('all') else ''} --before {cursor}")
    return jobs
