import os

import pytest

from gpu_worker.sshgate import allowed_argv

IN, OUT = "/srv/pink/inbox", "/srv/pink/outbox"
JOB = "01a209ec7ac65cea5c46"


@pytest.mark.parametrize("command,expected", [
    (f"scp -t {IN}/{JOB}.tar", ["scp", "-t", "--", f"{IN}/{JOB}.tar"]),
    (f"scp -t '{IN}/{JOB}.tar'", ["scp", "-t", "--", f"{IN}/{JOB}.tar"]),
    (f"tail -c +1 {OUT}/{JOB}.tar.zst", ["tail", "-c", "+1", "--", f"{OUT}/{JOB}.tar.zst"]),
    (f"tail -c +1048577 {OUT}/{JOB}.log", ["tail", "-c", "+1048577", "--", f"{OUT}/{JOB}.log"]),
    (f"rm -f {IN}/{JOB}.tar", ["rm", "-f", "--", f"{IN}/{JOB}.tar"]),
])
def test_allowed(command, expected):
    assert allowed_argv(command, IN, OUT) == expected


@pytest.mark.parametrize("command", [
    "id", "sh -c id", "", "scp -f /etc/passwd",
    f"scp -t {IN}/../{JOB}.tar", f"scp -t {IN}/x/{JOB}.tar", f"scp -t {OUT}/{JOB}.tar",
    f"scp -t {IN}/{JOB}.tar; id", f"scp -t {IN}/{JOB}.tar.zst", "scp -t /etc/cron.d/x",
    f"tail -c +0 {OUT}/{JOB}.log", f"tail -c 5 {OUT}/{JOB}.log", "tail -c +1 /etc/shadow",
    f"tail -c +1 {OUT}/../../etc/{JOB}.log", f"tail -f {OUT}/{JOB}.log",
    f"rm -f {OUT}/{JOB}.tar.zst", f"rm -rf {IN}", f"rm -f {IN}/*.tar", "scp -t 'unterminated",
    f"tail -c +1 {OUT}/{JOB.upper()}.log",
])
def test_refused(command):
    assert allowed_argv(command, IN, OUT) is None


@pytest.mark.parametrize("command", [f"tail -c +1 {{out}}/{JOB}.log", f"scp -t {{inbox}}/{JOB}.tar",
                                     f"rm -f {{inbox}}/{JOB}.tar"])
def test_a_symlink_in_the_inbox_or_outbox_is_refused(tmp_path, command):
    inbox, out = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    out.mkdir()
    os.symlink("/etc/shadow", out / f"{JOB}.log")
    os.symlink("/etc/cron.d/evil", inbox / f"{JOB}.tar")
    assert allowed_argv(command.format(out=out, inbox=inbox), str(inbox), str(out)) is None
    (out / f"{JOB}.log").unlink()
    (out / f"{JOB}.log").write_text("log")
    assert allowed_argv(f"tail -c +1 {out}/{JOB}.log", str(inbox), str(out)) is not None
