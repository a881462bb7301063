"""``pink notify`` (the account's job-end e-mail setting) and what ``pink status`` shows of
retries and notifications (docs/api.md, "Retries and notifications")."""

from __future__ import annotations

import argparse
from typing import Any

from .errors import EXIT_OK, EXIT_USAGE, CliError
from .http import Api
from .output import format_time, print_json
from .settings import resolve_settings


def cmd_notify(args: argparse.Namespace) -> int:
    """Show the setting, or change it: --email ADDR (with --all: every job), --off."""
    change: dict[str, Any] = {}
    if args.off and (args.email or args.all):
        raise CliError(EXIT_USAGE, "--off turns job-end e-mail off: give it alone")
    if args.off:
        change = {"email": "", "notify_all": False}
    elif args.email is not None:
        change = {"email": args.email, "notify_all": bool(args.all)}
    elif args.all:
        change = {"notify_all": True}
    with Api(resolve_settings(args)) as api:
        me = api.json("PATCH", "/me", json=change) if change else api.json("GET", "/me")
    if args.fmt == "json":
        print_json({k: me.get(k) for k in ("email", "notify_all", "email_enabled")})
        return EXIT_OK
    if not me.get("email_enabled"):
        print("this PINK sends no e-mail (its operator configured no mail relay)")
    if not me.get("email"):
        print("job-end e-mail: off")
    elif me.get("notify_all"):
        print(f"job-end e-mail to {me['email']}: for every job")
    else:
        print(f"job-end e-mail to {me['email']}: for jobs submitted with --notify")
    return EXIT_OK


def status_rows(job: dict[str, Any]) -> list[tuple[str, Any]]:
    """`pink status` rows: the retry chain and the notifications of a job."""
    retries = job.get("retry_lost")
    notified = job.get("notified_at")
    wants = [w for w, on in (("e-mail", job.get("notify")), (job.get("webhook"), job.get("webhook"))) if on]
    return [
        ("retry of", job.get("retry_of")),
        ("retried as", job.get("retried_by")),
        ("retries if LOST", retries or None),
        ("retry", job.get("retry_note") if not job.get("retried_by") else None),
        ("notify", ", ".join(wants) or None),
        ("notified", format_time(notified) if notified else None),
        ("notify note", job.get("notify_note")),
    ]
