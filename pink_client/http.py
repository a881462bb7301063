"""The HTTP side of the CLI: one ``requests`` session against ``<url>/api/v1`` that turns
every failure (TLS, network, HTTP status) into a :class:`~pink_client.errors.CliError` with
a message a person can act on."""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Sequence
from urllib.parse import quote

import requests
import urllib3.exceptions

from pink import __version__

from .errors import (
    EXIT_AUTH, EXIT_NETWORK, EXIT_REFUSED, EXIT_USAGE, CliError, HttpError, NetworkError,
)
from .settings import API_PREFIX, Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions requests/urllib3 wrapped in it, outermost first."""
    chain = [exc]
    while len(chain) < 8:
        cur = chain[-1]
        nested = getattr(cur, "reason", None)
        if not isinstance(nested, BaseException):
            nested = next((a for a in reversed(cur.args) if isinstance(a, BaseException)), None)
        if nested is None or nested in chain:
            break
        chain.append(nested)
    return chain


def short_reason(exc: BaseException) -> str:
    """The useful part of a requests/urllib3 exception ("Connection refused", ...)."""
    inner = _exception_chain(exc)[-1]
    text = str(inner)
    m = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if m:
        return m.group(1).strip()
    text = re.sub(r"<[^>]+ object at 0x[0-9a-f]+>: ", "", text)
    return text[:300] or type(inner).__name__


def _never_connected(exc: BaseException) -> bool:
    """True when no connection was made at all (refused, no route, unknown host)."""
    return any(
        isinstance(
            e, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
        )
        for e in _exception_chain(exc)
    )


def _error_message(resp: requests.Response) -> str:
    """The server's ``{"error": ...}`` message, or the status line when there is none."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    return f"HTTP {resp.status_code} {resp.reason or ''}".strip()


def job_of(data: dict[str, Any]) -> dict[str, Any]:
    """The job record of an API answer (``{"job": {...}}``)."""
    job = data.get("job")
    if not isinstance(job, dict) or "id" not in job:
        raise CliError(
            EXIT_REFUSED,
            "the server's answer has no job record; is it a PINK server of the same version?",
        )
    return job


class Api:
    """One ``requests`` session against ``<url>/api/v1``, mapping failures to CliErrors."""

    def __init__(self, settings: Settings, *, need_token: bool = True) -> None:
        if not settings.url:
            raise CliError(
                EXIT_AUTH,
                "no PINK server is configured: run `pink login https://SERVER --user NAME` "
                "(or pass --url / set PINK_URL)",
            )
        if need_token and not settings.token:
            raise CliError(
                EXIT_AUTH,
                f"not logged in to {settings.url}: run `pink login {settings.url} --user NAME` "
                "(or set PINK_TOKEN)",
            )
        if settings.ca_cert and not os.path.isfile(settings.ca_cert):
            raise CliError(
                EXIT_USAGE,
                f"CA certificate {settings.ca_cert} does not exist: pass --ca-cert with the "
                "cluster's CA file (or unset PINK_CA_CERT / log in again without it)",
            )
        self.url = settings.url
        self.session = requests.Session()
        # Verification is never switched off: the cluster's CA when given, system CAs otherwise.
        self.verify: str | bool = settings.ca_cert or True
        self.session.headers["User-Agent"] = f"pink-cli/{__version__}"
        if settings.token:
            self.session.headers["Authorization"] = f"Bearer {settings.token}"

    def __enter__(self) -> "Api":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # urllib3 2.x only drops its pools on clear() and closes their sockets when they are
        # garbage collected; a traceback kept from a failed attempt can hold a pool, and with it
        # an open connection, indefinitely. Close them now.
        for adapter in self.session.adapters.values():
            managers = [
                getattr(adapter, "poolmanager", None),
                *getattr(adapter, "proxy_manager", {}).values(),
            ]
            for manager in managers:
                pools = getattr(manager, "pools", None)
                if pools is None:
                    continue
                for key in list(pools.keys()):
                    pool = pools.get(key)
                    if pool is not None:
                        pool.close()
        self.session.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        ok: Sequence[int] = (200, 201, 204),
        timeout: tuple[float, float | None] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        url = self.url + API_PREFIX + path
        log.debug("%s %s", method, url)
        try:
            resp = self.session.request(
                method,
                url,
                timeout=timeout or (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                # A redirect would drop the token (other host) or turn a POST into a GET.
                allow_redirects=False,
                # Per request: set on the session, $REQUESTS_CA_BUNDLE would win over --ca-cert.
                verify=self.verify,
                **kwargs,
            )
        except requests.exceptions.SSLError as exc:
            reason = short_reason(exc)
            hint = (
                " If the cluster uses its own CA, pass --ca-cert FILE (the CA certificate of the"
                " cluster, e.g. ssl/ca.crt) or log in again with it."
                if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate" in reason.lower()
                else ""
            )
            raise CliError(EXIT_NETWORK, f"TLS with {self.url} failed: {reason}.{hint}") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            if _never_connected(exc):
                raise NetworkError(
                    f"cannot reach {self.url}: {short_reason(exc)}. "
                    "Check the URL and that the cluster is up"
                ) from exc
            if isinstance(exc, requests.exceptions.Timeout):
                raise NetworkError(
                    f"{self.url} did not answer in time ({short_reason(exc)}); try again later"
                ) from exc
            raise NetworkError(f"the connection to {self.url} broke: {short_reason(exc)}") from exc
        except requests.exceptions.RequestException as exc:
            raise NetworkError(f"request to {self.url} failed: {short_reason(exc)}") from exc
        log.debug("-> %s", resp.status_code)
        if resp.status_code in ok:
            return resp
        with resp:
            if 300 <= resp.status_code < 400:
                where = resp.headers.get("Location", "?")
                raise HttpError(
                    resp.status_code,
                    f"{self.url} redirects to {where}: "
                    "use that server URL (pink login URL or --url)",
                )
            message = _error_message(resp)
        if resp.status_code == 401:
            raise HttpError(
                401,
                f"the server refused the credentials ({message}): "
                f"run `pink login {self.url} --user NAME` again",
            )
        raise HttpError(
            resp.status_code, f"the server refused the request (HTTP {resp.status_code}): {message}"
        )

    def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        resp = self.send(method, path, **kwargs)
        with resp:
            if resp.status_code == 204:
                return {}
            try:
                data = resp.json()
            except ValueError as exc:
                raise CliError(
                    EXIT_REFUSED,
                    f"{self.url} answered {method} {path} with something that is not JSON: "
                    "is the URL that of a PINK server?",
                ) from exc
        if not isinstance(data, dict):
            raise CliError(
                EXIT_REFUSED, f"{self.url} answered {method} {path} with unexpected JSON"
            )
        return data

    def job(self, job_id: str) -> dict[str, Any]:
        return job_of(self.json("GET", f"/jobs/{quote(job_id, safe='')}"))
