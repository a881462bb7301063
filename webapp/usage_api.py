"""Usage: ``GET /api/v1/usage`` and the admin page ``/usage`` (rollups of pink.store_usage).

Users see their own usage; admins anyone's (``user=NAME``) or everyone's (no ``user``).
"""

from __future__ import annotations

import datetime
import time

from flask import Blueprint, g, jsonify, request

from pink.model import day_of, parse_day
from pink.store_usage import Usage

from .auth import login_required, store
from .errors import error_response

bp = Blueprint("usage", __name__)

#: The default window of a usage query: the last 30 days, today included.
DEFAULT_DAYS = 30
#: The longest window one query may read (days).
MAX_DAYS = 3660


def usage_answer(rows: list[Usage], since: str, until: str) -> dict:
    """Rows by day and user, sums per user and per day, and the total."""
    by_user: dict[str, Usage] = {}
    by_day: dict[str, Usage] = {}
    total = Usage()
    for row in rows:
        by_user[row.user] = by_user.get(row.user, Usage(user=row.user)) + row
        by_day[row.day] = by_day.get(row.day, Usage(day=row.day)) + row
        total = total + row
    return {"since": since, "until": until,
            "rows": [r.as_dict() for r in sorted(rows, key=lambda r: (r.day, r.user))],
            "by_user": [by_user[u].as_dict() for u in sorted(by_user)],
            "by_day": [by_day[d].as_dict() for d in sorted(by_day)],
            "total": total.as_dict()}


@bp.get("/api/v1/usage")
@login_required
def usage():
    now = time.time()
    try:
        since = parse_day(request.args.get("since") or day_of(now - (DEFAULT_DAYS - 1) * 86400))
        until = parse_day(request.args.get("until") or day_of(now))
    except ValueError as exc:
        return error_response(400, str(exc))
    if since > until:
        return error_response(400, f"since ({since}) is after until ({until})")
    if (datetime.date.fromisoformat(until) - datetime.date.fromisoformat(since)).days > MAX_DAYS:
        return error_response(400, f"ask for at most {MAX_DAYS} days at once")
    user = request.args.get("user", "")
    if not g.user.admin:
        if user and user != g.user.name:
            return error_response(403, "only admins can see other users' usage")
        user = g.user.name
    return jsonify(usage_answer(store().usage(since, until, user), since, until))
