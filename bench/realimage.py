"""A realistic image for the benchmarks, next to the single-blob one of :mod:`bench.images`.

Debian (``debootstrap --variant=minbase``, from the mirror apt is configured with) imported
with ``docker import``, and six layers built on it with ``docker build`` (the legacy builder,
no network), then ``docker save``d: what a user's image looks like to PINK.

- a Python library tree: ~15,000 small text files (1-16 KiB);
- model weights: two incompressible files of ``WEIGHT_BYTES`` each;
- assets: 256 files of 1 MiB, half text, half incompressible;
- links and deletions: a hard link and symbolic links to files of lower layers, and files of
  the base and of the assets layer deleted (whiteouts, ``.wh.<name>`` in the layer's tar);
- the application: ~400 small files;
- a hard link and a symbolic link inside one layer.

About 1.6 GB in all. The debootstrap'd root (a tar) and the saved archive are cached in the
bench's image folder, keyed by :data:`RECIPE`: only the first run builds them (about 2 min
for debootstrap and 1-2 min for the rest); the engine keeps nothing afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from pink_client.archive import read_image_archive

from .images import BuiltImage, random_stream

SUITE = "bookworm"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
TAG = "pinkbench-debian:1"
WEIGHT_BYTES = 512 << 20
#: The archive must be at least this big (issue: "at least 1.5 GB").
MIN_BYTES = 1_500_000_000

DOCKERFILE = """\
FROM {base}
COPY pylib/ /usr/local/lib/python3.11/dist-packages/
COPY models/ /opt/models/
COPY assets/ /srv/assets/
RUN set -e; ln /srv/assets/a000.bin /srv/assets/current.bin; \
    ln -s weights-0.bin /opt/models/latest.bin; ln -s dist-packages /usr/local/lib/python3.11/site-packages; \
    rm -rf /usr/share/doc /usr/share/man /srv/assets/tmp /srv/assets/a255.bin; \
    mkdir -p /var/cache/app; echo ready > /var/cache/app/state
COPY app/ /app/
RUN ln /app/main.py /app/entry.py && ln -s /app/main.py /usr/local/bin/app
CMD ["/bin/sh", "-c", "cat /proc/uptime"]
"""

#: Whatever changes the image: the cached files are keyed by it.
RECIPE = repr((SUITE, "minbase", DOCKERFILE, WEIGHT_BYTES, 15_000, 256, 400, "no-dev"))


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt uses (deb822 ``.sources`` or ``sources.list``), security
    mirrors skipped; :data:`FALLBACK_MIRROR` when none is configured."""
    files = sorted((sources / "sources.list.d").glob("*.sources")) + [sources / "sources.list"]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if words[:1] == ["URIs:"]:
                urls = words[1:]
            elif words[:1] == ["deb"]:
                urls = [w for w in words[1:] if "://" in w][:1]
            else:
                continue
            for url in urls:
                if "security" not in url:
                    return url.rstrip("/")
    return FALLBACK_MIRROR


def debian_rootfs(folder: Path, log: Callable[[str], None]) -> Path:
    """A tar of ``debootstrap --variant=minbase SUITE``, made once in ``folder``."""
    out = folder / f"debian-{SUITE}-minbase-nodev.tar"
    if out.exists():
        return out
    mirror = apt_mirror()
    log(f"realistic image: debootstrap {SUITE} from {mirror} (once; cached as {out.name})")
    work = Path(tempfile.mkdtemp(prefix="pinkbench-root-", dir=folder))
    try:
        root = work / "root"
        subprocess.run(["debootstrap", "--variant=minbase", SUITE, str(root), mirror],
                       check=True, capture_output=True, timeout=1800)
        part = out.with_name(out.name + ".part")
        # Without the device nodes debootstrap makes in /dev: the engine provides /dev, and
        # PINK refuses devices in an upload (as images from a registry have none).
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "--exclude=./dev/*", "-cf", str(part), "."],
                       check=True)
        part.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _text_pool(seed: str, size: int) -> bytes:
    """Compressible text that looks like source code (zstd takes it to about a third)."""
    rng = random.Random(seed)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz_", k=rng.randint(2, 12))) for _ in range(3000)]
    lines, n = [], 0
    while n < size:
        line = " " * (4 * rng.randint(0, 3)) + " ".join(rng.choices(words, k=rng.randint(1, 10))) + "\n"
        lines.append(line)
        n += len(line)
    return "".join(lines).encode()[:size]


