"""The browser UI: HTML pages whose scripts use the same JSON API as the CLI.

The server renders only page shells (navigation, forms, the CSRF token); each page's script
fetches ``/api/v1/...`` with the session cookie, so there is no second path through the job
logic. Logging in and out are plain HTML forms, so they work without JavaScript too.
"""

from __future__ import annotations

import functools
import re
from typing import Callable
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from pink.model import JOB_ID

from .auth import LoginThrottled, authenticate, csrf_ok, csrf_token, current_user, login_session, logout_session
from .errors import http_error_response

bp = Blueprint("ui", __name__)

#: Pages are shells + scripts from /static; nothing inline, nothing from elsewhere.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")


#: A path on this site: no scheme or host, no '//evil' or '/\\evil', and no whitespace or
#: control characters (browsers drop tabs and newlines, so '/\t/evil' would become '//evil').
_LOCAL_PATH = re.compile(r"/(?![/\\])[^\x00-\x20\x7f\\]*")


def _safe_next(target: str | None) -> str:
    if not target or not _LOCAL_PATH.fullmatch(target) or urlsplit(target).netloc:
        return url_for("ui.jobs")
    return target


def page(view: Callable) -> Callable:
    """A page for logged-in users; others are sent to the login form and back."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if current_user() is None:
            return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped


def render(template: str, status: int = 200, **context):
    cfg = current_app.extensions["pink.config"].web
    context.setdefault("max_upload_bytes", min(cfg.max_upload_bytes, cfg.quota_upload_bytes))
    return render_template(template, user=g.get("user"), csrf=csrf_token(), **context), status


@bp.after_app_request
def _security_headers(response):
    if not request.path.startswith("/api/"):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


@bp.get("/")
def home():
    return redirect(url_for("ui.jobs"))


@bp.route("/login", methods=["GET", "POST"])
def login():
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if current_user() is not None:
            return redirect(target)
        return render("login.html", next=target)
    name = request.form.get("username", "").strip()
    if not csrf_ok(request.form.get("csrf_token")):
        return render("login.html", 400, next=target, username=name,
                      error="This login form has expired. Please try again.")
    try:
        user = authenticate(name, request.form.get("password", ""))
    except LoginThrottled as exc:
        body, status = render("login.html", 429, next=target, username=name, error=f"Too many failed logins: {exc}.")
        return body, status, {"Retry-After": str(exc.retry_after_s)}
    if user is None:
        return render("login.html", 401, next=target, username=name, error="Wrong user name or password.")
    login_session(user)
    return redirect(target)


@bp.post("/logout")
def logout():
    # The app-wide check has already refused a logged-in session without the CSRF token.
    logout_session()
    return redirect(url_for("ui.login"))


@bp.get("/jobs")
@page
def jobs():
    return render("jobs.html", nav="jobs")


@bp.get("/jobs/<job_id>")
@page
def job(job_id: str):
    if not JOB_ID.match(job_id):
        return render("error.html", 404, message=f"There is no job {job_id}.")
    return render("job.html", nav="jobs", job_id=job_id)


@bp.get("/arrays/<array_id>")
@page
def array(array_id: str):
    if not JOB_ID.match(array_id):
        return render("error.html", 404, message=f"There is no array {array_id}.")
    return render("array.html", nav="jobs", array_id=array_id)


@bp.get("/submit")
@page
def submit():
    cfg = current_app.extensions["pink.config"].web
    return render("submit.html", nav="submit", max_input_bytes=cfg.quota_input_bytes)


@bp.get("/workers")
@page
def workers():
    return render("workers.html", nav="workers")


@bp.get("/account")
@page
def account():
    return render("account.html", nav="account")


@bp.get("/users")
@page
def users():
    if not g.user.admin:
        return render("error.html", 403, message="Only admins can manage users.")
    return render("users.html", nav="users")


@bp.get("/usage")
@page
def usage():
    if not g.user.admin:
        return render("error.html", 403, message="Only admins can see the usage page; use `pink usage` for your own.")
    return render("usage.html", nav="usage")


def _error_page(exc: HTTPException):
    """JSON for the API (as errors.py does), a page for people everywhere else."""
    if request.path.startswith("/api/"):
        return http_error_response(exc)
    current_user()
    messages = {404: "There is no such page.", 405: "That does not work here.",
                403: exc.description or "You may not do that."}
    body, status = render("error.html", exc.code or 500, message=messages.get(exc.code or 500, exc.name))
    # Allow of a 405 (RFC 9110: it names the methods the resource has), as the API's answer.
    return body, status, {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}


for _code in (403, 404, 405):
    bp.app_errorhandler(_code)(_error_page)
