"""What the deploy tests share: running ansible-playbook, its results, the deployment."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import requests

from deploy_fleet import REPO_ROOT, Fleet

import pink_dev as dev

T = TypeVar("T")
VENV_BIN = Path(sys.executable).parent
#: Seconds, by phase, shown in the terminal summary (for the README and the issue note).
TIMINGS: dict[str, float] = {}


@dataclasses.dataclass
class PlaybookRun:
    rc: int
    output: str
    seconds: float

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters per host: {"web1": {"ok": 30, "changed": 0, ...}}."""
        hosts: dict[str, dict[str, int]] = {}
        recap = self.output.rsplit("PLAY RECAP", 1)[-1]
        for line in recap.splitlines():
            match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
            if match:
                hosts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
        return hosts

    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported a change (for a readable failure message)."""
        out, task = [], ""
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                task = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed:"):
                out.append(f"{task}: {line}")
        return out


@dataclasses.dataclass
class Deployment:
    fleet: Fleet
    workdir: Path
    inventory: Path
    ssl_dir: Path
    admin_password: str
    fresh: PlaybookRun

    @property
    def url(self) -> str:
        return f"https://{self.fleet.group('lb')[0].ip}"

    def playbook(self, *args: str, timeout: float = 1800) -> PlaybookRun:
        return run_playbook(self.inventory, self.workdir, *args, timeout=timeout)

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The ``pink`` CLI with this deployment's own config file (see :meth:`login`)."""
        env = dict(os.environ, PINK_CLI_CONFIG=str(self.workdir / "cli.json"))
        env.pop("PINK_CA_CERT", None)
        return subprocess.run([str(VENV_BIN / "pink"), *args], input=stdin, capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=self.workdir)

    def login(self) -> subprocess.CompletedProcess[str]:
        return self.cli("login", self.url, "--user", "admin", "--password-stdin",
                        "--ca-cert", str(self.ssl_dir / "ca.pem"), stdin=self.admin_password + "\n")

    @property
    def token(self) -> str:
        """The API token the CLI logged in with."""
        return json.loads((self.workdir / "cli.json").read_text())["token"]

    def api(self) -> requests.Session:
        """An HTTP session through the load balancer with the CLI's token."""
        session = requests.Session()
        session.headers["Authorization"] = "Bearer " + self.token
        session.verify = str(self.ssl_dir / "ca.pem")
        session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides verify
        return session

    def sample_image(self, name: str, script: str) -> Path:
        """A docker-save tarball (cached in the work dir) of a busybox image running ``script``."""
        path = self.workdir / f"{name}.tar"
        if not path.exists():
            tag = f"pink-deploy-{name}:{os.getpid()}"
            subprocess.run([sys.executable, "-m", "pink_dev.sampleimage", "--tag", tag, "--script", script,
                            "--out", str(path)], check=True, capture_output=True, timeout=120)
            subprocess.run(["docker", "rmi", tag], capture_output=True, timeout=60)
        return path


def run_playbook(inventory: Path, workdir: Path, *args: str, timeout: float = 1800) -> PlaybookRun:
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOG_PATH=str(workdir / "ansible.log"),
        ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-tmp"),
        # The fleet's SSH multiplexing sockets live here (short path: sun_path is small).
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(workdir / "cp"),
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    seconds = time.monotonic() - t0
    output = proc.stdout + proc.stderr
    (workdir / f"playbook-{int(time.time())}.out").write_text(output)
    return PlaybookRun(proc.returncode, output, seconds)


def source_snapshot(dest: Path) -> Path:
    """A copy of what gets deployed, so edits made to the checkout while the tests run do not
    turn the second run into an upgrade."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in ("pink", "webapp", "gpu_worker"):
        shutil.copytree(REPO_ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy2(REPO_ROOT / name, dest / name)
    return dest


def wait_for(probe: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """``dev.wait_until``, asking every half second by default (a probe that fails counts as
    "not yet": the load balancer may be between two web servers)."""
    return dev.wait_until(probe, timeout, what, interval=interval)


def job_of(api: requests.Session, url: str, job_id: str) -> dict:
    r = api.get(f"{url}/api/v1/jobs/{job_id}", timeout=30)
    r.raise_for_status()
    return r.json()["job"]


def submit(deployment: Deployment, name: str, script: str) -> str:
    image = deployment.sample_image(name, script)
    run = deployment.cli("submit", str(image), "-o", "json")
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout)["id"]


def wait_state(api: requests.Session, url: str, job_id: str, states: set[str], timeout: float) -> dict:
    return wait_for(lambda: (job := job_of(api, url, job_id))["state"] in states and job, timeout,
                    f"job {job_id} to reach {sorted(states)}")
