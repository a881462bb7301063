"""CI runs the benchmarks at a tiny size: `python -m bench --smoke` must still stand up its cluster,
run every benchmark with its baseline and print the table (DESIGN §7). The numbers at this
size mean nothing; bench/RESULTS.md holds the real ones."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

REPO = Path(__file__).resolve().parents[2]
BENCHES = ("upload", "e2e", "resubmit", "dispatch", "download", "etcd", "inputs")


def test_bench_smoke_produces_a_table(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--results", str(results), "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = results.read_text()
    assert "| benchmark | measure | PINK | baseline | ratio | target | met |" in text
    for bench in BENCHES:
        assert f"| {bench} |" in text, f"no {bench} row in:\n{text}"
    assert "Versions: pink" in text and "Machine:" in text
    printed = [line for line in text.splitlines() if line.startswith("| ")]
    assert printed and all(line in proc.stdout for line in printed)  # the same table is printed
    print(f"bench smoke took {took:.0f} s")
