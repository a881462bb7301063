"""The process launchers of pink_dev against the real programs (no webapp or worker)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import paramiko
import pytest
import requests
from scp import SCPClient

import pink_dev as dev
from pink_dev.aio import engine as aio_engine
from pink.config import EtcdConfig, load as load_config
from pink.errors import ConfigError
from pink.etcd import EtcdClient

pytestmark = pytest.mark.integration

JOB = "0123456789abcdef0123"  # a job id as the gate expects it: 20 hex digits


# --------------------------------------------------------------------------- etcd


def put(cluster: dev.EtcdCluster, key: str, value: str) -> subprocess.CompletedProcess[str]:
    return cluster.etcdctl("put", key, value, timeout=3)


def value_of(endpoints: list[str], key: str) -> bytes | None:
    """``key``'s value read with PINK's own etcd client (None: no such key)."""
    client = EtcdClient(EtcdConfig(endpoints=tuple(endpoints)))
    try:
        return client.call(lambda etcd: etcd.get(key)[0], f"get {key}")
    finally:
        client.close()


def test_etcd_cluster_keeps_writing_with_one_member_down_and_stops_without_quorum(etcd3cluster):
    c = etcd3cluster
    assert put(c, "/t/a", "1").returncode == 0

    c.stop_member(0)
    assert not c.members[0].alive()
    result = put(c, "/t/a", "2")
    assert result.returncode == 0, result.stderr
    assert value_of(c.endpoints, "/t/a") == b"2"  # the client skips the member that is down

    c.stop_member(1)
    t0 = time.monotonic()
    result = put(c, "/t/a", "3")
    assert result.returncode != 0, "a lone member of three must not accept writes"
    assert time.monotonic() - t0 < 15
    assert not c.members[2].is_ready()

    c.start_member(1)  # waits until /health is true again, i.e. quorum is back
    result = put(c, "/t/a", "4")
    assert result.returncode == 0, result.stderr
    c.start_member(0)
    assert c.etcdctl("get", "/t/a", "--print-value-only", endpoints=[c.members[0].endpoint]).stdout.strip() == "4"


def test_single_etcd_fixture_answers(etcd, etcd_server):
    assert etcd == etcd_server.endpoints and len(etcd) == 1
    assert etcd_server.etcdctl("put", "/k", "v").returncode == 0
    assert value_of(etcd, "/k") == b"v"
    assert value_of(etcd, "/missing") is None


# --------------------------------------------------------------------------- sshd + gate


def connect(server: dev.Sshd, known_hosts: Path | None = None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or server.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        server.host, port=server.port, username=server.user, key_filename=str(server.client_key),
        allow_agent=False, look_for_keys=False, timeout=10,
    )
    return client


def run(client: paramiko.SSHClient, command: str) -> tuple[int, bytes, bytes]:
    _, stdout, stderr = client.exec_command(command, timeout=20)
    out, err = stdout.read(), stderr.read()
    return stdout.channel.recv_exit_status(), out, err


def test_sshd_gate_takes_an_scp_upload_into_the_inbox_and_serves_the_outbox(sshd, tmp_path):
    server = sshd(inbox=tmp_path / "in", outbox=tmp_path / "out")
    assert server.known_hosts.read_text().startswith(f"[127.0.0.1]:{server.port} ssh-ed25519 ")
    payload = os.urandom(3 << 20)
    (tmp_path / "out" / f"{JOB}.log").write_bytes(b"line one\nline two\n")
    client = connect(server)
    try:
        with SCPClient(client.get_transport(), buff_size=1 << 20) as scp:
            scp.putfo(io.BytesIO(payload), f"{tmp_path / 'in'}/{JOB}.tar")
        assert (tmp_path / "in" / f"{JOB}.tar").read_bytes() == payload
        status, out, _ = run(client, f"tail -c +6 {tmp_path / 'out'}/{JOB}.log")
        assert status == 0 and out == b"one\nline two\n"
        status, _, _ = run(client, f"rm -f {tmp_path / 'in'}/{JOB}.tar")
        assert status == 0 and not (tmp_path / "in" / f"{JOB}.tar").exists()
    finally:
        client.close()


def test_sshd_gate_refuses_commands_shells_and_paths_outside_its_folders(sshd, tmp_path):
    server = sshd(inbox=tmp_path / "in", outbox=tmp_path / "out")
    secret = tmp_path / f"{JOB}.log"
    secret.write_text("not for you\n")
    client = connect(server)
    try:
        for command in (
            "sh -c id",
            "id",
            "cat /etc/passwd",
            f"scp -t {tmp_path / 'in'}/../{JOB}.tar",
            f"scp -t /tmp/{JOB}.tar",
            f"scp -f {tmp_path / 'out'}/{JOB}.log",
            f"tail -c +1 {tmp_path / 'out'}/../{JOB}.log",
            f"tail -c +1 {tmp_path / 'out'}/{JOB}.log; id",
            f"rm -f {tmp_path / 'out'}/{JOB}.log",
            "scp -t '$(id)'",
        ):
            status, out, err = run(client, command)
            assert status == 126, (command, status, out, err)
            assert out == b"" and b"refused" in err, (command, out, err)
        # An interactive shell gets the gate too, with no command: refused.
        channel = client.get_transport().open_session()
        channel.invoke_shell()
        assert channel.recv_exit_status() == 126
        channel.close()
        assert secret.read_text() == "not for you\n"
    finally:
        client.close()


def test_sshd_pins_its_host_key_and_accepts_only_its_client_key(sshd, tmp_path):
    server = sshd()
    other = sshd()
    # The other server's pinned line does not match this server: refused, never added.
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(other.known_hosts_line.replace(f":{other.port}]", f":{server.port}]") + "\n")
    with pytest.raises(paramiko.SSHException):
        connect(server, known_hosts=wrong)
    # A key that is not in authorized_keys does not get in.
    stranger = dev.ssh_keygen(tmp_path / "stranger", "stranger")
    client = paramiko.SSHClient()
    client.load_host_keys(str(server.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(server.host, port=server.port, username=server.user, key_filename=str(stranger),
                       allow_agent=False, look_for_keys=False, timeout=10)
    client.close()


def test_stopping_sshd_cuts_open_connections(sshd):
    server = sshd()
    client = connect(server)
    try:
        assert run(client, "sh -c id")[0] == 126  # the connection works
        server.stop()
        assert not dev.port_open(server.host, server.port)
        with pytest.raises((paramiko.SSHException, EOFError, OSError)):
            run(client, "sh -c id")
    finally:
        client.close()


# --------------------------------------------------------------------------- docker


def busybox_image_tar() -> bytes:
    buf = io.BytesIO()
    busybox = Path("/bin/busybox").read_bytes()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(busybox), 0o755
        tar.addfile(info, io.BytesIO(busybox))
    return buf.getvalue()


def test_extra_dockerd_answers_and_runs_a_container(extra_dockerd):
    engine = extra_dockerd()
    assert dev.docker_answers(engine.url)
    info = json.loads(engine.docker("info", "--format", "{{json .}}").stdout)
    assert info["DockerRootDir"] == str(engine.data_root)
    assert info["Containers"] == 0  # its own engine, not the system one
    subprocess.run(
        ["docker", "-H", engine.url, "import", "-", "pink-launcher-test:1"],
        input=busybox_image_tar(), capture_output=True, check=True, timeout=60,
    )
    out = engine.docker("run", "--rm", "--network", "none", "pink-launcher-test:1",
                        "/bin/busybox", "echo", "hello from the extra engine")
    assert out.stdout.strip() == "hello from the extra engine"


def test_system_docker_answers(system_docker):
    assert dev.docker_answers(system_docker)


# --------------------------------------------------------------------------- nginx


class StaticServer(dev.Service):
    """A tiny upstream: python -m http.server serving one folder."""

    name = "httpserver"

    def __init__(self, base_dir: Path, port: int) -> None:
        super().__init__(base_dir)
        self.port = port

    def command(self) -> list[str]:
        return [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
                "--directory", str(self.base_dir)]

    def is_ready(self) -> bool:
        return dev.port_open("127.0.0.1", self.port)


def test_nginx_serves_tls_with_the_dev_ca_and_skips_a_dead_upstream(nginx, dev_ca, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "hello.txt").write_text("hello through nginx\n")
    with StaticServer(site, dev.free_port()) as upstream:
        dead = dev.free_port()  # nothing listens there
        lb = nginx([dead, upstream.port], max_upload_bytes=1 << 20)
        assert lb.url.startswith("https://127.0.0.1:")
        for _ in range(6):  # round robin hits the dead one too; nginx must retry the live one
            resp = requests.get(f"{lb.url}/hello.txt", verify=str(dev_ca.ca_cert), timeout=10)
            assert resp.status_code == 200 and resp.text == "hello through nginx\n"
        with requests.Session() as anon:
            with pytest.raises(requests.exceptions.SSLError):
                anon.get(f"{lb.url}/hello.txt", verify=True, timeout=10)  # not a public CA
        # client_max_body_size comes from the web config's max_upload_bytes.
        big = requests.post(f"{lb.url}/upload", data=b"x" * (2 << 20), verify=str(dev_ca.ca_cert), timeout=10)
        assert big.status_code == 413
    conf = lb.conf_path.read_text()
    for directive in ("proxy_request_buffering off;", "proxy_buffering off;", "proxy_http_version 1.1;",
                      "X-Forwarded-For", "X-Forwarded-Proto", "max_fails=", "fail_timeout="):
        assert directive in conf


def test_dev_ca_certificate_names_loopback(dev_ca):
    text = subprocess.run(["openssl", "x509", "-in", str(dev_ca.cert), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    assert oct(dev_ca.key.stat().st_mode & 0o777) == "0o600"
    assert dev.make_dev_ca(dev_ca.folder) == dev_ca  # idempotent: the same files are kept


# --------------------------------------------------------------------------- supervision + config


class Stubborn(dev.Service):
    """A process that ignores SIGTERM and leaves a child in its process group."""

    name = "stubborn"

    def command(self) -> list[str]:
        return ["sh", "-c", "trap '' TERM; sleep 300 & while :; do sleep 0.1; done"]


def test_stop_escalates_to_sigkill_and_kills_the_process_group(tmp_path):
    svc = Stubborn(tmp_path / "stubborn", pidfile=tmp_path / "run" / "stubborn.pid")
    svc.start()
    svc.wait_ready(5)
    pid = svc.pid
    assert (tmp_path / "run" / "stubborn.pid").read_text().strip() == str(pid)
    group = dev.wait_until(lambda: dev.descendants(pid), 5, "the service's child")
    t0 = time.monotonic()
    svc.stop(timeout=1)
    assert 0.9 < time.monotonic() - t0 < 8
    assert not svc.alive() and not any(dev.pid_alive(p) for p in group)
    assert not (tmp_path / "run" / "stubborn.pid").exists()


def test_adopt_takes_over_by_pidfile_and_refuses_a_foreign_pid(tmp_path):
    first = Stubborn(tmp_path / "s", pidfile=tmp_path / "s.pid")
    first.start()
    try:
        # Until the child has exec'd, its cmdline is still the forked Python's.
        dev.wait_until(lambda: "trap" in Path(f"/proc/{first.pid}/cmdline").read_text(), 5, "exec")
        second = Stubborn(tmp_path / "s", pidfile=tmp_path / "s.pid")
        second.marker = "trap"
        assert second.adopt() and second.pid == first.pid
        (tmp_path / "other.pid").write_text(f"{os.getpid()}\n")  # this pytest process
        stranger = Stubborn(tmp_path / "elsewhere", pidfile=tmp_path / "other.pid")
        assert not stranger.adopt()
    finally:
        first.stop(timeout=1)


def test_wait_ready_reports_an_early_exit_with_the_log(tmp_path):
    class Crasher(dev.Service):
        name = "crasher"

        def command(self) -> list[str]:
            return ["sh", "-c", "echo something went wrong >&2; exit 3"]

        def is_ready(self) -> bool:
            return False

    svc = Crasher(tmp_path / "c")
    svc.start()
    with pytest.raises(dev.ServiceError, match="(?s)status 3.*something went wrong"):
        svc.wait_ready(10)
    svc.stop()


def test_write_config_round_trips_and_rejects_unknown_keys(tmp_path):
    path = dev.write_config(
        tmp_path / "pink.toml",
        etcd={"endpoints": ["127.0.0.1:1234", "127.0.0.1:5678"], "prefix": "/x"},
        web={"secret_key": 'quote " and \\ back', "max_upload_bytes": 1 << 20},
        worker={"name": "w1", "gpus": "none", "drain": True, "cpus_per_job": 1.5,
                "compressor": ["zstd", "-3"]},
    )
    cfg = load_config(str(path), env={})
    assert cfg.etcd.endpoints == ("127.0.0.1:1234", "127.0.0.1:5678")
    assert cfg.web.secret_key == 'quote " and \\ back' and cfg.web.max_upload_bytes == 1 << 20
    assert cfg.worker.drain is True and cfg.worker.cpus_per_job == 1.5
    assert cfg.worker.compressor == ("zstd", "-3")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ConfigError, match="nonsense"):
        dev.write_config(tmp_path / "bad.toml", web={"nonsense": 1})
    with pytest.raises(ConfigError, match="lease_ttl_s"):
        dev.write_config(tmp_path / "bad2.toml", worker={"lease_ttl_s": 1, "loop_interval_s": 1.0})


def test_free_port_never_hands_out_the_same_port_twice():
    ports = [dev.free_port() for _ in range(50)]
    assert len(set(ports)) == 50


# --------------------------------------------------------------------------- pink-aio


def test_allinone_up_is_idempotent_and_down_stops_everything(tmp_path, system_docker, images):
    folder = tmp_path / "aio"
    https = dev.free_port()
    cmd = [sys.executable, "-m", "pink_dev.aio"]
    common = ["--dir", str(folder)]
    tag = hashlib.sha256(str(folder).encode()).hexdigest()[:12]  # of the engine's data root

    def pink_aio(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, cwd=dev.REPO_ROOT)

    try:
        up = pink_aio("up", *common, "--https-port", str(https))
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"export PINK_CLI_CONFIG={folder / 'cli.json'}" in up.stdout
        cli = json.loads((folder / "cli.json").read_text())
        assert cli["url"] == f"https://127.0.0.1:{https}" and cli["ca_cert"] == str(folder / "ssl" / "ca.pem")
        assert oct((folder / "demo-password").stat().st_mode & 0o777) == "0o600"
        with dev.ApiSession(cli["url"], cli["token"], verify=cli["ca_cert"]) as s:
            assert s.get("/healthz", timeout=10).status_code == 200
            me = s.get("/api/v1/me", timeout=10)
            assert me.status_code == 200 and me.json()["user"] == "demo"
            workers = s.get("/api/v1/workers", timeout=10).json()["workers"]
            assert [w["name"] for w in workers] == ["aio-worker"] and workers[0]["alive"]
            # Its jobs run on its own engine, users remapped: root in the job is not host root.
            with open(images["sleeper"], "rb") as body:
                job_id = s.post("/api/v1/jobs", data=body, timeout=60).json()["job"]["id"]
            dev.wait_until(lambda: s.get(f"/api/v1/jobs/{job_id}").json()["job"]["state"] == "RUNNING",
                           60, "the aio job to run")
            engine = aio_engine(folder, folder / "run").url
            assert "name=userns" in dev.docker("info", "--format", "{{json .SecurityOptions}}", url=engine).stdout
            pid = int(dev.docker("inspect", "--format", "{{.State.Pid}}", f"pink-{job_id}", url=engine).stdout)
            inside, outside, count = map(int, Path(f"/proc/{pid}/uid_map").read_text().split())
            assert (inside, count) == (0, 65536) and outside >= 100000
            assert not dev.docker("ps", "-q", "--filter", f"name=pink-{job_id}").stdout.strip()  # not the system one

        again = pink_aio("up", *common, "--https-port", str(https))
        assert again.returncode == 0 and "already up" in again.stdout, again.stdout + again.stderr
        assert json.loads((folder / "cli.json").read_text()) == cli

        status = pink_aio("status", *common)
        assert status.returncode == 0, status.stdout
        pids = [int(p.read_text()) for p in (folder / "run").glob("*.pid")]
        assert len(pids) == 6 and all(dev.pid_alive(p) for p in pids)

        down = pink_aio("down", *common)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not any(dev.pid_alive(p) for p in pids)
        assert pink_aio("status", *common).returncode == 1
    finally:
        pink_aio("down", *common, "--purge")
    assert not folder.exists() and not list(Path("/var/lib").glob(f"pink-aio-{tag}"))


def test_signals_reach_the_service(tmp_path):
    svc = Stubborn(tmp_path / "sig")
    svc.start()
    svc.kill(signal.SIGKILL)
    assert not svc.alive()
    svc.stop()
    assert shutil.which("etcd") and shutil.which("nginx")  # bootstrap installed the programs
