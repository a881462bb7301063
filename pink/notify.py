"""Job-end notifications: which webhook URLs the operator allows, what a notification says, and
how it is sent (an e-mail through the operator's SMTP relay, a JSON POST to a webhook).

Who sends them, when, and how often is pink.reactions (the outbox) and webapp.reactor (the
loop on every web server); this module only checks and sends.
"""

from __future__ import annotations

import smtplib
import ssl
import urllib.parse
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import requests

from .config import NotifyConfig
from .model import Job, User

#: What a job-end e-mail or webhook says happened (the payload's "event").
EVENT = "job.ended"
#: Request header carrying the delivery id: one job-end notification per job, so the id is the
#: job's id. Delivery is at least once: a receiver drops a delivery id it has already seen.
DELIVERY_HEADER = "Pink-Delivery"
_DEFAULT_PORTS = {"http": 80, "https": 443}


class NotifyError(Exception):
    """One attempt to send failed (the relay or the receiver refused, or was unreachable)."""


def _parts(url: str) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, path) of an http(s) URL that names no user, or None."""
    if "\\" in url or any(c.isspace() or ord(c) < 32 for c in url):
        return None
    try:
        split = urllib.parse.urlsplit(url)
        port = split.port
    except ValueError:
        return None
    scheme = split.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not split.hostname or "@" in split.netloc:
        return None
    segments = [urllib.parse.unquote(s) for s in split.path.split("/")]
    if any(s in (".", "..") for s in segments):
        return None
    return scheme, split.hostname.lower(), port or _DEFAULT_PORTS[scheme], split.path or "/"


def webhook_allowed(url: str, allow: tuple[str, ...] | list[str]) -> bool:
    """Whether ``url`` is on the allow-list: an entry is a URL prefix (same scheme, host and
    port; the path equal or below the entry's, by whole segments) or a host name, optionally
    with ``:port`` (https on that host, port 443 unless given). A URL with a user name or
    password, another scheme, or ``.``/``..`` path segments is never allowed."""
    got = _parts(url)
    if got is None:
        return False
    for entry in allow:
        if "://" not in entry:
            want = _parts(f"https://{entry}/")
            if want is not None and got[:3] == want[:3]:
                return True
            continue
        want = _parts(entry)
        if want is None or got[:3] != want[:3]:
            continue
        base = want[3].rstrip("/")
        if not base or got[3] == base or got[3].startswith(base + "/"):
            return True
    return False


def check_request(cfg: NotifyConfig, user: User, notify: bool, webhook: str) -> str:
    """Why a submission's notify/webhook cannot be honoured ("" when it can)."""
    if webhook and not webhook_allowed(webhook, cfg.webhook_allow):
        if not cfg.webhook_allow:
            return "this PINK takes no webhooks (the operator allows none: notify.webhook_allow)"
        return (f"webhook {webhook} is not on the operator's allow-list (notify.webhook_allow: "
                f"{', '.join(cfg.webhook_allow)})")
    if notify and not cfg.email_enabled:
        return "this PINK sends no e-mail (the operator set no notify.smtp_host/smtp_from)"
    if notify and not user.email:
        return "set your e-mail address first (pink notify --email ADDR, or your account page)"
    return ""


def links(cfg: NotifyConfig, job: Job) -> dict[str, str]:
    base = cfg.base_url.rstrip("/")
    return {"page": f"{base}/jobs/{job.id}", "api": f"{base}/api/v1/jobs/{job.id}",
            "logs": f"{base}/api/v1/jobs/{job.id}/logs", "output": f"{base}/api/v1/jobs/{job.id}/output"}


def payload(cfg: NotifyConfig, job: Job) -> dict[str, Any]:
    """The JSON a webhook receives (docs/api.md, "Notifications")."""
    return {
        "event": EVENT, "delivery": job.id,
        "job": {"id": job.id, "name": job.name, "user": job.user, "state": job.state.value,
                "reason": job.reason, "exit_code": job.exit_code, "worker": job.worker,
                "created_at": job.created_at, "finished_at": job.finished_at or job.updated_at,
                "retry_of": job.retry_of or None, "retried_by": job.retried_by or None},
        "links": links(cfg, job),
    }


def post_webhook(cfg: NotifyConfig, url: str, body: dict[str, Any]) -> None:
    """One POST; redirects are not followed (a 3xx is a failure), nor is anything but 2xx a
    success. Raises NotifyError."""
    try:
        answer = requests.post(url, json=body, timeout=cfg.timeout_s, allow_redirects=False,
                               headers={DELIVERY_HEADER: body["delivery"], "User-Agent": "pink-notify"})
    except requests.RequestException as exc:
        raise NotifyError(f"webhook {url}: {type(exc).__name__}: {exc}") from None
    if not 200 <= answer.status_code < 300:
        raise NotifyError(f"webhook {url} answered {answer.status_code}"
                          + (" (redirects are not followed)" if 300 <= answer.status_code < 400 else ""))


def message(cfg: NotifyConfig, job: Job, to: str) -> EmailMessage:
    msg = EmailMessage()
    title = f"{job.name} ({job.id})" if job.name else job.id
    msg["Subject"] = f"[PINK] job {title} {job.state.value}"
    msg["From"] = cfg.smtp_from
    msg["To"] = to
    msg["Message-ID"] = make_msgid(idstring=f"pink-{job.id}")
    msg[DELIVERY_HEADER] = job.id
    lines = [f"Job {title} of {job.user} ended {job.state.value} on worker {job.worker}."]
    if job.exit_code is not None:
        lines.append(f"Exit code: {job.exit_code}")
    if job.reason:
        lines.append(f"Reason: {job.reason}")
    if job.retried_by:
        lines.append(f"Retried as job {job.retried_by}.")
    if job.retry_of:
        lines.append(f"It was a retry of job {job.retry_of}.")
    lines += ["", *(f"{k}: {v}" for k, v in links(cfg, job).items())]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def send_email(cfg: NotifyConfig, job: Job, to: str) -> None:
    """One SMTP session with the operator's relay. Raises NotifyError."""
    try:
        with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout_s) as smtp:
            if cfg.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if cfg.smtp_user:
                smtp.login(cfg.smtp_user, cfg.smtp_password)
            smtp.send_message(message(cfg, job, to))
    except (OSError, smtplib.SMTPException) as exc:
        raise NotifyError(f"e-mail to {to} via {cfg.smtp_host}:{cfg.smtp_port}: {exc}") from None
