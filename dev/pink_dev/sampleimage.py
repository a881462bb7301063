"""Build a tiny busybox image without a registry, for tests, demos and smoke checks.

The root filesystem is a static busybox (Debian's ``busybox-static``) plus applet symlinks,
written as a tar in memory and piped into ``docker import``. Building the tar ourselves, with
every entry owned by root, keeps the image identical whoever runs the build.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import struct
import tarfile
from pathlib import Path

from pink.errors import PinkError

from .dockerd import docker

log = logging.getLogger(__name__)

BUSYBOX = Path("/bin/busybox")
APPLETS = (
    "sh", "echo", "cat", "ls", "mkdir", "sleep", "date", "head", "tail", "dd", "sha256sum",
    "env", "true", "false", "uname", "find", "wc", "tr", "seq", "yes", "printf", "test",
    "kill", "rm", "cp", "grep", "id",
)
_PASSWD = b"root:x:0:0:root:/root:/bin/sh\n"
_GROUP = b"root:x:0:\n"


def _is_static_elf(path: Path) -> bool:
    """True when ``path`` is an ELF executable without a dynamic loader (PT_INTERP)."""
    with path.open("rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF":
            return False
        is64, endian = head[4] == 2, "<" if head[5] == 1 else ">"
        if is64:
            phoff, = struct.unpack_from(endian + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 54)
        else:
            phoff, = struct.unpack_from(endian + "I", head, 28)
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 42)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(
        struct.unpack_from(endian + "I", table, i * phentsize)[0] != 3  # PT_INTERP
        for i in range(phnum)
    )


def rootfs_tar(busybox: Path) -> bytes:
    """The image's root filesystem as an uncompressed tar: ``busybox`` as /bin/busybox with
    its applets, /etc/passwd, /etc/group and the folders /tmp and /out; every entry root's."""

    def entry(name: str, kind: bytes, mode: int, **kw: object) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uname, info.gname = kind, mode, "root", "root"
        for key, value in kw.items():
            setattr(info, key, value)
        return info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d, mode in (("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777),
                        ("out", 0o777)):
            tar.addfile(entry(d, tarfile.DIRTYPE, mode))
        data = busybox.read_bytes()
        tar.addfile(entry("bin/busybox", tarfile.REGTYPE, 0o755, size=len(data)), io.BytesIO(data))
        for applet in APPLETS:
            tar.addfile(entry(f"bin/{applet}", tarfile.SYMTYPE, 0o777, linkname="busybox"))
        for name, content in (("etc/passwd", _PASSWD), ("etc/group", _GROUP)):
            tar.addfile(entry(name, tarfile.REGTYPE, 0o644, size=len(content)),
                        io.BytesIO(content))
    return buf.getvalue()


def _docker(docker_host: str | None, *args: str, stdin: bytes | None = None) -> str:
    result = docker(*args, url=docker_host, stdin=stdin, timeout=None)
    if result.returncode != 0:
        raise PinkError(f"`docker {args[0]}` failed (exit {result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip()


def build_sample_image(
    tag: str, script: str, out_tar: Path | None = None, docker_host: str | None = None
) -> str:
    """Import a busybox image tagged ``tag`` whose command is ``sh -c script``.

    Writes ``docker save`` output to ``out_tar`` when given. Returns the image ID
    (``sha256:<hex>``). Raises PinkError when busybox or docker is unusable.
    """
    if not BUSYBOX.is_file():
        raise PinkError(f"{BUSYBOX} not found; install it with `apt-get install busybox-static`")
    if not _is_static_elf(BUSYBOX):
        raise PinkError(
            f"{BUSYBOX} is not a static executable and would not run inside the image; "
            f"install `busybox-static` instead of `busybox`"
        )
    cmd = "CMD " + json.dumps(["/bin/sh", "-c", script])
    _docker(docker_host, "import", "-c", "ENV PATH=/bin", "-c", cmd, "-", tag,
            stdin=rootfs_tar(BUSYBOX))
    image_id = _docker(docker_host, "image", "inspect", "--format", "{{.Id}}", tag)
    if out_tar is not None:
        _docker(docker_host, "save", "-o", str(out_tar), tag)
    log.info("built sample image %s as %s", tag, image_id)
    return image_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pink_dev.sampleimage",
        description="Build a tiny busybox image (no registry needed) and print its ID.",
    )
    parser.add_argument("--tag", required=True, help="image tag, e.g. pink-sample:latest")
    parser.add_argument("--script", required=True, help="shell script the image runs")
    parser.add_argument("--out", type=Path, help="also write `docker save` output here")
    parser.add_argument("--docker-host", help="docker daemon to use (as docker -H)")
    args = parser.parse_args(argv)
    try:
        image_id = build_sample_image(args.tag, args.script, args.out, args.docker_host)
    except PinkError as exc:
        parser.exit(1, f"error: {exc}\n")
    print(image_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
