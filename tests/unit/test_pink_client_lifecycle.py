"""`pink resubmit`, `pink rm`, and the fixed wordings (logs of a queued job, submit --wait
with the log, status of a cancelled job, image size, priority), against the fake API server
(tests/unit/fakeapi.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pink_client import main as cli
from tests.unit.fakeapi import Fake, make_image_tar

pytestmark = pytest.mark.usefixtures("cli_env")

IMAGE = "sha256:" + "cd" * 32


def test_rm_deletes_ended_jobs_and_tells_which_it_could_not(
    logged_in: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    done = logged_in.add_job(state="SUCCEEDED")
    running = logged_in.add_job(state="RUNNING")
    failed = logged_in.add_job(state="FAILED")
    assert cli.main(["rm", done["id"], running["id"], failed["id"]]) == 5
    out, err = capsys.readouterr()
    assert out.split() == [done["id"], failed["id"]]
    assert f"{running['id']}: " in err and "cancel it first" in err
    assert f"deleted job {done['id']}" in err and "on worker gpu1" in err
    assert set(logged_in.jobs) == {running["id"]}
    # Afterwards the server says it was deleted, and by whom.
    assert cli.main(["status", done["id"]]) == 5
    assert "HTTP 410" in capsys.readouterr().err
    assert cli.main(["rm", failed["id"], "-o", "json"]) == 5
    assert json.loads(capsys.readouterr().out) == []


def test_rm_json_lists_the_tombstones(logged_in: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    job = logged_in.add_job(state="CANCELLED")
    assert cli.main(["rm", job["id"], "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == job["id"]


def test_resubmit_sends_only_the_changes_and_adds_to_the_old_environment(
    logged_in: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    old = logged_in.add_job(state="SUCCEEDED", image_id=IMAGE, command=["python", "a.py"],
                            env={"SEED": "1", "KEEP": "x"}, gpus=1)
    rc = cli.main(["resubmit", old["id"], "-e", "SEED=2", "--gpus", "0", "--timeout", "2m",
                   "--name", "again", "--", "python", "b.py", "--lr", "0.1"])
    assert rc == 0
    out, err = capsys.readouterr()
    assert logged_in.resubmits == [{"command": ["python", "b.py", "--lr", "0.1"],
                                    "env": {"SEED": "2", "KEEP": "x"}, "gpus": 0, "timeout": 120,
                                    "name": "again"}]
    new = logged_in.jobs[out.strip()]
    assert new["resubmit_of"] == old["id"] and new["command"] == ["python", "b.py", "--lr", "0.1"]
    assert f"resubmitted job {old['id']} as job {new['id']}" in err and "0 bytes sent" in err
    # No option: no change; the body is an empty object.
    assert cli.main(["resubmit", old["id"]]) == 0
    assert logged_in.resubmits[-1] == {}


def test_resubmit_wait_follows_the_new_job(logged_in: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    old = logged_in.add_job(state="FAILED", image_id=IMAGE)
    logged_in.log_text = b"epoch 1\n"
    new_id = f"{len(logged_in.jobs) + 1:020x}"
    logged_in.scripts[new_id] = ["QUEUED", "RUNNING", "RUNNING", "SUCCEEDED"]
    assert cli.main(["resubmit", old["id"], "--wait"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{new_id}\nepoch 1\n"
    assert f"job {new_id}: SUCCEEDED" in err


def test_resubmit_of_a_running_job_is_refused(logged_in: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    job = logged_in.add_job(state="RUNNING", image_id=IMAGE)
    assert cli.main(["resubmit", job["id"]]) == 5
    assert "only an ended job can be resubmitted" in capsys.readouterr().err


def test_logs_of_a_queued_job_say_it_has_not_started(
    logged_in: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    job = logged_in.add_job(state="QUEUED", queue_position=2)
    assert cli.main(["logs", job["id"]]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "QUEUED (position 2" in err and "has not started, so it has no log yet" in err
    assert f"pink logs -f {job['id']}" in err
    assert not any("/logs" in p for _, p, _ in logged_in.requests)


def test_logs_follow_waits_for_a_queued_job_to_start(
    logged_in: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    job = logged_in.add_job(state="QUEUED")
    logged_in.log_text = b"started\n"
    logged_in.scripts[job["id"]] = ["QUEUED", "QUEUED", "RUNNING", "SUCCEEDED"]
    assert cli.main(["logs", "-f", job["id"]]) == 0
    out, err = capsys.readouterr()
    assert out == "started\n" and f"job {job['id']}: RUNNING" in err
    logs = [i for i, (_, p, _) in enumerate(logged_in.requests) if "/logs" in p]
    states = [i for i, (_, p, _) in enumerate(logged_in.requests) if p.endswith(job["id"])]
    assert len(logs) == 1 and logs[0] > states[2]  # the log is asked for once the job started


def test_submit_wait_prints_the_log_as_the_job_runs(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar, layer_size=1000)
    logged_in.log_text = b"step 1\nstep 2\n"
    logged_in.scripts["00000000000000000001"] = ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert cli.main(["submit", str(tar), "--wait"]) == 0
    out, err = capsys.readouterr()
    assert out == "00000000000000000001\nstep 1\nstep 2\n"
    for state in ("QUEUED", "RUNNING", "SUCCEEDED"):
        assert f": {state}" in err
    # -o json keeps stdout for the job's JSON.
    logged_in.scripts["00000000000000000002"] = ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert cli.main(["submit", str(tar), "--wait", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "SUCCEEDED"


def _status(job_id: str, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    assert cli.main(["status", job_id]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        if line.startswith(" ") or line == "history:":
            continue
        key, _, value = line.partition("  ")
        rows[key.strip()] = value.strip()
    return rows


def test_status_says_outputs_are_kept_only_when_there_are_some(
    logged_in: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    nothing = logged_in.add_job(state="CANCELLED", output_expires_at=4_000_000_000.0)
    assert not any("kept until" in key for key in _status(nothing["id"], capsys))
    # A log but no archive: the row names what there is.
    with_log = logged_in.add_job(state="CANCELLED", output_expires_at=4_000_000_000.0, log_bytes=10)
    rows = _status(with_log["id"], capsys)
    assert "log kept until" in rows and "output and log kept until" not in rows
    both = logged_in.add_job(state="CANCELLED", output_expires_at=4_000_000_000.0, log_bytes=10, output_bytes=99)
    assert "output and log kept until" in _status(both["id"], capsys)


def test_status_tells_the_image_size_from_what_was_uploaded(
    logged_in: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    thin = logged_in.add_job(state="SUCCEEDED", image_id=IMAGE, image_bytes=2_000_000, image_size=900_000_000)
    rows = _status(thin["id"], capsys)
    assert rows["image size"] == "900.0 MB" and rows["uploaded"] == "2.0 MB"
    held = logged_in.add_job(state="SUCCEEDED", image_id=IMAGE, image_bytes=0, image_size=900_000_000)
    assert _status(held["id"], capsys)["uploaded"] == "nothing (its worker held the image)"


def test_priority_help_says_who_may_raise_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["submit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "above 0 (up to 100) is for admins only" in help_text
    assert "higher runs first" not in help_text


def test_reorder_sets_the_order_among_the_users_own_jobs(logged_in: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    queued = logged_in.add_job(state="QUEUED")
    assert cli.main(["reorder", queued["id"], "7"]) == 0
    assert capsys.readouterr().out.strip() == (f"job {queued['id']}: user priority 7, queue position 1 "
                                               "(waiting for 1 GPU (0 free))")
    assert logged_in.jobs[queued["id"]]["user_priority"] == 7
    running = logged_in.add_job(state="RUNNING")
    assert cli.main(["reorder", running["id"], "7"]) == 5
    assert "only a QUEUED job can be reordered" in capsys.readouterr().err
