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


# ----- inputs: uploaded under a temporary name, renamed to their id once whole and checked
UP = "0123456789abcdef0123"
HEX = "ab" * 32


@pytest.mark.parametrize("command,expected", [
    (f"scp -t {IN}/input-{UP}.part", ["scp", "-t", "--", f"{IN}/input-{UP}.part"]),
    (f"rm -f {IN}/input-{UP}.part", ["rm", "-f", "--", f"{IN}/input-{UP}.part"]),
    (f"mv -f -T {IN}/input-{UP}.part {IN}/input-{HEX}.tar",
     ["mv", "-f", "-T", "--", f"{IN}/input-{UP}.part", f"{IN}/input-{HEX}.tar"]),
])
def test_input_uploads_allowed(command, expected):
    assert allowed_argv(command, IN, OUT) == expected


@pytest.mark.parametrize("command", [
    f"scp -t {IN}/input-{HEX}.tar",  # only the temporary name is written to
    f"scp -t {OUT}/input-{UP}.part", f"scp -t {IN}/input-{UP[:-1]}.part", f"scp -t {IN}/input-{UP}.tar",
    f"rm -f {IN}/input-{HEX}.tar",  # inputs are the worker's to delete
    f"mv {IN}/input-{UP}.part {IN}/input-{HEX}.tar", f"mv -f {IN}/input-{UP}.part {IN}/input-{HEX}.tar",
    f"mv -f -T {IN}/input-{UP}.part {OUT}/input-{HEX}.tar", f"mv -f -T {IN}/input-{UP}.part {IN}/{JOB}.tar",
    f"mv -f -T {IN}/{JOB}.tar {IN}/input-{HEX}.tar", f"mv -f -T {IN}/input-{UP}.part {IN}/../input-{HEX}.tar",
    f"mv -f -T {IN}/input-{UP}.part {IN}/input-{HEX.upper()}.tar",
    f"mv -f -T {IN}/input-{UP}.part {IN}/input-{HEX}.tar {IN}/x",
])
def test_input_commands_refused(command):
    assert allowed_argv(command, IN, OUT) is None


def test_a_symlink_as_the_input_name_is_refused(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / f"input-{UP}.part").write_bytes(b"tar")
    os.symlink("/etc/cron.d/evil", inbox / f"input-{HEX}.tar")
    assert allowed_argv(f"mv -f -T {inbox}/input-{UP}.part {inbox}/input-{HEX}.tar", str(inbox), OUT) is None
    (inbox / f"input-{HEX}.tar").unlink()
    assert allowed_argv(f"mv -f -T {inbox}/input-{UP}.part {inbox}/input-{HEX}.tar", str(inbox), OUT) is not None
