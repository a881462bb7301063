"""The gate serves ``tail -c +N`` itself with sendfile(2): the same bytes and exit status as tail."""

from __future__ import annotations

import os

from gpu_worker import sshgate

JOB = "0123456789abcdef0123"


def _read(path, offset: int, tmp_path) -> tuple[int, bytes]:
    out = tmp_path / "out"
    with open(out, "wb") as f:
        status = sshgate.send_tail(str(path), offset, f.fileno())
    return status, out.read_bytes()


def test_sends_the_file_from_the_offset_on(tmp_path):
    data = os.urandom(3 * sshgate.SEND_BYTES + 123)  # several sendfile calls
    src = tmp_path / f"{JOB}.tar.zst"
    src.write_bytes(data)
    assert _read(src, 0, tmp_path) == (0, data)
    assert _read(src, sshgate.SEND_BYTES + 7, tmp_path) == (0, data[sshgate.SEND_BYTES + 7:])
    assert _read(src, len(data), tmp_path) == (0, b"")
    assert _read(src, len(data) + 100, tmp_path) == (0, b"")  # as tail: nothing, status 0


def test_a_missing_file_or_a_symlink_fails_with_a_message(tmp_path, capfd):
    assert _read(tmp_path / "absent.log", 0, tmp_path) == (1, b"")
    assert "No such file or directory" in capfd.readouterr().err
    target = tmp_path / "secret"
    target.write_bytes(b"secret")
    link = tmp_path / f"{JOB}.log"
    link.symlink_to(target)
    assert _read(link, 0, tmp_path) == (1, b"")
    assert "cannot open" in capfd.readouterr().err


def test_main_serves_an_allowed_tail_through_stdout(tmp_path, monkeypatch, capfdbinary):
    outbox = tmp_path / "out"
    outbox.mkdir()
    (outbox / f"{JOB}.log").write_bytes(b"line 1\nline 2\n")
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", f"tail -c +8 {outbox}/{JOB}.log")
    assert sshgate.main(["--inbox", str(tmp_path / "in"), "--outbox", str(outbox)]) == 0
    assert capfdbinary.readouterr().out == b"line 2\n"
