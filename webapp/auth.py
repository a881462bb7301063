"""Who is calling: bearer tokens (CLI) or the browser session, checked once per request.

Browser sessions are Flask's signed cookie, HttpOnly, SameSite=Lax and Secure whenever the
request came over HTTPS (nginx says so through X-Forwarded-Proto). A session names the user
and a fingerprint of their password hash, so changing the password ends every other browser
session. Every state-changing request that the session cookie authenticates must carry the
session's CSRF token (header ``X-CSRF-Token``; form field ``csrf_token`` for plain HTML forms);
bearer-token requests are exempt because browsers never attach those by themselves.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
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


def password_fingerprint(user: User) -> str:
    """Changes whenever the password does; kept in the session to end old sessions."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def current_user() -> User | None:
    if "user" in g:
        return g.user
    user = None
    secret = _bearer()
    if secret is not None:
        token = store().token(secret)
        if token is not None:
            user = store().get_user(token.user)
    elif session.get("user"):
        user = store().get_user(session["user"])
        if user is not None and session.get("pwfp") != password_fingerprint(user):
            user = None  # the password changed since this session logged in
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
    """Start a fresh session for ``user`` (a new CSRF token too: no fixation)."""
    session.clear()
    session.permanent = True
    session["user"] = user.name
    session["pwfp"] = password_fingerprint(user)
    csrf_token()
    g.user = user


def refresh_session(user: User) -> None:
    """Keep the caller's own session valid after they changed their password."""
    if session.get("user") == user.name:
        session["pwfp"] = password_fingerprint(user)


def logout_session() -> None:
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
    if app.config["PERMANENT_SESSION_LIFETIME"] == datetime.timedelta(days=31):  # Flask's default
        app.config["PERMANENT_SESSION_LIFETIME"] = datetime.timedelta(hours=12)
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.session_interface = _SessionInterface()
    app.before_request(_check_csrf)
