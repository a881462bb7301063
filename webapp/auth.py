"""Who is calling: bearer tokens (CLI) or the browser session, checked once per request."""

from __future__ import annotations

import functools
from typing import Callable

from flask import abort, current_app, g, request, session

from pink.model import User
from pink.store import Store


def store() -> Store:
    return current_app.extensions["pink.store"]


def current_user() -> User | None:
    if "user" in g:
        return g.user
    user = None
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        token = store().token(header[7:].strip())
        if token is not None:
            user = store().get_user(token.user)
    elif session.get("user"):
        user = store().get_user(session["user"])
    g.user = user
    return user


def login_required(view: Callable) -> Callable:
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if current_user() is None:
            abort(401, "log in first: `pink login URL --user NAME`, or send a valid bearer token")
        return view(*args, **kwargs)

    return wrapped


def admin_required(view: Callable) -> Callable:
    @functools.wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not g.user.admin:
            abort(403, "this needs an admin account")
        return view(*args, **kwargs)

    return wrapped