def _write_context(ctx: Path, base: str) -> None:
    rng = random.Random("pink-bench-debian")
    pool = _text_pool("pink-bench-debian", 8 << 20)

    def text(size: int) -> bytes:
        start = rng.randrange(len(pool) - size)
        return pool[start:start + size]

    for i in range(15_000):  # a library tree: 50 packages, 300 modules each
        path = ctx / "pylib" / f"pkg{i % 50:02d}" / f"sub{i // 50 % 10}" / f"mod{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text(rng.randint(1 << 10, 16 << 10)))
    (ctx / "models").mkdir()
    for i in range(2):
        with open(ctx / "models" / f"weights-{i}.bin", "wb") as f:
            for chunk in random_stream(f"pink-bench-debian-weights-{i}", WEIGHT_BYTES):
                f.write(chunk)
    (ctx / "assets" / "tmp").mkdir(parents=True)
    for i in range(256):
        data = text(1 << 20) if i % 2 else b"".join(random_stream(f"pink-bench-debian-asset-{i}", 1 << 20))
        (ctx / "assets" / f"a{i:03d}.bin").write_bytes(data)
    for i in range(20):
        (ctx / "assets" / "tmp" / f"scratch{i}.txt").write_bytes(text(4096))
    for i in range(400):
        path = ctx / "app" / f"part{i % 20}" / f"file{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text(rng.randint(256, 8 << 10)))
    (ctx / "app" / "main.py").write_bytes(b"print('hello')\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(base=base))


def _docker(*argv: str, timeout: float = 1800, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *argv], check=True, capture_output=True, timeout=timeout, **kw)


def realistic_image(folder: Path, log: Callable[[str], None]) -> BuiltImage:
    """The realistic image's ``docker save`` archive in ``folder`` (built once)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(RECIPE.encode()).hexdigest()[:16]
    path = folder / f"debian-{key}.tar"
    meta = path.with_suffix(".json")
    if not (path.exists() and meta.exists()):
        rootfs = debian_rootfs(folder, log)
        log("realistic image: docker import + 6 layers (docker build), docker save (once)")
        base = f"pinkbench-debian-base:{key}"
        work = Path(tempfile.mkdtemp(prefix="pinkbench-ctx-", dir=folder))
        try:
            with open(rootfs, "rb") as f:
                _docker("import", "-", base, stdin=f)
            _write_context(work, base)
            _docker("build", "--network", "none", "--no-cache", "-t", TAG, str(work),
                    env={**os.environ, "DOCKER_BUILDKIT": "0"})
            part = path.with_name(path.name + ".part")
            _docker("save", "-o", str(part), TAG)
            part.rename(path)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            subprocess.run(["docker", "image", "rm", "-f", TAG, base], capture_output=True, timeout=600)
        archive = read_image_archive(path)
        spans = [span[1] - span[0] if span else 0 for span in archive.layer_spans]
        meta.write_text(json.dumps({"image_id": archive.image_id, "diff_ids": archive.diff_ids,
                                    "layer_sizes": spans, "size": archive.size}))
    data = json.loads(meta.read_text())
    if data["size"] < MIN_BYTES:
        raise RuntimeError(f"{path} is {data['size']} bytes, less than {MIN_BYTES}: change the recipe")
    return BuiltImage(path, data["image_id"], tuple(data["diff_ids"]), tuple(data["layer_sizes"]),
                      data["size"], TAG)
