"""A small fake of PINK's HTTP API (docs/api.md), served from a thread, for the tests of the
`pink` CLI; and docker-save archives to submit."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import ssl
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

from pink_client import jobs

TOKEN = "secret-token-123"
USER = "alice"
PASSWORD = "correct horse"


# ---------------------------------------------------------------------------- fake server


@dataclasses.dataclass
class Upload:
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    complete: bool
    #: bytes of the body that arrived (more than ``body`` when only its start is kept)
    received: int = 0


@dataclasses.dataclass
class Fake:
    url: str = ""
    jobs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: image id -> names of the workers holding it
    images: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    uploads: list[Upload] = dataclasses.field(default_factory=list)
    #: input id -> names of the workers holding it
    inputs: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: job id -> tombstone of the jobs DELETE removed (reads of them answer 410)
    deleted: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: bodies of POST /jobs/<id>/resubmit, in order
    resubmits: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: POST /inputs requests: the body is kept up to ``keep_input_bytes``, all of it hashed
    input_uploads: list[Upload] = dataclasses.field(default_factory=list)
    keep_input_bytes: int = 1 << 20
    #: this many upload attempts (jobs or inputs) are cut off after part of the body
    drop_uploads: int = 0
    #: bottom layers worker gpu1 holds for us (POST /layers); refuse thin uploads when True
    held_layers: int = 0
    refuse_thin: bool = False
    keys: dict[str, str] = dataclasses.field(default_factory=dict)
    #: job id -> states that successive GETs of the job walk through
    scripts: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    output: bytes = b""
    #: the state a cancel moves a job to (a running job's real cancel answers EXPORTING)
    cancel_to: str = "CANCELLED"
    #: what GET /datasets answers
    datasets: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    range_supported: bool = True
    #: this many output downloads are cut off after half the body
    drop_outputs: int = 0
    log_text: bytes = b"hello from the container\n"
    #: a followed log stream ends after this many lines (None: when the log is done)
    follow_lines: int | None = None
    requests: list[tuple[str, str, dict[str, str]]] = dataclasses.field(default_factory=list)
    tokens_created: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def add_job(self, **fields: Any) -> dict[str, Any]:
        with self.lock:
            job_id = f"{len(self.jobs) + 1:020x}"
            job = {
                "id": job_id,
                "user": USER,
                "name": "",
                "state": "QUEUED",
                "worker": "gpu1",
                "gpus": 0,
                "gpu_indices": [],
                "timeout_s": 3600,
                "output": "full",
                "priority": 0,
                "image_id": "",
                "image_bytes": 0,
                "created_at": 1_700_000_000.0,
                "updated_at": 1_700_000_000.0,
                "history": [{"state": "QUEUED", "at": 1_700_000_000.0, "reason": ""}],
                "exit_code": None,
                "reason": "",
                "output_bytes": 0,
                "output_sha256": "",
                "log_bytes": 0,
                "gpu_seconds": 0.0,
                "started_at": None,
                "finished_at": None,
                "resubmit_of": "",
                "queue_position": 1,
                "waiting_reason": "waiting for 1 GPU",
            }
            job.update(fields)
            self.jobs[job_id] = job
            return job

    def set_output(self, job: dict[str, Any], data: bytes) -> None:
        self.output = data
        job.update(output_bytes=len(data), output_sha256=hashlib.sha256(data).hexdigest())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # a client that never closes its connection cannot hang the teardown

    server: "FakeServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # helpers
    def _json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _route(self, method: str) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        path = parts.path
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with fake.lock:
            fake.requests.append((method, self.path, dict(self.headers)))
        if method == "POST" and path == "/api/v1/tokens":
            creds = json.loads(self._body())
            fake.tokens_created.append(creds)
            if (creds.get("username"), creds.get("password")) != (USER, PASSWORD):
                return self._error(401, "wrong user name or password")
            return self._json(201, {"token": TOKEN, "id": "tok1", "user": USER})
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._body()
            return self._error(401, "missing or invalid token")
        if method == "DELETE" and path == "/api/v1/tokens/tok1":
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if method == "GET" and path.startswith("/api/v1/images/"):
            image = path.rsplit("/", 1)[1]
            return self._json(200, {"image": image, "workers": fake.images.get(image, [])})
        if method == "GET" and path.startswith("/api/v1/inputs/"):
            input_id = path.rsplit("/", 1)[1]
            return self._json(200, {"input": input_id, "workers": fake.inputs.get(input_id, [])})
        if method == "POST" and path == "/api/v1/inputs":
            return self._store_input(fake, params)
        if method == "POST" and path == "/api/v1/layers":
            diff_ids = json.loads(self._body() or b"{}").get("diff_ids", [])
            held = min(fake.held_layers, len(diff_ids))
            return self._json(200, {"workers": [{"name": "gpu1", "layers": held}] if held else []})
        if method == "GET" and path == "/api/v1/datasets":
            return self._json(200, {"datasets": fake.datasets})
        if method == "POST" and path == "/api/v1/jobs":
            return self._submit(fake, params)
        if method == "GET" and path == "/api/v1/jobs":
            listed = sorted(fake.jobs.values(), key=lambda j: j["id"], reverse=True)
            if "state" in params:
                listed = [j for j in listed if j["state"] == params["state"]]
            return self._json(200, {"jobs": listed[: int(params.get("limit", 50))]})
        if method == "GET" and path == "/api/v1/workers":
            return self._json(
                200,
                {
                    "workers": [
                        {
                            "name": "gpu1",
                            "alive": True,
                            "drained": False,
                            "gpus": [
                                {
                                    "index": 0,
                                    "uuid": "GPU-x",
                                    "name": "NVIDIA H100",
                                    "memory_mib": 81559,
                                }
                            ],
                            "gpus_free": [0],
                            "quarantined": {"1": "admin root: fan noise"},
                            "image_cache_bytes": 3 << 30,
                            "max_parallel_jobs": 3,
                            "slots_configured": 4,
                            "cpus": 16,
                            "memory_bytes": 128 << 30,
                            "disk_free_bytes": 50 << 30,
                            "running": 0,
                            "queued": 2,
                            "images": [],
                        }
                    ]
                },
            )
        segs = path.split("/")  # ['', 'api', 'v1', 'jobs', ID, ...]
        if len(segs) >= 5 and segs[3] == "jobs":
            job = fake.jobs.get(segs[4])
            if job is None and segs[4] in fake.deleted:
                return self._error(410, f"job {segs[4]} was deleted by {fake.deleted[segs[4]]['by']}")
            if job is None:
                return self._error(404, f"no job {segs[4]}")
            rest = segs[5:]
            if method == "DELETE" and not rest:
                if job["state"] not in jobs.TERMINAL_STATES:
                    return self._error(409, f"job {job['id']} is {job['state']}; cancel it first")
                with fake.lock:
                    del fake.jobs[job["id"]]
                    stone = {"id": job["id"], "user": job["user"], "by": USER, "at": 1_700_000_100.0,
                             "worker": job["worker"]}
                    fake.deleted[job["id"]] = stone
                return self._json(200, {"deleted": stone})
            if method == "POST" and rest == ["resubmit"]:
                return self._resubmit(fake, job)
            if method == "PATCH" and not rest:
                if job["state"] != "QUEUED":
                    return self._error(409, f"job {job['id']} is {job['state']}; only a QUEUED job can be reordered")
                with fake.lock:
                    job.update(json.loads(self._body()), queue_position=1, waiting_reason="waiting for 1 GPU (0 free)")
                return self._json(200, {"job": job})
            if method == "GET" and not rest:
                with fake.lock:
                    script = fake.scripts.get(job["id"])
                    if script:
                        job["state"] = script.pop(0)
                return self._json(200, {"job": job})
            if method == "POST" and rest == ["cancel"]:
                if job["state"] in jobs.TERMINAL_STATES:
                    return self._error(409, f"job {job['id']} already ended ({job['state']})")
                job["state"] = fake.cancel_to
                return self._json(200, {"job": job})
            if method == "GET" and rest == ["logs"]:
                return self._logs(fake, params)
            if method == "GET" and rest == ["output"]:
                return self._output(fake)
        return self._error(404, f"no route {method} {path}")

    def _submit(self, fake: Fake, params: dict[str, str]) -> None:
        headers = dict(self.headers)
        length = self.headers.get("Content-Length")
        if length is None:
            return self._error(411, "Content-Length required")
        length_i = int(length)
        if fake.drop_uploads > 0:
            fake.drop_uploads -= 1
            part = self.rfile.read(min(length_i, 64 << 10))
            fake.uploads.append(Upload(params, headers, part, complete=False))
            # Hang up mid-body, as a web server that dies would.
            self.close_connection = True
            return None
        body = self.rfile.read(length_i) if length_i else b""
        fake.uploads.append(Upload(params, headers, body, complete=True))
        if params.get("omitted_layers") and fake.refuse_thin:
            return self._error(409, "no worker holds the layers this archive leaves out")
        key = self.headers.get("Idempotency-Key")
        if key and key in fake.keys:
            return self._json(200, {"job": fake.jobs[fake.keys[key]]})
        image = params.get("image", "")
        if not body:
            if not image:
                return self._error(400, "empty body and no image=")
            if not fake.images.get(image):
                return self._error(409, f"no worker holds {image}")
        job = fake.add_job(
            input=params.get("input", ""),
            name=params.get("name", ""),
            gpus=int(params.get("gpus", 0)),
            image_id=image,
            image_bytes=len(body),
        )
        if key:
            fake.keys[key] = job["id"]
        return self._json(201, {"job": job})

    def _store_input(self, fake: Fake, params: dict[str, str]) -> None:
        """As the server does: read the body as it comes (1 MiB at a time), hash it, check the
        id the client computed; the input is then on gpu1."""
        length = self.headers.get("Content-Length")
        if length is None:
            return self._error(411, "Content-Length required")
        if fake.drop_uploads > 0:
            fake.drop_uploads -= 1
            part = self.rfile.read(min(int(length), 64 << 10))
            fake.input_uploads.append(Upload(params, dict(self.headers), part, False, len(part)))
            self.close_connection = True
            return None
        left, kept, hasher = int(length), bytearray(), hashlib.sha256()
        while left:
            block = self.rfile.read(min(left, 1 << 20))
            if not block:
                break
            left -= len(block)
            hasher.update(block)
            if len(kept) < fake.keep_input_bytes:
                kept += block[: fake.keep_input_bytes - len(kept)]
        fake.input_uploads.append(Upload(params, dict(self.headers), bytes(kept), complete=not left,
                                         received=int(length) - left))
        if left:  # the client gave up mid-body: nobody to answer
            self.close_connection = True
            return None
        input_id = "sha256:" + hasher.hexdigest()
        if params.get("sha256", input_id) != input_id:
            return self._error(400, f"the input's sha256 is {input_id}, not {params['sha256']}")
        fake.inputs.setdefault(input_id, []).append("gpu1")
        return self._json(201, {"input": input_id, "worker": "gpu1", "bytes": int(length)})

    def _resubmit(self, fake: Fake, old: dict[str, Any]) -> None:
        """Like the server: only ended jobs; the body's fields (the Pink-Job-Spec header's)
        change the new job."""
        if old["state"] not in jobs.TERMINAL_STATES:
            return self._error(409, f"job {old['id']} is {old['state']}; only an ended job can be resubmitted")
        changes = json.loads(self._body() or b"{}")
        fake.resubmits.append(changes)
        renamed = {"timeout": "timeout_s", "memory": "memory_bytes"}
        fields = {renamed.get(k, k): v for k, v in changes.items()}
        kept = {k: old[k] for k in ("name", "gpus", "image_id", "command", "env") if k in old}
        job = fake.add_job(**{**kept, **fields, "resubmit_of": old["id"]})
        return self._json(201, {"job": job})

    def _logs(self, fake: Fake, params: dict[str, str]) -> None:
        data = fake.log_text[int(params.get("offset", 0)) :]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        if params.get("follow"):
            # The live stream has no length: chunked, ended when the job ends.
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for line in data.splitlines(keepends=True)[: fake.follow_lines]:
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _output(self, fake: Fake) -> None:
        data = fake.output
        rng = self.headers.get("Range")
        if rng and fake.range_supported:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                return self._error(416, "range not satisfiable")
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/zstd")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fake.drop_outputs:
            fake.drop_outputs -= 1
            self.wfile.write(data[:len(data) // 2])
            self.close_connection = True
            return
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._route("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._route("PATCH")


class FakeServer(ThreadingHTTPServer):
    # Join handler threads on close, so none outlives its test.
    daemon_threads = False
    fake: Fake


@contextlib.contextmanager
def serve(tls: ssl.SSLContext | None = None) -> Iterator[Fake]:
    srv = FakeServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if tls is not None:
        srv.socket = tls.wrap_socket(srv.socket, server_side=True)
        scheme = "https"
    srv.fake = Fake(url=f"{scheme}://127.0.0.1:{srv.server_address[1]}")
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv.fake
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()


def make_image_tar(path: Path, layer_size: int = 2_500_000) -> str:
    """A docker-save archive laid out as Docker 20.10 writes it; returns the image id."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as lt:
        payload = os.urandom(layer_size)
        info = tarfile.TarInfo("data.bin")
        info.size = len(payload)
        lt.addfile(info, io.BytesIO(payload))
    layer = layer_buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["true"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    layer_dir = hashlib.sha256(b"chain" + layer).hexdigest()
    manifest = json.dumps(
        [
            {
                "Config": f"{config_hex}.json",
                "RepoTags": ["demo:latest"],
                "Layers": [f"{layer_dir}/layer.tar"],
            }
        ]
    ).encode()

    def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))

    with tarfile.open(path, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        dir_info = tarfile.TarInfo(layer_dir)
        dir_info.type = tarfile.DIRTYPE
        tf.addfile(dir_info)
        add(tf, f"{layer_dir}/VERSION", b"1.0")
        add(tf, f"{layer_dir}/json", b"{}")
        add(tf, f"{layer_dir}/layer.tar", layer)
        add(tf, f"{config_hex}.json", config)
        add(tf, "repositories", b'{"demo":{"latest":"%s"}}' % layer_dir.encode())
        add(tf, "manifest.json", manifest)  # last, as Docker 20.10 writes it
    return f"sha256:{config_hex}"


def make_layered_tar(path: Path, sizes: list[int]) -> list[str]:
    """A Docker 20.10 docker-save archive with one layer per size; returns the diff_ids."""
    layers = []
    for i, size in enumerate(sizes):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as lt:
            info = tarfile.TarInfo(f"layer{i}.bin")
            info.size = size
            lt.addfile(info, io.BytesIO(os.urandom(size)))
        layers.append(buf.getvalue())
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["true"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    dirs = [hashlib.sha256(f"dir{i}".encode() + layer).hexdigest() for i, layer in enumerate(layers)]
    manifest = json.dumps([{"Config": f"{config_hex}.json", "RepoTags": ["demo:thin"],
                            "Layers": [f"{d}/layer.tar" for d in dirs]}]).encode()
    with tarfile.open(path, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for d, layer in zip(dirs, layers):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
            for name, data in (("VERSION", b"1.0"), ("json", b"{}"), ("layer.tar", layer)):
                info = tarfile.TarInfo(f"{d}/{name}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        for name, data in ((f"{config_hex}.json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return diff_ids
