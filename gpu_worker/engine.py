"""The worker's Docker engine client: docker-py's, with its per-call costs taken away.

docker-py (7.x) keys its connection pools for a unix socket by the whole request URL
(``/containers/<id>/start``, ``.../wait``, ``.../logs``, ...), so a call to a path it has not
seen lately opens a new socket connection, and a full set of pools closes another pool's: nearly
every call of every job connected anew (60 calls, 60 connections, in the unit test). One pool
for the one socket keeps connections alive between calls. ``trust_env`` off: requests would
look for ``~/.netrc`` and proxy settings on every call, for an engine reached without either.
And ``logs()`` inspects the container first, to learn whether it has a TTY: PINK creates every
container without one, so that round trip is left out.
"""

from __future__ import annotations

import docker
from docker.transport import UnixHTTPAdapter

#: The engine's API version: Docker 20.10's, which has device requests. Fixed instead of asked
#: for at start: a worker must start, and wait, while its engine is restarting.
API_VERSION = "1.41"


class SocketPool(UnixHTTPAdapter):
    """A unix-socket adapter with one connection pool for all paths."""

    def get_connection(self, url, proxies=None):  # noqa: ANN001, ANN201 - requests' signature
        return super().get_connection("http+docker://localhost", proxies)


class EngineAPI(docker.APIClient):
    def _check_is_tty(self, container) -> bool:  # noqa: ANN001 - docker-py's signature
        return False  # gpu_worker.container never asks for a TTY


class Engine(docker.DockerClient):
    def __init__(self, **kwargs) -> None:  # noqa: ANN003 - docker.APIClient's keywords
        self.api = EngineAPI(**kwargs)


def engine_client(url: str, timeout: int, max_pool_size: int) -> docker.DockerClient:
    client = Engine(base_url=url, version=API_VERSION, timeout=timeout, max_pool_size=max_pool_size)
    api = client.api
    api.trust_env = False
    if isinstance(api._custom_adapter, UnixHTTPAdapter):
        per_url = api._custom_adapter
        api._custom_adapter = SocketPool("http+unix://" + per_url.socket_path, per_url.timeout,
                                         max_pool_size=max_pool_size)
        api.mount("http+docker://", api._custom_adapter)
        per_url.close()
    return client
