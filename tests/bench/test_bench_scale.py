"""CI runs the control-plane scale bench at a tiny size: `python -m bench.scale --smoke` (3
real worker daemons on stand-in engines, ~100 jobs) must stand its cluster up, run every
phase and print its table. The numbers at this size mean nothing; bench/RESULTS.md holds the
real ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

REPO = Path(__file__).resolve().parents[2]


def test_scale_bench_smoke_produces_a_table(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--smoke", "--results", str(results), "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = results.read_text()
    assert "NOT Docker" in text  # says what it measures
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    for measure in ("submit p50 / p99 at 30 queued", "dispatch, full queues (jobs/s QUEUED→SUCCEEDED)",
                    "time to LOST after SIGKILL (first / last job)", "at 60 through: jobs/s (min waiting)",
                    "worker daemon RSS mean / max", "web server RSS at 30 queued (each)"):
        assert measure in rows, f"no row {measure!r} in:\n{text}"
        value = rows[measure].split(" | ")[1].rstrip(" |")
        assert value not in ("-", "- / -") and "nan" not in value, rows[measure]  # measured, not missing
    assert all(line in proc.stdout for line in rows.values())  # the same table is printed
