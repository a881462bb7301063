#!/usr/bin/env python3
"""Build the wheels of one PINK release on the controller (run by the pink_app role).

The release is named by a fingerprint of its inputs (the code, pyproject.toml and the runtime
part of requirements.txt), so an unchanged checkout is never rebuilt and hosts that already
run it change nothing. Prints one JSON object: fingerprint, dir, archive (a tar of dir, what hosts receive), python
and changed.

Hosts install from these wheels with ``pip --no-index``: they need no access to PyPI, and the
controller's Python must have the hosts' minor version (binary wheels such as grpcio).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGES = ("pink", "pink_client", "webapp", "gpu_worker")
EXTRA_INPUTS = ("pyproject.toml", "requirements.txt")
SKIP_DIRS = {"__pycache__"}


def runtime_requirements(source: Path, exclude: set[str]) -> list[str]:
    """The requirement lines above the test section of requirements.txt, minus ``exclude``."""
    lines = []
    for raw in (source / "requirements.txt").read_text().splitlines():
        line = raw.strip()
        if re.match(r"#\s*tests?\b", line, re.IGNORECASE):
            break
        if not line or line.startswith("#"):
            continue
        name = re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower().replace("_", "-")
        if name not in exclude:
            lines.append(line)
    return lines


def fingerprint(source: Path, requirements: list[str]) -> str:
    digest = hashlib.sha256()
    files = [source / name for name in EXTRA_INPUTS]
    for package in PACKAGES:
        for folder, dirs, names in os.walk(source / package):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            files += [Path(folder) / n for n in sorted(names) if not n.endswith((".pyc", ".pyo"))]
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update("\n".join(requirements).encode())
    digest.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()[:16]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="the PINK checkout")
    parser.add_argument("--out", required=True, help="folder that holds one subfolder per release")
    parser.add_argument("--exclude", action="append", default=[], help="requirement not installed on hosts")
    parser.add_argument("--keep", type=int, default=3, help="releases kept in --out")
    args = parser.parse_args()
    source = Path(args.source).resolve()
    out = Path(args.out).resolve()
    requirements = runtime_requirements(source, {e.lower() for e in args.exclude})
    fp = fingerprint(source, requirements)
    target = out / fp
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    archive = out / f"{fp}.tar"
    result = {"fingerprint": fp, "dir": str(target), "archive": str(archive), "python": python, "changed": False}
    if (target / "COMPLETE").exists() and archive.exists():
        print(json.dumps(result))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{fp}-", dir=out))
    try:
        # Hosts install pink[web] or pink[worker] from this folder: PINK's wheel and the wheels
        # of every runtime requirement.
        deps = work / "deps.txt"
        deps.write_text("\n".join(requirements) + "\n")
        build_dir = Path(tempfile.mkdtemp(prefix="pink-src-"))
        try:
            # Build from a copy so the checkout gets no build/ or egg-info litter.
            src = build_dir / "src"
            shutil.copytree(source, src, ignore=shutil.ignore_patterns(
                ".git", ".venv", "build", "*.egg-info", "__pycache__", "node_modules", ".aio", ".pytest_cache"))
            cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                   "--wheel-dir", str(work), "-r", str(deps), str(src)]
            try:
                # The build backend is here: no isolated build environment to download.
                import setuptools  # noqa: F401
                import wheel  # noqa: F401
                cmd.insert(4, "--no-build-isolation")
            except ImportError:
                pass
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout + proc.stderr)
                return proc.returncode
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
        deps.unlink()
        (work / "COMPLETE").write_text(fp + "\n")
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
        # One file to copy instead of dozens: a copy per file costs a round trip each.
        with tarfile.open(archive.with_suffix(".part"), "w") as tar:
            for path in sorted(target.iterdir()):
                tar.add(path, arcname=path.name)
        archive.with_suffix(".part").rename(archive)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    # Old releases: keep the newest few, so a rollback to them needs no rebuild.
    releases = sorted((p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    for old in releases[max(args.keep, 1):]:
        shutil.rmtree(old, ignore_errors=True)
        old.with_suffix(".tar").unlink(missing_ok=True)
    result["changed"] = True
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
