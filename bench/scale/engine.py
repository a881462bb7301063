"""A stand-in for the Docker Engine API: one process serving one unix socket per worker.

It answers only what PINK's worker daemon (gpu_worker) and the docker CLI's ``export`` ask,
so the worker's own code path is the deployed one; nothing runs: a "container" exits 0
``--run-s`` seconds after its start (or after the file ``hold`` in its folder is removed,
if that is later), having printed one line, and exports a tar of one small file. The engine
holds one image (``IMAGE_ID``) and loads none, so jobs are submitted as held images (0 bytes
sent). What the scale bench measures with it is PINK's control plane
(etcd, web servers, worker daemons), not Docker.

    python -m bench.scale.engine --dir SOCKETS --engines N --run-s 1.0
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import re
import secrets
import select
import signal
import socket
import socketserver
import struct
import tarfile
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

#: The one image every stand-in engine holds: the id of an (imaginary) image config.
IMAGE_ID = "sha256:" + hashlib.sha256(b"pink scale bench image").hexdigest()
LAYER = "sha256:" + hashlib.sha256(b"pink scale bench layer").hexdigest()
NEVER = "0001-01-01T00:00:00Z"
API_PATH = re.compile(r"^/v1\.\d+(/.*)$")


def docker_time(t: float) -> str:
    """UNIX seconds as Docker's RFC 3339 nanosecond timestamp."""
    whole = datetime.fromtimestamp(int(t), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{int((t % 1) * 1e9):09d}Z"


def _small_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"done\n"
        info = tarfile.TarInfo("result.txt")
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


EXPORT = _small_tar()


class Hold:
    """While the file exists, no container ends: the bench fills the queues, then lets go."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.released_at = 0.0 if path.exists() else time.time()
        self._checked = 0.0

    def release_time(self) -> float | None:
        """When the hold last ended (None: it holds now; the file may come back)."""
        now = time.monotonic()
        if now - self._checked > 0.1:
            self._checked = now
            if self.path.exists():
                self.released_at = 0.0
            elif not self.released_at:
                self.released_at = time.time()
        return self.released_at or None


class Container:
    def __init__(self, name: str, labels: dict, image: str, run_s: float, hold: Hold) -> None:
        self.id = secrets.token_hex(32)
        self.name, self.labels, self.image, self.run_s, self.hold = name, labels, image, run_s, hold
        self.created = time.time()
        self.started = 0.0
        self.finished = 0.0
        self.exit_code = 0
        self.ended = threading.Event()

    def ends_at(self) -> float | None:
        released = self.hold.release_time()
        return None if not self.started or released is None else max(self.started, released) + self.run_s

    def state(self) -> dict:
        end = self.ends_at()
        if end is not None and not self.finished and time.time() >= end:
            self.finished = end
            self.ended.set()
        running = bool(self.started and not self.finished)
        return {"Status": "running" if running else ("exited" if self.started else "created"),
                "Running": running, "Paused": False, "Restarting": False, "OOMKilled": False, "Dead": False,
                "Pid": 4242 if running else 0, "ExitCode": self.exit_code, "Error": "",
                "StartedAt": docker_time(self.started) if self.started else NEVER,
                "FinishedAt": docker_time(self.finished) if self.finished else NEVER}

    def wait_end(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.state()
            end = self.ends_at()
            left = end - time.time() if end is not None else 0.5
            if self.ended.wait(min(max(left, 0.01), 0.5)):
                return

    def inspect(self) -> dict:
        return {"Id": self.id, "Name": "/" + self.name, "Created": docker_time(self.created), "Image": self.image,
                "State": self.state(), "Config": {"Labels": self.labels, "Tty": False, "Image": self.image},
                "HostConfig": {}, "Mounts": []}

    def summary(self) -> dict:
        return {"Id": self.id, "Names": ["/" + self.name], "Image": self.image, "Labels": self.labels,
                "State": self.state()["Status"], "SizeRw": 4096}


class Engine:
    """One engine's state: its containers."""

    def __init__(self, name: str, root: Path, run_s: float, hold: Hold) -> None:
        self.name, self.root, self.run_s, self.hold = name, root, run_s, hold
        self.lock = threading.Lock()
        self.containers: dict[str, Container] = {}  # id -> container

    def find(self, ref: str) -> Container | None:
        with self.lock:
            c = self.containers.get(ref)
            if c is not None:
                return c
            return next((c for c in self.containers.values() if c.name == ref.lstrip("/") or c.id.startswith(ref)),
                        None)


def image_json() -> dict:
    return {"Id": IMAGE_ID, "RepoTags": [], "RepoDigests": [], "Size": 1 << 20, "VirtualSize": 1 << 20,
            "Created": "2026-01-01T00:00:00Z", "Architecture": "amd64", "Os": "linux",
            "Config": {"User": "", "Cmd": ["true"], "Env": [], "WorkingDir": ""},
            "RootFS": {"Type": "layers", "Layers": [LAYER]}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "EngineServer"

    def log_message(self, *args) -> None:  # quiet: thousands of requests a second
        pass

    # ----- plumbing
    def _send(self, status: int, body: object = None, ctype: str = "application/json", headers: dict | None = None) -> None:
        data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Api-Version", "1.41")
        self.send_header("Docker-Experimental", "false")
        self.send_header("Ostype", "linux")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"message": message})

    def _start_stream(self, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Api-Version", "1.41")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _client_gone(self, timeout: float) -> bool:
        readable, _, _ = select.select([self.connection], [], [], timeout)
        return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)  # EOF: the client left

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}") if n else {}

    # ----- routing
    def do_HEAD(self) -> None:
        self._send(200, b"OK", "text/plain")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _route(self, method: str) -> None:
        engine = self.server.engine
        url = urlsplit(self.path)
        m = API_PATH.match(url.path)
        path = m.group(1) if m else url.path
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = path.strip("/").split("/")
        if method == "POST" and path != "/containers/create":
            self._body()  # read whatever was sent, to keep the connection in step
        if path == "/_ping":
            return self._send(200, b"OK", "text/plain")
        if path == "/version":
            return self._send(200, {"Version": "20.10.99-pink-bench-stand-in", "ApiVersion": "1.41",
                                    "MinAPIVersion": "1.12", "Os": "linux", "Arch": "amd64", "Components": []})
        if path == "/info":
            return self._send(200, {"Name": engine.name, "DockerRootDir": str(engine.root), "Containers":
                                    len(engine.containers), "Images": 1, "ServerVersion": "20.10.99"})
        if path == "/events":
            return self._events()
        if parts[0] == "images":
            return self._images(method, parts)
        if parts[0] == "containers":
            return self._containers(method, parts, q)
        self._error(404, f"page not found: {method} {path}")

    def _events(self) -> None:
        self._start_stream("application/json")
        while not self.server.stop.is_set():
            if self._client_gone(1.0):
                return
        self._chunk(b"")

    def _images(self, method: str, parts: list[str]) -> None:
        if parts == ["images", "json"]:
            return self._send(200, [image_json()])
        if method == "GET" and len(parts) >= 3 and parts[-1] == "json":
            ref = "/".join(parts[1:-1])
            if ref in (IMAGE_ID, IMAGE_ID[7:]) or (len(ref) >= 12 and IMAGE_ID[7:].startswith(ref)):
                return self._send(200, image_json())
            return self._error(404, f"No such image: {ref}")
        if parts[:2] == ["images", "load"]:
            return self._error(500, "the scale bench's stand-in engine loads no images (jobs use a held one)")
        self._error(404, "not implemented by the stand-in engine")

    def _containers(self, method: str, parts: list[str], q: dict) -> None:
        engine = self.server.engine
        if parts == ["containers", "json"]:
            filters = json.loads(q.get("filters") or "{}")
            with engine.lock:
                found = list(engine.containers.values())
            for label in filters.get("label", []):
                k, _, v = label.partition("=")
                found = [c for c in found if k in c.labels and (not v or c.labels[k] == v)]
            if filters.get("id"):
                found = [c for c in found if any(c.id.startswith(i) for i in filters["id"])]
            if q.get("all") not in ("1", "true", "True"):
                found = [c for c in found if c.state()["Running"]]
            return self._send(200, [c.summary() for c in found])
        if parts == ["containers", "create"]:
            spec = self._body()
            name = q.get("name", "") or secrets.token_hex(6)
            if spec.get("Image") not in (IMAGE_ID, IMAGE_ID[7:]):
                return self._error(404, f"No such image: {spec.get('Image')}")
            with engine.lock:
                if any(c.name == name for c in engine.containers.values()):
                    return self._error(409, f'Conflict. The container name "/{name}" is already in use')
                c = Container(name, spec.get("Labels") or {}, IMAGE_ID, engine.run_s, engine.hold)
                engine.containers[c.id] = c
            return self._send(201, {"Id": c.id, "Warnings": []})
        c = engine.find(parts[1]) if len(parts) > 1 else None
        if c is None:
            return self._error(404, f"No such container: {parts[1] if len(parts) > 1 else ''}")
        action = parts[2] if len(parts) > 2 else ""
        if method == "DELETE" and not action:
            with engine.lock:
                engine.containers.pop(c.id, None)
            c.finished = c.finished or time.time()
            c.ended.set()
            return self._send(204)
        if action == "json":
            return self._send(200, c.inspect())
        if action == "start":
            if c.started:
                return self._send(304)
            c.started = time.time()
            return self._send(204)
        if action in ("stop", "kill"):
            if not c.state()["Running"]:
                return self._send(304) if action == "stop" else self._error(409, "not running")
            c.finished, c.exit_code = time.time(), 137
            c.ended.set()
            return self._send(204)
        if action == "wait":
            c.wait_end(self.server.stop)
            return self._send(200, {"StatusCode": c.exit_code, "Error": None})
        if action == "logs":
            return self._logs(c, q)
        if action == "export":
            return self._send(200, EXPORT, "application/x-tar")
        if action == "changes":
            return self._send(200, [{"Path": "/result.txt", "Kind": 1}])
        if action == "archive":
            stat = {"name": "result.txt", "size": 5, "mode": 0o644, "mtime": docker_time(time.time()), "linkTarget": ""}
            return self._send(200, EXPORT, "application/x-tar",
                              {"X-Docker-Container-Path-Stat": base64.b64encode(json.dumps(stat).encode()).decode()})
        self._error(404, "not implemented by the stand-in engine")

    def _logs(self, c: Container, q: dict) -> None:
        line = b"stand-in job ran for %.3f s\n" % c.run_s
        frame = struct.pack(">BxxxL", 1, len(line)) + line
        self._start_stream("application/vnd.docker.raw-stream")
        if c.started:
            self._chunk(frame)
        if q.get("follow") in ("1", "true", "True") and c.started:
            c.wait_end(self.server.stop)
        self._chunk(b"")


class EngineServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, engine: Engine, stop: threading.Event) -> None:
        self.engine, self.stop = engine, stop
        path.unlink(missing_ok=True)
        super().__init__(str(path), Handler)

    def get_request(self):  # unix sockets have no peer address; BaseHTTPRequestHandler wants one
        conn, _ = self.socket.accept()
        return conn, ("stand-in", 0)


def socket_path(folder: Path, i: int) -> Path:
    return folder / f"engine{i}.sock"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale.engine", description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="folder for the sockets engine0.sock ... engine<N-1>.sock")
    p.add_argument("--engines", type=int, required=True)
    p.add_argument("--run-s", type=float, default=1.0, help="how long each container 'runs'")
    args = p.parse_args(argv)
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    hold = Hold(folder / "hold")
    servers = []
    for i in range(args.engines):
        root = folder / f"root{i}"
        root.mkdir(exist_ok=True)
        server = EngineServer(socket_path(folder, i), Engine(f"engine{i}", root, args.run_s, hold), stop)
        threading.Thread(target=server.serve_forever, args=(0.5,), daemon=True).start()
        servers.append(server)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    (folder / "ready").write_text(str(os.getpid()))
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    for server in servers:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
