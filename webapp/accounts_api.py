"""The accounts part of the JSON API, ``/api/v1``: tokens, the caller's own account, and the
users an admin manages (contract: docs/api.md)."""

from __future__ import annotations

import dataclasses

from flask import Blueprint, abort, current_app, g, jsonify, request

from pink.model import USER_NAME, Token, User

from . import accounts
from .auth import admin_required, authenticate, current_session, login_required, store

bp = Blueprint("accounts_api", __name__, url_prefix="/api/v1")


def _body() -> dict:
    """The request's JSON object ({} when there is none); 400 for JSON of another shape."""
    data = request.get_json(silent=True)
    if data is None:
        return {}
    if not isinstance(data, dict):
        abort(400, "send a JSON object")
    return data


def _token_json(token: Token) -> dict:
    return {"id": token.id, "name": token.name, "created_at": token.created_at,
            "expires_at": token.expires_at or None}


def _user_json(user: User) -> dict:
    return {"name": user.name, "admin": user.admin, "created_at": user.created_at, "disabled": user.disabled}


def _user(name: str) -> User:
    user = store().get_user(name) if USER_NAME.fullmatch(name) else None
    if user is None:
        abort(404, f"no user {name}")
    return user


# ----- tokens ---------------------------------------------------------------------------------
@bp.post("/tokens")
def create_token():
    data = _body()
    cfg = current_app.extensions["pink.config"].web
    try:
        days = accounts.token_days(data.get("days"), cfg.token_days, cfg.token_max_days)
    except ValueError as exc:
        abort(400, str(exc))
    user = authenticate(str(data.get("username", "")), str(data.get("password", "")))
    if user is None:
        abort(401, "wrong user name or password")
    secret, token = accounts.issue_token(store(), user.name, str(data.get("name", "")), days)
    return jsonify(token=secret, id=token.id, user=user.name, expires_at=token.expires_at), 201


@bp.get("/tokens")
@login_required
def list_tokens():
    return jsonify(tokens=[_token_json(t) for _, t in store().tokens(g.user.name)])


@bp.delete("/tokens/<token_id>")
@login_required
def revoke_token(token_id: str):
    if not store().revoke_token(g.user.name, token_id):
        abort(404, f"no token {token_id}")
    return "", 204


# ----- the caller's own account ----------------------------------------------------------------
def _me_json(user: User) -> dict:
    email_enabled = current_app.extensions["pink.config"].notify.email_enabled
    return {"user": user.name, "admin": user.admin, "email": user.email, "notify_all": user.notify_all,
            "email_enabled": email_enabled}


@bp.get("/me")
@login_required
def me():
    return jsonify(_me_json(g.user))


@bp.patch("/me")
@login_required
def update_me():
    """Job-end e-mail: ``{"email": "ADDR"}`` ("" removes it), ``{"notify_all": true}`` mails
    the end of every job (else only jobs submitted with notify=1)."""
    data = _body()
    unknown = sorted(set(data) - {"email", "notify_all"})
    if unknown or not data:
        abort(400, 'send {"email": "ADDR"} and/or {"notify_all": true|false}')
    email = data.get("email", g.user.email)
    notify_all = data.get("notify_all", g.user.notify_all)
    if not isinstance(email, str) or (email and not accounts.EMAIL.fullmatch(email)):
        abort(400, f"{email!r} is not an e-mail address (name@domain, at most 254 characters)")
    if not isinstance(notify_all, bool):
        abort(400, "notify_all must be true or false")
    if notify_all and not email:
        abort(400, "set an e-mail address to be told of every job's end")
    if email and not current_app.extensions["pink.config"].notify.email_enabled:
        abort(409, "this PINK sends no e-mail (the operator set no notify.smtp_host/smtp_from)")
    user = store().get_user(g.user.name) or g.user
    user = dataclasses.replace(user, email=email, notify_all=notify_all)
    store().put_user(user)
    return jsonify(_me_json(user))


@bp.post("/me/password")
@login_required
def change_password():
    """Other browser sessions of the user end; with ``revoke_tokens``, their API tokens too."""
    data = _body()
    if not accounts.verify_password(str(data.get("old_password", "")), g.user.password_hash):
        abort(403, "the current password is wrong")
    new = str(data.get("new_password", ""))
    try:
        accounts.check_new_password(new)
    except ValueError as exc:
        abort(400, str(exc))
    store().put_user(dataclasses.replace(g.user, password_hash=accounts.hash_password(new)))
    ended = store().end_sessions(g.user.name, keep=current_session())
    revoked = store().revoke_tokens(g.user.name) if data.get("revoke_tokens") is True else 0
    return jsonify(sessions_ended=ended, tokens_revoked=revoked)


# ----- users, for admins ------------------------------------------------------------------------
@bp.get("/users")
@admin_required
def list_users():
    return jsonify(users=[_user_json(u) for u in sorted(store().users(), key=lambda u: u.name)])


@bp.post("/users")
@admin_required
def create_user():
    data = _body()
    name = str(data.get("username", ""))
    if not USER_NAME.fullmatch(name):
        abort(400, f"bad user name {name!r}: use lowercase letters, digits, '_', '.', '-' (at most 32)")
    if store().get_user(name) is not None:
        abort(409, f"user {name!r} already exists")
    try:
        user = accounts.create_user(store(), name, str(data.get("password", "")), admin=bool(data.get("admin")))
    except ValueError as exc:
        abort(409 if "already exists" in str(exc) else 400, str(exc))
    return jsonify(user=_user_json(user)), 201


@bp.patch("/users/<name>")
@admin_required
def update_user(name: str):
    """``{"disabled": true}`` locks a user out at once (sessions end, tokens stop working);
    ``false`` lets them back in."""
    user = _user(name)
    disabled = _body().get("disabled")
    if not isinstance(disabled, bool):
        abort(400, 'send {"disabled": true} or {"disabled": false}')
    if name == g.user.name:
        abort(409, "you cannot disable your own account")
    store().put_user(dataclasses.replace(user, disabled=disabled))
    if disabled:
        store().end_sessions(name)
    return jsonify(user=_user_json(store().get_user(name)))


@bp.delete("/users/<name>")
@admin_required
def delete_user(name: str):
    """The user, their tokens and sessions go; their jobs stay, as history."""
    _user(name)
    if name == g.user.name:
        abort(409, "you cannot delete your own account")
    store().delete_user(name)
    return "", 204


@bp.get("/users/<name>/tokens")
@admin_required
def user_tokens(name: str):
    _user(name)
    return jsonify(tokens=[_token_json(t) for _, t in store().tokens(name)])


@bp.delete("/users/<name>/tokens/<token_id>")
@admin_required
def revoke_user_token(name: str, token_id: str):
    _user(name)
    if not store().revoke_token(name, token_id):
        abort(404, f"no token {token_id} of user {name}")
    return "", 204
