"""The worker's engine client (gpu_worker.engine) keeps its connections to a unix-socket engine
alive across calls to different paths; docker-py's own opens one per path. Against a small
HTTP server on a real unix socket that counts the connections it accepts."""

from __future__ import annotations

import contextlib
import http.server
import json
import socketserver
import threading

import docker
import pytest

from gpu_worker.engine import engine_client


class _Engine(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as dockerd
    connections = 0

    def setup(self) -> None:
        type(self).connections += 1
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"Id": self.path.split("/")[3]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args) -> None:  # noqa: ANN002 - quiet
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def engine_url(tmp_path):
    _Engine.connections = 0
    server = _Server(str(tmp_path / "docker.sock"), _Engine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"unix://{tmp_path / 'docker.sock'}"
    server.shutdown()
    server.server_close()


def calls(client: docker.DockerClient) -> None:
    for i in range(30):
        assert client.api.inspect_container(f"c{i}")["Id"] == f"c{i}"
        client.api.start(f"c{i}")


def test_calls_to_many_containers_share_a_few_kept_connections(engine_url):
    with contextlib.closing(engine_client(engine_url, timeout=10, max_pool_size=4)) as client:
        calls(client)
    assert _Engine.connections <= 2


def test_docker_py_alone_connects_for_nearly_every_call(engine_url):
    """Why gpu_worker.engine exists: if docker-py pooled per socket, this test would fail and the
    subclass could go."""
    with contextlib.closing(docker.DockerClient(base_url=engine_url, version="1.41")) as client:
        calls(client)
    assert _Engine.connections >= 50
