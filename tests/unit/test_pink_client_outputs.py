"""The `pink` CLI's output modes and cancels against the fake API (tests/unit/fakeapi.py):
``submit --output``, ``cancel --discard``, and what ``pink status`` says a job kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from pink_client import main as cli
from tests.unit.fakeapi import Fake, make_image_tar

pytestmark = pytest.mark.usefixtures("cli_env")


@pytest.mark.parametrize("mode", ["changes", "path:/out", "none", "full"])
def test_submit_sends_the_output_mode(logged_in: Fake, tmp_path: Path, mode: str) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar, layer_size=1000)
    assert cli.main(["submit", str(tar), "-q", "--output", mode]) == 0
    assert logged_in.uploads[-1].params["output"] == mode


@pytest.mark.parametrize("mode, words", [("path:/in", "/in belongs to the system or to PINK"),
                                         ("everything", "must be one of full, changes, none or path:/DIR")])
def test_submit_refuses_a_bad_output_mode_before_sending(logged_in: Fake, tmp_path: Path, mode: str, words: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["submit", str(tmp_path / "img.tar"), "--output", mode]) == 2
    assert words in capsys.readouterr().err
    assert not logged_in.uploads


def test_cancel_discard_asks_the_server_to_keep_nothing(logged_in: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    kept, dropped = logged_in.add_job(state="RUNNING"), logged_in.add_job(state="RUNNING")
    assert cli.main(["cancel", kept["id"]]) == 0
    assert "keeps what it wrote" not in capsys.readouterr().err  # the fake cancels at once
    exporting = logged_in.add_job(state="RUNNING")
    logged_in.cancel_to = "EXPORTING"
    assert cli.main(["cancel", exporting["id"]]) == 0
    out, err = capsys.readouterr()
    assert "EXPORTING" in out and "its worker stops it and keeps what it wrote" in err
    logged_in.cancel_to = "CANCELLED"
    assert cli.main(["cancel", dropped["id"], "--discard"]) == 0
    paths = [p for method, p, _ in logged_in.requests if method == "POST" and p.endswith(("cancel", "discard=1"))]
    assert paths == [f"/api/v1/jobs/{kept['id']}/cancel", f"/api/v1/jobs/{exporting['id']}/cancel",
                     f"/api/v1/jobs/{dropped['id']}/cancel?discard=1"]


def test_status_says_what_a_job_kept(logged_in: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    entries = [{"name": "/out", "bytes": 10 << 20, "type": "dir"}, {"name": "/etc/motd", "bytes": 0, "type": "deleted"}]
    kept = logged_in.add_job(state="CANCELLED", output="changes", output_bytes=4096, output_sha256="ab" * 32,
                             output_entries=entries, output_expires_at=4_000_000_000)
    assert cli.main(["status", kept["id"]]) == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert "archive holds /out (dir, 10.5 MB)" in lines and "/etc/motd (deleted)" in lines
    assert any(line.startswith("output and log kept until ") for line in lines)
    # Cancelled with --discard: a log, but no archive to claim.
    dropped = logged_in.add_job(state="CANCELLED", output="changes", discard_output=True, log_bytes=10,
                                output_expires_at=4_000_000_000)
    assert cli.main(["status", dropped["id"]]) == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert "output changes, thrown away by a cancel with --discard" in lines
    assert any(line.startswith("log kept until ") for line in lines)
    assert not any("output and log" in line or "archive holds" in line for line in lines)
