"""The `pink` CLI against a small fake of the HTTP API (docs/api.md) served from a thread."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import io
import ipaddress
import json
import os
import socket
import ssl
import stat
import sys
import tarfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from pink_client import archive, jobs, output, settings
from pink_client import main as cli

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


@dataclasses.dataclass
class Fake:
    url: str = ""
    jobs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: image id -> names of the workers holding it
    images: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    uploads: list[Upload] = dataclasses.field(default_factory=list)
    #: this many upload attempts are cut off after part of the body
    drop_uploads: int = 0
    #: bottom layers worker gpu1 holds for us (POST /layers); refuse thin uploads when True
    held_layers: int = 0
    refuse_thin: bool = False
    keys: dict[str, str] = dataclasses.field(default_factory=dict)
    #: job id -> states that successive GETs of the job walk through
    scripts: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    output: bytes = b""
    range_supported: bool = True
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
        if method == "POST" and path == "/api/v1/layers":
            diff_ids = json.loads(self._body() or b"{}").get("diff_ids", [])
            held = min(fake.held_layers, len(diff_ids))
            return self._json(200, {"workers": [{"name": "gpu1", "layers": held}] if held else []})
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
            if job is None:
                return self._error(404, f"no job {segs[4]}")
            rest = segs[5:]
            if method == "GET" and not rest:
                with fake.lock:
                    script = fake.scripts.get(job["id"])
                    if script:
                        job["state"] = script.pop(0)
                return self._json(200, {"job": job})
            if method == "POST" and rest == ["cancel"]:
                if job["state"] in jobs.TERMINAL_STATES:
                    return self._error(409, f"job {job['id']} already ended ({job['state']})")
                job["state"] = "CANCELLED"
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
            name=params.get("name", ""),
            gpus=int(params.get("gpus", 0)),
            image_id=image,
            image_bytes=len(body),
        )
        if key:
            fake.keys[key] = job["id"]
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
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._route("DELETE")


class FakeServer(ThreadingHTTPServer):
    # Join handler threads on close, so none outlives its test.
    daemon_threads = False
    fake: Fake


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("PINK_URL", "PINK_TOKEN", "PINK_CA_CERT"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "cfg" / "cli.json"
    monkeypatch.setenv("PINK_CLI_CONFIG", str(config))
    monkeypatch.setattr(jobs, "POLL_MIN_S", 0.01)
    monkeypatch.setattr(jobs, "POLL_MAX_S", 0.02)
    monkeypatch.setattr(jobs, "RETRY_BACKOFF_S", 0.01)
    monkeypatch.chdir(tmp_path)
    return config


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


@pytest.fixture
def server() -> Iterator[Fake]:
    with serve() as fake:
        yield fake


@pytest.fixture
def logged_in(server: Fake, monkeypatch: pytest.MonkeyPatch) -> Fake:
    monkeypatch.setenv("PINK_URL", server.url)
    monkeypatch.setenv("PINK_TOKEN", TOKEN)
    return server


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


# ----------------------------------------------------------------------------------- login


def test_login_stores_token_in_private_file(
    server: Fake, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    rc = cli.main(["login", server.url, "--user", USER, "--password-stdin"])
    assert rc == 0
    assert stat.S_IMODE(cli_env.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli_env.parent.stat().st_mode) == 0o700
    saved = json.loads(cli_env.read_text())
    assert saved["url"] == server.url and saved["token"] == TOKEN and saved["ca_cert"] == ""
    assert server.tokens_created[0]["name"].startswith("cli@")
    # The saved login is enough for the next command.
    server.add_job()
    assert cli.main(["ls", "-o", "json"]) == 0


def test_login_with_wrong_password_exits_4(
    server: Fake, cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("nope\n"))
    assert cli.main(["login", server.url, "--user", USER, "--password-stdin"]) == 4
    assert "wrong user name or password" in capsys.readouterr().err
    assert not cli_env.exists()


def test_saved_token_is_not_sent_to_another_server(
    server: Fake, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.save_config({"url": "https://elsewhere.example", "token": TOKEN, "ca_cert": ""})
    assert cli.main(["--url", server.url, "ls"]) == 4
    assert "not logged in" in capsys.readouterr().err
    assert server.requests == []


def test_logout_revokes_and_forgets_token(server: Fake, cli_env: Path) -> None:
    settings.save_config({"url": server.url, "token": TOKEN, "ca_cert": "", "token_id": "tok1"})
    assert cli.main(["logout"]) == 0
    assert ("DELETE", "/api/v1/tokens/tok1") in [(m, p) for m, p, _ in server.requests]
    saved = json.loads(cli_env.read_text())
    assert "token" not in saved and saved["url"] == server.url


# ---------------------------------------------------------------------------------- submit


def test_read_image_archive_finds_id_with_manifest_last(tmp_path: Path) -> None:
    tar = tmp_path / "img.tar"
    image_id = make_image_tar(tar)
    with tarfile.open(tar) as tf:
        assert tf.getnames()[-1] == "manifest.json"
    image = archive.read_image_archive(tar)
    assert image.image_id == image_id
    assert image.size == tar.stat().st_size
    assert image.tags == ("demo:latest",)


def test_submit_sends_zero_bytes_when_a_worker_holds_the_image(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    image_id = make_image_tar(tar)
    logged_in.images[image_id] = ["gpu7"]
    rc = cli.main(["submit", str(tar), "--gpus", "1", "--timeout", "10m"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "image already on worker gpu7: 0 bytes sent" in err
    [upload] = logged_in.uploads
    assert upload.body == b"" and upload.headers["Content-Length"] == "0"
    assert upload.params["image"] == image_id
    assert upload.params["gpus"] == "1" and upload.params["timeout"] == "600"
    job = logged_in.jobs[out.strip()]
    assert job["image_id"] == image_id and job["name"] == "demo:latest"


def test_submit_uploads_exact_bytes_with_length_and_key(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar)
    rc = cli.main(["submit", str(tar), "--name", "my job", "--output", "none", "--priority", "3"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    [upload] = logged_in.uploads
    assert upload.body == tar.read_bytes()
    assert upload.headers["Content-Length"] == str(tar.stat().st_size)
    assert "Transfer-Encoding" not in upload.headers
    uuid.UUID(upload.headers["Idempotency-Key"])
    assert upload.params == {"name": "my job", "output": "none", "priority": "3"}
    assert out.strip() in logged_in.jobs
    assert "uploading" in err  # the final line of a non-TTY progress report


def test_submit_retries_a_dropped_upload_with_the_same_key(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar)
    logged_in.drop_uploads = 1
    rc = cli.main(["submit", str(tar), "--idempotency-key", "k-42"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    first, second = logged_in.uploads
    assert not first.complete and second.complete
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == "k-42"
    assert second.body == tar.read_bytes()
    assert "retrying" in err
    assert len(logged_in.jobs) == 1 and out.strip() in logged_in.jobs


def test_submit_gives_up_after_retries_and_names_the_key(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar, layer_size=1000)
    logged_in.drop_uploads = jobs.UPLOAD_ATTEMPTS
    assert cli.main(["submit", str(tar)]) == 3
    err = capsys.readouterr().err
    key = logged_in.uploads[0].headers["Idempotency-Key"]
    assert len(logged_in.uploads) == jobs.UPLOAD_ATTEMPTS
    assert {u.headers["Idempotency-Key"] for u in logged_in.uploads} == {key}
    assert f"--idempotency-key {key}" in err


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


def test_submit_sends_a_thin_archive_without_the_layers_a_worker_holds(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    diff_ids = make_layered_tar(tar, [300_000, 200_000, 5_000])
    logged_in.held_layers = 2
    assert cli.main(["submit", str(tar)]) == 0
    err = capsys.readouterr().err
    [upload] = logged_in.uploads
    assert upload.params["omitted_layers"] == ",".join(diff_ids[:2])
    assert upload.headers["Content-Length"] == str(len(upload.body)) and len(upload.body) < 40_000
    with tarfile.open(tar) as full, tarfile.open(fileobj=io.BytesIO(upload.body)) as thin:
        names = thin.getnames()
        # Every member but the two bottom layer.tar files, byte for byte, manifest unchanged.
        layer_tars = [n for n in full.getnames() if n.endswith("/layer.tar")]
        assert names == [n for n in full.getnames() if n not in layer_tars[:2]]
        for name in ("manifest.json", layer_tars[2]):
            assert thin.extractfile(name).read() == full.extractfile(name).read()
    assert "holds 2 of the image's 3 layers" in err


def test_submit_sends_the_whole_archive_when_the_thin_one_is_refused(
    logged_in: Fake, tmp_path: Path
) -> None:
    tar = tmp_path / "img.tar"
    make_layered_tar(tar, [100_000, 5_000])
    logged_in.held_layers, logged_in.refuse_thin = 1, True
    assert cli.main(["submit", str(tar)]) == 0
    thin, whole = logged_in.uploads
    assert thin.params["omitted_layers"] and "omitted_layers" not in whole.params
    assert whole.body == tar.read_bytes()
    assert thin.headers["Idempotency-Key"] == whole.headers["Idempotency-Key"]


def test_submit_falls_back_to_upload_when_the_holder_lost_the_image(
    logged_in: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tar = tmp_path / "img.tar"
    image_id = make_image_tar(tar, layer_size=1000)
    # GET /images says a worker has it; the POST then finds none (it was just removed).
    monkeypatch.setattr(jobs, "image_holders", lambda api, image: ["gone"])
    assert cli.main(["submit", str(tar)]) == 0
    first, second = logged_in.uploads
    assert first.body == b"" and first.params["image"] == image_id
    assert second.body == tar.read_bytes()


@pytest.mark.parametrize(
    ("states", "rc"),
    [
        (["QUEUED", "STARTING", "RUNNING", "EXPORTING", "SUCCEEDED"], 0),
        (["QUEUED", "RUNNING", "FAILED"], 1),
        (["RUNNING", "TIMED_OUT"], 1),
    ],
)
def test_submit_wait_exit_code_follows_the_job(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str], states: list[str], rc: int
) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar, layer_size=1000)
    logged_in.scripts["00000000000000000001"] = list(states)
    assert cli.main(["submit", str(tar), "--wait"]) == rc
    err = capsys.readouterr().err
    for state in states:
        assert f": {state}" in err


def test_submit_wait_download(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar, layer_size=1000)
    logged_in.scripts["00000000000000000001"] = ["RUNNING", "SUCCEEDED"]
    data = os.urandom(300_000)
    orig_submit = Handler._submit

    def submit_with_output(self: Handler, fake: Fake, params: dict[str, str]) -> None:
        orig_submit(self, fake, params)
        for job in fake.jobs.values():
            fake.set_output(job, data)

    Handler._submit = submit_with_output  # type: ignore[method-assign]
    try:
        rc = cli.main(
            [
                "submit",
                str(tar),
                "--wait",
                "--download",
                str(tmp_path / "out.tar.zst"),
                "-o",
                "json",
            ]
        )
    finally:
        Handler._submit = orig_submit  # type: ignore[method-assign]
    out = capsys.readouterr().out
    assert rc == 0
    assert json.loads(out)["state"] == "SUCCEEDED"
    assert (tmp_path / "out.tar.zst").read_bytes() == data


def test_submit_json_output_parses(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar, layer_size=1000)
    assert cli.main(["submit", str(tar), "-o", "json"]) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["id"] in logged_in.jobs


def _fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tar: Path, image_id: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "docker-calls"
    script = bin_dir / "docker"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, shutil, sys\n"
        "args = sys.argv[1:]\n"
        "with open(os.environ['FAKE_DOCKER_CALLS'], 'a') as f:\n"
        "    f.write(json.dumps(args) + '\\n')\n"
        "if args[:2] == ['image', 'inspect']:\n"
        "    print(os.environ['FAKE_DOCKER_ID'])\n"
        "elif args[0] == 'save':\n"
        "    shutil.copy(os.environ['FAKE_DOCKER_TAR'], args[args.index('-o') + 1])\n"
        "else:\n"
        "    sys.exit('unexpected docker call')\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_DOCKER_CALLS", str(calls))
    monkeypatch.setenv("FAKE_DOCKER_ID", image_id)
    monkeypatch.setenv("FAKE_DOCKER_TAR", str(tar))
    return calls


def test_submit_image_skips_export_when_held(
    logged_in: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tar = tmp_path / "img.tar"
    image_id = make_image_tar(tar, layer_size=1000)
    calls = _fake_docker(tmp_path, monkeypatch, tar, image_id)
    logged_in.images[image_id] = ["gpu1"]
    assert cli.main(["submit", "--image", "demo:latest"]) == 0
    assert [json.loads(line)[0] for line in calls.read_text().splitlines()] == ["image"]
    assert logged_in.uploads[0].body == b""


def test_submit_image_exports_when_not_held(
    logged_in: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tar = tmp_path / "img.tar"
    image_id = make_image_tar(tar, layer_size=1000)
    calls = _fake_docker(tmp_path, monkeypatch, tar, image_id)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert cli.main(["submit", "--image", "demo:latest"]) == 0
    save = [json.loads(line) for line in calls.read_text().splitlines()][-1]
    assert save[0] == "save"
    assert logged_in.uploads[0].body == tar.read_bytes()
    assert not list(tmp_path.glob("pink-save-*"))  # the export is removed afterwards


# -------------------------------------------------------------------------------- download


def test_download_resumes_a_partial_file_and_verifies(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = logged_in.add_job(state="SUCCEEDED")
    data = os.urandom(3 * (1 << 20) + 17)
    logged_in.set_output(job, data)
    dest = tmp_path / "result.tar.zst"
    have = (1 << 20) + 123
    (tmp_path / "result.tar.zst.part").write_bytes(data[:have])
    rc = cli.main(["download", job["id"], "-o", str(dest)])
    assert rc == 0, capsys.readouterr().err
    assert dest.read_bytes() == data
    assert not (tmp_path / "result.tar.zst.part").exists()
    ranges = [h.get("Range") for m, p, h in logged_in.requests if p.endswith("/output")]
    assert ranges == [f"bytes={have}-"]


def test_download_restarts_when_the_server_ignores_range(logged_in: Fake, tmp_path: Path) -> None:
    job = logged_in.add_job(state="SUCCEEDED")
    data = os.urandom(200_000)
    logged_in.set_output(job, data)
    logged_in.range_supported = False
    (tmp_path / f"pink-{job['id']}.tar.zst.part").write_bytes(b"garbage that is not a prefix")
    assert cli.main(["download", job["id"]]) == 0
    assert (tmp_path / f"pink-{job['id']}.tar.zst").read_bytes() == data


def test_download_starts_afresh_when_a_stale_partial_does_not_match(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = logged_in.add_job(state="SUCCEEDED")
    data = os.urandom(100_000)
    logged_in.set_output(job, data)
    dest = tmp_path / "out.tar.zst"
    (tmp_path / "out.tar.zst.part").write_bytes(os.urandom(5000))  # left from another archive
    assert cli.main(["download", job["id"], "-o", str(dest)]) == 0
    assert dest.read_bytes() == data
    assert "afresh" in capsys.readouterr().err


def test_download_sha_mismatch_exits_5(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = logged_in.add_job(state="SUCCEEDED")
    logged_in.set_output(job, b"the real archive")
    job["output_sha256"] = hashlib.sha256(b"something else").hexdigest()
    dest = tmp_path / "out.tar.zst"
    assert cli.main(["download", job["id"], "-o", str(dest)]) == 5
    err = capsys.readouterr().err
    assert "corrupt" in err and "sha256" in err
    assert not dest.exists() and not (tmp_path / "out.tar.zst.part").exists()


# ----------------------------------------------------------------------- other commands


def test_ls_status_workers_tables_and_json(
    logged_in: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    queued = logged_in.add_job(
        name="train", gpus=2, queue_position=3, waiting_reason="waiting for 2 GPUs"
    )
    logged_in.add_job(
        name="done",
        state="SUCCEEDED",
        started_at=1_700_000_010.0,
        finished_at=1_700_000_070.0,
        output_bytes=1_500_000,
    )
    assert cli.main(["ls"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == [
        "ID",
        "NAME",
        "STATE",
        "WORKER",
        "GPUS",
        "AGE",
        "RUNTIME",
        "OUTPUT",
    ]
    assert "1m00s" in table and "1.5 MB" in table

    assert cli.main(["ls", "--state", "queued", "-o", "json"]) == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)] == [queued["id"]]

    assert cli.main(["status", queued["id"]]) == 0
    text = capsys.readouterr().out
    assert "queue position  3" in text and "waiting for 2 GPUs" in text and "history:" in text

    assert cli.main(["status", queued["id"], "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == queued["id"]

    assert cli.main(["workers"]) == 0
    out = capsys.readouterr().out
    assert "gpu1" in out and " 1/1 " in out  # free/total GPUs
    assert cli.main(["workers", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "gpu1"


def test_logs_plain_and_followed(logged_in: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    job = logged_in.add_job(state="SUCCEEDED")
    logged_in.log_text = b"line one\nline two\n"
    assert cli.main(["logs", job["id"]]) == 0
    assert capsys.readouterr().out == "line one\nline two\n"
    assert cli.main(["logs", "-f", job["id"]]) == 0
    assert capsys.readouterr().out == "line one\nline two\n"
    assert any("follow=1" in p for _, p, _ in logged_in.requests)


def test_logs_follow_resumes_a_stream_cut_before_the_job_ended(
    logged_in: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    job = logged_in.add_job(state="RUNNING")
    logged_in.log_text = b"line one\nline two\n"
    logged_in.follow_lines = 1  # each followed stream ends after one line, as a proxy timeout would
    logged_in.scripts[job["id"]] = ["RUNNING", "SUCCEEDED"]
    assert cli.main(["logs", "-f", job["id"]]) == 0
    assert capsys.readouterr().out == "line one\nline two\n"
    offsets = [p for _, p, _ in logged_in.requests if "/logs" in p]
    assert "offset=0" in offsets[0] and "offset=9" in offsets[1]


def test_cancel_and_refusal_exits_5(logged_in: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    job = logged_in.add_job(state="RUNNING")
    assert cli.main(["cancel", job["id"]]) == 0
    assert "CANCELLED" in capsys.readouterr().out
    assert cli.main(["cancel", job["id"]]) == 5
    assert "already ended (CANCELLED)" in capsys.readouterr().err
    assert cli.main(["status", "ffffffffffffffffffff"]) == 5


# ------------------------------------------------------------------------------ exit codes


def test_exit_3_when_nothing_listens(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PINK_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("PINK_TOKEN", TOKEN)
    assert cli.main(["ls"]) == 3
    assert "cannot reach" in capsys.readouterr().err


def test_exit_4_when_not_logged_in_or_token_refused(
    server: Fake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["ls"]) == 4
    assert "pink login" in capsys.readouterr().err
    monkeypatch.setenv("PINK_URL", server.url)
    monkeypatch.setenv("PINK_TOKEN", "stale")
    assert cli.main(["ls"]) == 4
    assert "refused the credentials" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["submit", "x.tar", "--gpus", "many"],
        ["submit", "x.tar", "--timeout", "soon"],
        ["ls", "--state", "SLEEPING"],
        ["submit"],
        ["submit", "no-such-file.tar"],
    ],
)
def test_usage_errors_exit_2(
    logged_in: Fake, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert capsys.readouterr().err


def test_compressed_or_foreign_archives_are_usage_errors(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gz = tmp_path / "img.tar.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 100)
    assert cli.main(["submit", str(gz)]) == 2
    assert "gzip-compressed" in capsys.readouterr().err
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tf:
        info = tarfile.TarInfo("hello.txt")
        tf.addfile(info, io.BytesIO(b""))
    assert cli.main(["submit", str(plain)]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    assert logged_in.uploads == []


def test_parse_duration() -> None:
    assert [cli.parse_duration(t) for t in ("90", "90s", "30m", "2h", "1d")] == [
        90,
        90,
        1800,
        7200,
        86400,
    ]


# ------------------------------------------------------------------------------------ TLS


def make_tls(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A private CA and a server certificate for 127.0.0.1; returns the CA file and a context."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pink test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file = tmp_path / "server.crt"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = tmp_path / "server.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ca_file, ctx


def test_tls_verifies_with_the_given_ca_and_never_skips_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_file, ctx = make_tls(tmp_path)
    with serve(ctx) as fake:
        monkeypatch.setenv("PINK_URL", fake.url)
        monkeypatch.setenv("PINK_TOKEN", TOKEN)
        # System CAs do not know the private CA: a clear exit 3 that names --ca-cert.
        assert cli.main(["workers"]) == 3
        err = capsys.readouterr().err
        assert "TLS" in err and "--ca-cert" in err
        assert cli.main(["workers", "--ca-cert", str(ca_file)]) == 0
        assert "gpu1" in capsys.readouterr().out
        monkeypatch.setenv("PINK_CA_CERT", str(ca_file))
        assert cli.main(["workers", "-o", "json"]) == 0
        capsys.readouterr()
    assert cli.main(["workers", "--ca-cert", str(tmp_path / "missing.crt")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------- progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_tty_and_one_line_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    bar = output.Ui().progress("uploading", 10_000_000)
    assert bar.bar is not None
    bar.add(5_000_000)
    bar.add(5_000_000)
    bar.finish()
    text = tty.getvalue()
    assert text.startswith("\ruploading")
    assert "100%" in text and "10.0M/10.0M" in text and "B/s" in text and text.endswith("\n")
    assert output.Ui(fmt="json").progress("uploading", 10).bar is None
    assert output.Ui(quiet=True).progress("uploading", 10).bar is None

    # A failed attempt ends the bar's line; a resumed download counts from where it was.
    tty.truncate(0)
    tty.seek(0)
    resumed = output.Ui().progress("downloading", 1000, done=400)
    resumed.add(100)
    resumed.abort()
    assert tty.getvalue().endswith("\n") and "500/1.00k" in tty.getvalue()

    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    line = output.Ui().progress("downloading", 1000)
    assert line.bar is None
    line.add(1000)
    line.finish()
    assert "\r" not in plain.getvalue() and plain.getvalue().startswith("downloading 1.0 kB in ")
    quiet = output.Ui(quiet=True).progress("downloading", 1000)
    quiet.add(1000)
    quiet.finish()
    assert plain.getvalue().count("\n") == 1
