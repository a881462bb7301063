"""Systemd hosts in docker containers for the deploy test layer (and for trying roles by hand).

The host image is Debian bookworm built locally with debootstrap (no registry), imported into
docker and cached as a gzip'd ``docker save`` under ``/var/cache/pink-deploy/``, keyed by a
hash of the recipe below: change the recipe and a new image is built, keep it and a second
run loads the cached one in seconds.

A :class:`Fleet` starts the hosts on a user-defined docker network with a fixed subnet, pins
their SSH host keys (read through ``docker exec``, never accepted blindly) and writes an
Ansible inventory for them. Everything it creates carries the label ``pink.deploy=<fleet>``
and is removed by that label, so a crashed run is cleaned up by the next one.

By hand::

    python tests/deploy/deploy_fleet.py up      # build/load the image, start 8 hosts
    ansible-playbook -i /var/tmp/pink-deploy/inventory.yml site.yml
    python tests/deploy/deploy_fleet.py down
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("PINK_DEPLOY_CACHE", "/var/cache/pink-deploy"))
LABEL = "pink.deploy"
IMAGE_REPO = "pink-deploy-host"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"

#: What debootstrap puts into every host: systemd as PID 1, sshd, and what Ansible needs.
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-apt", "sudo",
    "iproute2", "ca-certificates", "procps", "curl",
)

#: Units that cannot work (or make no sense) in a container; masked in the image.
MASKED_UNITS = (
    "systemd-udevd.service", "systemd-udevd-control.socket", "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service", "systemd-udev-settle.service", "systemd-resolved.service",
    "systemd-timesyncd.service", "getty.target", "getty@tty1.service", "console-getty.service",
    "systemd-remount-fs.service", "sys-kernel-config.mount", "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount", "sys-fs-fuse-connections.mount", "dev-hugepages.mount",
    "proc-sys-fs-binfmt_misc.automount", "systemd-modules-load.service",
    "systemd-firstboot.service", "e2scrub_reap.service", "apt-daily.timer",
    "apt-daily-upgrade.timer",
)

APT_SOURCES = f"""Types: deb
URIs: {MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

#: sshd's own ExecStartPre (sshd -t) fails while the image has no host keys: make them first,
#: so that every host gets its own keys on its first boot.
SSH_DROPIN = """[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
"""

#: Throwaway test hosts: dpkg skips fsync (as Docker's own Debian images do) and apt fetches no
#: translations, which makes the playbook's package installs several times faster.
DPKG_UNSAFE_IO = "force-unsafe-io\n"
APT_NO_LANGUAGES = 'Acquire::Languages "none";\n'

#: Bump when the customisation below changes in a way the other inputs do not show.
RECIPE_VERSION = "4"


def recipe_hash() -> str:
    text = json.dumps([RECIPE_VERSION, SUITE, MIRROR, PACKAGES, MASKED_UNITS, APT_SOURCES, SSH_DROPIN,
                       DPKG_UNSAFE_IO, APT_NO_LANGUAGES])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def image_tag() -> str:
    return f"{IMAGE_REPO}:{recipe_hash()}"


def docker(*args: str, check: bool = True, timeout: float = 300, input: str | None = None,
           quiet: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} ... failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def _customise(root: Path) -> None:
    """Make a debootstrap'd root boot as a container with systemd and sshd."""
    systemd_dir = root / "etc/systemd/system"
    for unit in MASKED_UNITS:
        link = systemd_dir / unit
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/dev/null")
    wants = systemd_dir / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    ssh_link = wants / "ssh.service"
    if not ssh_link.exists() and not ssh_link.is_symlink():
        ssh_link.symlink_to("/lib/systemd/system/ssh.service")
    dropin = systemd_dir / "ssh.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "pink-testbed-hostkeys.conf").write_text(SSH_DROPIN)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (root / "etc/hostname").unlink(missing_ok=True)
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(APT_SOURCES)
    (root / "etc/dpkg/dpkg.cfg.d/pink-testbed-unsafe-io").write_text(DPKG_UNSAFE_IO)
    (root / "etc/apt/apt.conf.d/99pink-testbed-no-languages").write_text(APT_NO_LANGUAGES)
    lists = root / "var/lib/apt/lists"
    for entry in lists.iterdir():
        if entry.is_file():
            entry.unlink()
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    # An empty list folder with today's date looks "fresh" to apt's cache_valid_time and no
    # package would be found: date it in the past so the first play updates the cache.
    os.utime(lists, (946684800, 946684800))


def build_image(tag: str | None = None) -> str:
    """Make sure the host image exists in the local engine; returns its tag."""
    tag = tag or image_tag()
    if _image_exists(tag):
        return tag
    cache = CACHE_DIR / f"{tag.split(':')[1]}.tar.gz"
    if cache.exists():
        t0 = time.monotonic()
        with gzip.open(cache, "rb") as fh:
            load = subprocess.run(["docker", "load"], stdin=fh, capture_output=True, timeout=600)
        if load.returncode == 0 and _image_exists(tag):
            log.info("loaded %s from %s in %.1fs", tag, cache, time.monotonic() - t0)
            return tag
        log.warning("cached image %s did not load (%s); building again", cache, load.stderr[-300:])
    if not shutil.which("debootstrap") and not os.access("/usr/sbin/debootstrap", os.X_OK):
        raise RuntimeError("debootstrap is not installed: apt-get install debootstrap")
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="pink-deploy-root-", dir="/var/tmp"))
    root = work / "root"
    try:
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR],
            check=True, capture_output=True, timeout=1200,
        )
        _customise(root)
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "import",
             "-c", 'CMD ["/lib/systemd/systemd"]',
             "-c", "ENV container=docker",
             "-c", f"LABEL {LABEL}.image={recipe_hash()}",
             "-", tag],
            stdin=tar.stdout, check=True, capture_output=True, timeout=600,
        )
        tar.stdout.close()
        if tar.wait() != 0:
            raise RuntimeError("tar of the host root failed")
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"building the host image failed: {exc.cmd[0]}: {exc.stderr!r}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("built %s in %.1fs", tag, time.monotonic() - t0)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    part = cache.with_suffix(".part")
    with open(part, "wb") as out:
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        subprocess.run(["gzip", "-1"], stdin=save.stdout, stdout=out, check=True)
        save.stdout.close()
        if save.wait() != 0:
            raise RuntimeError(f"docker save {tag} failed")
    part.rename(cache)
    # Older cached images of other recipes are dead weight.
    for old in CACHE_DIR.glob("*.tar.gz"):
        if old != cache:
            old.unlink(missing_ok=True)
    tags = docker("images", IMAGE_REPO, "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout.split()
    for old_tag in tags:
        if old_tag != tag:
            docker("rmi", old_tag, check=False)  # refused while a container uses it: fine
    return tag


@dataclasses.dataclass(frozen=True)
class HostSpec:
    name: str
    ip: str
    groups: tuple[str, ...]
    #: Runs a docker engine inside: needs the host's cgroups and a volume for /var/lib/docker.
    nested_docker: bool = False


def default_hosts(subnet_prefix: str = "172.30.77") -> list[HostSpec]:
    """The 8 hosts of the deploy layer: 1 load balancer, 2 web, 3 etcd, 2 workers."""
    return [
        HostSpec("lb1", f"{subnet_prefix}.10", ("lb",)),
        HostSpec("web1", f"{subnet_prefix}.11", ("web",)),
        HostSpec("web2", f"{subnet_prefix}.12", ("web",)),
        HostSpec("etcd1", f"{subnet_prefix}.21", ("etcd",)),
        HostSpec("etcd2", f"{subnet_prefix}.22", ("etcd",)),
        HostSpec("etcd3", f"{subnet_prefix}.23", ("etcd",)),
        HostSpec("worker1", f"{subnet_prefix}.31", ("workers",), nested_docker=True),
        HostSpec("worker2", f"{subnet_prefix}.32", ("workers",), nested_docker=True),
    ]


class Fleet:
    """Containers that behave like servers: systemd, sshd, a fixed address each."""

    def __init__(self, workdir: str | os.PathLike[str], *, name: str = "pink-deploy",
                 subnet: str = "172.30.77.0/24", hosts: Sequence[HostSpec] | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.name = name
        self.subnet = subnet
        self.network = name
        self.hosts = list(hosts) if hosts is not None else default_hosts(subnet.rsplit(".", 1)[0])
        self.key = self.workdir / "id_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        self.inventory = self.workdir / "inventory.yml"
        self.label = f"{LABEL}={name}"

    def container(self, host: HostSpec | str) -> str:
        return f"{self.name}-{host if isinstance(host, str) else host.name}"

    def host(self, name: str) -> HostSpec:
        return next(h for h in self.hosts if h.name == name)

    def group(self, group: str) -> list[HostSpec]:
        return [h for h in self.hosts if group in h.groups]

    # ----- life cycle -------------------------------------------------------------------------------
    def down(self) -> None:
        """Remove every container, volume and network labelled with this fleet's name."""
        ids = docker("ps", "-aq", "--filter", f"label={self.label}", check=False).stdout.split()
        if ids:
            docker("rm", "-f", "-v", *ids, check=False, timeout=300)
        vols = docker("volume", "ls", "-q", "--filter", f"label={self.label}", check=False).stdout.split()
        if vols:
            docker("volume", "rm", "-f", *vols, check=False)
        nets = docker("network", "ls", "-q", "--filter", f"label={self.label}", check=False).stdout.split()
        if nets:
            docker("network", "rm", *nets, check=False)

    def up(self, image: str, ready_timeout: float = 300.0) -> "Fleet":
        self.down()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pink-deploy-test",
                            "-f", str(self.key)], check=True, timeout=30)
        docker("network", "create", "--label", self.label, "--subnet", self.subnet, self.network)
        for host in self.hosts:
            self._run(host, image)
        self._wait_ssh(ready_timeout)
        self._pin_host_keys()
        return self

    def _run(self, host: HostSpec, image: str) -> None:
        # --privileged fails on these hosts (no CAP_SYS_RESOURCE): all other capabilities.
        args = [
            "run", "-d", "--name", self.container(host), "--hostname", host.name,
            "--label", self.label, "--network", self.network, "--ip", host.ip,
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--security-opt", "systempaths=unconfined",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
            "--stop-signal", "SIGRTMIN+3",
            "-v", f"{self.key}.pub:/root/.ssh/authorized_keys:ro",
        ]
        if host.nested_docker:
            volume = f"{self.container(host)}-docker"
            docker("volume", "create", "--label", self.label, volume)
            # A private cgroup namespace leaves the controllers read-only and nested `docker
            # run` fails; the host's cgroup tree works.
            args += ["--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                     "--device-cgroup-rule", "a *:* rwm", "--device", "/dev/fuse",
                     "-v", f"{volume}:/var/lib/docker"]
        else:
            args += ["--cgroupns=private"]
        docker(*args, image)

    def stop(self, host: HostSpec | str) -> None:
        """``docker stop`` the host: systemd shuts down, then every process in it is gone."""
        docker("stop", self.container(host), timeout=180)

    def start(self, host: HostSpec | str, ready_timeout: float = 120.0) -> None:
        """``docker start`` a stopped host and wait until systemd has finished booting it."""
        docker("start", self.container(host))
        deadline = time.monotonic() + ready_timeout
        while True:
            state = self.exec(host, "systemctl", "is-system-running", "--wait", timeout=ready_timeout).stdout.strip()
            if state in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.container(host)} did not boot within {ready_timeout:.0f}s: {state}")
            time.sleep(0.5)

    def exec(self, host: HostSpec | str, *cmd: str, check: bool = False, timeout: float = 120,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        return docker("exec", "-i", self.container(host), *cmd, check=check, timeout=timeout, input=input)

    def _wait_ssh(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(self.hosts)
        while waiting:
            waiting = [h for h in waiting
                       if self.exec(h, "sh", "-c", "test -s /etc/ssh/ssh_host_ed25519_key.pub && "
                                    "systemctl is-active -q ssh", timeout=30).returncode != 0]
            if not waiting:
                break
            if time.monotonic() > deadline:
                states = {h.name: self.exec(h, "systemctl", "is-system-running").stdout.strip() for h in waiting}
                raise RuntimeError(f"sshd did not come up within {timeout:.0f}s on {states}")
            time.sleep(0.5)

    def _pin_host_keys(self) -> None:
        """known_hosts for the test's SSH client, read over docker's own channel."""
        lines = []
        for host in self.hosts:
            kind, key = self.exec(host, "cat", "/etc/ssh/ssh_host_ed25519_key.pub", check=True).stdout.split()[:2]
            lines.append(f"{host.ip} {kind} {key}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    # ----- inventory --------------------------------------------------------------------------------
    def write_inventory(self, extra_vars: dict | None = None, group_vars: dict | None = None) -> Path:
        """An Ansible inventory (YAML, which is JSON-compatible) for the fleet."""
        groups: dict[str, dict] = {}
        for host in self.hosts:
            for group in host.groups:
                groups.setdefault(group, {"hosts": {}})["hosts"][host.name] = {"ansible_host": host.ip}
        for group, values in (group_vars or {}).items():
            groups.setdefault(group, {"hosts": {}})["vars"] = values
        inventory = {
            "all": {
                "vars": {
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(self.key),
                    "ansible_ssh_common_args": (
                        f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes "
                        "-o ControlMaster=auto -o ControlPersist=120s"
                    ),
                    "ansible_python_interpreter": "/usr/bin/python3",
                    **(extra_vars or {}),
                },
                "children": groups,
            }
        }
        self.inventory.write_text(json.dumps(inventory, indent=2) + "\n")
        return self.inventory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="systemd hosts in docker for PINK's deploy tests")
    parser.add_argument("command", choices=("image", "up", "down"))
    parser.add_argument("--dir", default="/var/tmp/pink-deploy", help="state folder (key, inventory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    fleet = Fleet(args.dir)
    if args.command == "image":
        print(build_image())
    elif args.command == "up":
        t0 = time.monotonic()
        fleet.up(build_image())
        print(f"{len(fleet.hosts)} hosts up in {time.monotonic() - t0:.1f}s; inventory {fleet.write_inventory()}")
    else:
        fleet.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
