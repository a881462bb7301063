"""Who is calling: bearer tokens (CLI) or the browser session, checked once per request.

Browser sessions are Flask's signed cookie, HttpOnly, SameSite=Lax and Secure whenever the
request came over HTTPS (nginx says so through X-Forwarded-Proto). The cookie carries a random
session id that etcd must still know (on a lease of ``web.session_hours``): logout, a password
change, disabling or deleting the user end it on every web server, and a copied cookie dies
with it. Bearer tokens expire (``web.token_days``) and can be revoked. Every state-changing request that the session cookie authenticates must carry the
session's CSRF token (header ``X-CSRF-Token``; form field ``csrf_token`` for plain HTML forms);
bearer-token requests are exempt because browsers never attach those by themselves.
"""

from __future__ import annotations

import datetime
import functools
import hmac
import secrets
import time
from typing import Callable

from flask import Flask, abort, current_app, g, has_request_context, request, session
from flask.sessions import SecureCookieSessionInterface

from pink.errors import PinkError
from pink.model import User
from pink.store import Store

from . import accounts

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def store() -> Store:
    return current_app.extensions["pink.store"]


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.startswith("Bearer ") else None


class LoginThrottled(PinkError):
    """Too many failed logins for this user name or from this address (answered 429)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed logins for this user or from this address; try again in "
                         f"{retry_after_s} s")
        self.retry_after_s = retry_after_s


def authenticate(name: str, password: str) -> User | None:
    """The user if ``password`` is theirs. Failures are counted per user name and per client
    address (in etcd, so every web server sees them); past ``web.login_failures_per_user`` /
    ``_per_address`` within ``web.login_window_s``, :class:`LoginThrottled` until the window ends."""
    cfg = current_app.extensions["pink.config"].web
    now = time.time()
    subjects = ((f"user:{name}", cfg.login_failures_per_user),
                (f"address:{request.remote_addr}", cfg.login_failures_per_address))
    for subject, limit in subjects:
        count, since = store().login_failures(subject)
        if count >= limit:
            raise LoginThrottled(max(1, round(since + cfg.login_window_s - now)))
    user = accounts.authenticate(store(), name, password)
    if user is None:
        for subject, _ in subjects:
            store().note_login_failure(subject, cfg.login_window_s, now)
    else:
        store().clear_login_failures(subjects[0][0])
    return user


def current_user() -> User | None:
    if "user" in g:
        return g.user
    user = None
    secret = _bearer()
    if secret is not None:
        token = store().token(secret)
        if token is not None and (not token.expires_at or token.expires_at > time.time()):
            user = store().get_user(token.user)
    elif session.get("sid"):
        # The session lives in etcd: logout, a password change or an admin ends it everywhere.
        name = store().session_user(session["sid"])
        user = store().get_user(name) if name is not None and name == session.get("user") else None
    if user is not None and user.disabled:
        user = None
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


# ----- browser sessions ---------------------------------------------------------------------


def csrf_token() -> str:
    """The session's CSRF token (made on first use, also for the anonymous login form)."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_ok(sent: str | None) -> bool:
    expected = session.get("csrf")
    return bool(expected and sent) and hmac.compare_digest(str(expected), str(sent))


def login_session(user: User) -> None:
    """Start a fresh session for ``user`` (a new id and CSRF token: no fixation), recorded in
    etcd for ``web.session_hours``."""
    session.clear()
    session.permanent = True
    session["sid"] = secrets.token_urlsafe(32)
    session["user"] = user.name
    hours = current_app.extensions["pink.config"].web.session_hours
    store().create_session(session["sid"], user.name, int(hours * 3600))
    csrf_token()
    g.user = user


def current_session() -> str:
    """The caller's browser session id ("" for token requests)."""
    return session.get("sid", "") if _bearer() is None else ""


def logout_session() -> None:
    if session.get("sid"):
        store().end_session(session["sid"])
    session.clear()
    g.user = None


def _check_csrf():
    if request.method in SAFE_METHODS or _bearer() is not None or not session.get("user"):
        return None  # not authenticated by the session cookie: nothing a forged request gains
    sent = request.headers.get("X-CSRF-Token")
    # Only plain HTML forms send the field; never parse other bodies (uploads stream).
    if sent is None and request.mimetype == "application/x-www-form-urlencoded":
        sent = request.form.get("csrf_token")
    if not csrf_ok(sent):
        abort(403, "missing or wrong CSRF token: reload the page and try again")
    return None


class _SessionInterface(SecureCookieSessionInterface):
    def get_cookie_secure(self, app: Flask) -> bool:
        # Secure whenever the browser reached us over HTTPS (nginx), so that a plain-HTTP
        # development server still works.
        return bool(app.config["SESSION_COOKIE_SECURE"]) or (has_request_context() and request.is_secure)


def init_app(app: Flask) -> None:
    if app.config["SESSION_COOKIE_NAME"] == "session":  # Flask's default: name it ours
        app.config["SESSION_COOKIE_NAME"] = "pink_session"
    hours = app.extensions["pink.config"].web.session_hours
    app.config["PERMANENT_SESSION_LIFETIME"] = datetime.timedelta(hours=hours)
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.session_interface = _SessionInterface()
    app.before_request(_check_csrf)
