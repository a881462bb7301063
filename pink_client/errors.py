"""Exit codes and the exceptions that carry them to ``main``.

0 ok · 1 the job ended badly (with --wait) · 2 usage error · 3 server unreachable / network
or TLS error · 4 not logged in / token refused · 5 the server refused the request.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_NETWORK = 3
EXIT_AUTH = 4
EXIT_REFUSED = 5

#: Gateway answers that mean "the web server behind the load balancer went away": retry.
RETRY_STATUSES = frozenset({502, 504})


class CliError(Exception):
    """A failure to report to the person: ``str(exc)`` is the message, ``code`` the exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class NetworkError(CliError):
    """The server could not be reached or the connection broke. Worth retrying."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_NETWORK, message)


class HttpError(CliError):
    """The server answered with a non-2xx status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(EXIT_AUTH if status == 401 else EXIT_REFUSED, message)
        self.status = status


def is_transient(exc: CliError) -> bool:
    """True for failures that the same request may not meet again (network, gateway)."""
    return isinstance(exc, NetworkError) or (
        isinstance(exc, HttpError) and exc.status in RETRY_STATUSES
    )
