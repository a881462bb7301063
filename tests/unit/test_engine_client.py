"""The worker's engine client (gpu_worker.engine) keeps its connections to a unix-socket engine
alive across calls to different paths; docker-py's own opens one per path. Against a small
HTTP server on a real unix socket that counts the connections it accepts."""

from __future__ import annotations

import contextlib
import http.server
import json
import socketserver
import struct
import threading

import docker
import pytest

from gpu_worker.engine import engine_client


class _Engine(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as dockerd
    connections = 0
    paths: list[str] = []

    def setup(self) -> None:
        type(self).connections += 1
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        type(self).paths.append(path)
        if path.endswith("/logs"):  # one stdout frame, as the engine multiplexes a log without a TTY
            body, kind = b"\x01\0\0\0" + struct.pack(">I", 6) + b"hello\n", "application/vnd.docker.raw-stream"
        else:
            body = json.dumps({"Id": path.split("/")[3], "Config": {"Tty": False}}).encode()
            kind = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
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
    _Engine.connections, _Engine.paths = 0, []
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


def test_logs_are_asked_for_without_inspecting_the_container_first(engine_url):
    with contextlib.closing(engine_client(engine_url, timeout=10, max_pool_size=4)) as client:
        assert client.api.logs("c1") == b"hello\n"
    assert _Engine.paths == ["/v1.41/containers/c1/logs"]
    with contextlib.closing(docker.DockerClient(base_url=engine_url, version="1.41")) as client:
        assert client.api.logs("c1") == b"hello\n"
    assert _Engine.paths[1:] == ["/v1.41/containers/c1/logs", "/v1.41/containers/c1/json"]  # docker-py asks after
