"""Users, password hashing and API tokens (for the web servers and ``pink-admin``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time

from pink.model import USER_NAME, Token, User
from pink.store import Store

#: An e-mail address for job-end notifications: one @, no spaces, quotes, commas or angle
#: brackets (nothing that could add a recipient or a header), a dotted domain.
EMAIL = re.compile(r"^(?=.{3,254}$)[^@\s<>,;:\"'()\[\]\\]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")

_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def check_new_password(password: str) -> None:
    if len(password) < 8:
        raise ValueError("passwords need at least 8 characters")


def create_user(store: Store, name: str, password: str, admin: bool = False) -> User:
    if not USER_NAME.fullmatch(name):
        raise ValueError(f"bad user name {name!r}: use lowercase letters, digits, '_', '.', '-'")
    check_new_password(password)
    user = User(name=name, password_hash=hash_password(password), admin=admin, created_at=time.time())
    if not store.create_user(user):
        raise ValueError(f"user {name!r} already exists")
    return user


#: Checked against when the user does not exist: one scrypt, as for a real user, so the time an
#: answer takes does not tell which names exist.
_NOBODY = hash_password(secrets.token_hex(16))


def authenticate(store: Store, name: str, password: str) -> User | None:
    user = store.get_user(name) if USER_NAME.fullmatch(name or "") else None
    if user is None or user.disabled:
        verify_password(password, _NOBODY)
        return None
    return user if verify_password(password, user.password_hash) else None


def issue_token(store: Store, user: str, name: str = "", days: float = 90.0) -> tuple[str, Token]:
    """Create a bearer token that works for ``days``; the secret is returned once and only its
    hash is stored."""
    secret = "pink_" + secrets.token_urlsafe(32)
    now = time.time()
    token = Token(id=secrets.token_hex(6), user=user, name=name[:100], created_at=now,
                  expires_at=now + days * 86400)
    store.create_token(secret, token)
    return secret, token


def token_days(requested: object, default: float, maximum: float) -> float:
    """The life of a new token: ``requested`` days (a number), else ``default``; ValueError
    naming the limit when it is not a number in (0, maximum]."""
    if requested is None:
        return default
    if isinstance(requested, bool) or not isinstance(requested, (int, float)) or not 0 < requested <= maximum:
        raise ValueError(f"days must be a number of days, more than 0 and at most {maximum:g}")
    return float(requested)
