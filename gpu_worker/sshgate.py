"""Forced command for the workers' transfer account (``authorized_keys`` ``command=``).

Web servers reach a worker as a non-root account whose key may only do these things:

* ``scp -t <inbox>/<job>.tar``            receive an image upload
* ``tail -c +<N> <outbox>/<job>.<ext>``   read an archive or log from byte N-1 (N >= 1)
* ``rm -f <inbox>/<job>.tar``             drop a failed upload
* ``scp -t <inbox>/input-<upload>.part``  receive a job's input (``<upload>``: 20 hex digits)
* ``rm -f <inbox>/input-<upload>.part``   drop a failed one
* ``mv -f -T <inbox>/input-<upload>.part <inbox>/input-<sha256 hex>.tar``
                                          keep a whole, checked input under its id

Anything else is refused. The command is split with :mod:`shlex` and run with an argument
list (no shell), and every path must be a file directly inside the inbox or outbox whose name
is one of those above and that is not a symbolic link, so nothing a user typed can reach a
shell or leave those folders. ``tail`` is not run: the gate sends the same bytes itself with
``sendfile(2)`` (:func:`send_tail`), page cache to pipe with no copy through user space, where
GNU tail reads 8 KiB and writes 4 KiB at a time (a quarter of a million writes per GiB).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys

JOB_TAR = re.compile(r"[0-9a-f]{20}\.tar")
OUTBOX_FILE = re.compile(r"[0-9a-f]{20}\.(tar\.zst|tar\.gz|tar|log)")
INPUT_PART = re.compile(r"input-[0-9a-f]{20}\.part")
INPUT_TAR = re.compile(r"input-[0-9a-f]{64}\.tar")
#: Bytes per sendfile(2) call when serving a read (``tail``).
SEND_BYTES = 1 << 20


def _file_in(path: str, folder: str, *names: re.Pattern[str]) -> str | None:
    """The absolute path if ``path`` names a file directly in ``folder`` whose name matches one
    of ``names`` and that is no symbolic link (which ``tail``, ``scp`` and ``mv`` would follow
    out of the folder), else None."""
    full = os.path.normpath(os.path.join(folder, path))
    if os.path.dirname(full) != os.path.normpath(folder) or os.path.islink(full):
        return None
    return full if any(n.fullmatch(os.path.basename(full)) for n in names) else None


def allowed_argv(command: str, inbox: str, outbox: str) -> list[str] | None:
    """Translate an SSH command into the argv to execute, or None if it is not allowed."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    match words:
        case ["scp", "-t", path] | ["scp", "-t", "--", path]:
            target = _file_in(path, inbox, JOB_TAR, INPUT_PART)
            return ["scp", "-t", "--", target] if target else None
        case ["tail", "-c", offset, path] if re.fullmatch(r"\+[1-9][0-9]{0,18}", offset):
            target = _file_in(path, outbox, OUTBOX_FILE)
            return ["tail", "-c", offset, "--", target] if target else None
        case ["rm", "-f", path]:
            target = _file_in(path, inbox, JOB_TAR, INPUT_PART)
            return ["rm", "-f", "--", target] if target else None
        case ["mv", "-f", "-T", source, dest]:
            part, kept = _file_in(source, inbox, INPUT_PART), _file_in(dest, inbox, INPUT_TAR)
            return ["mv", "-f", "-T", "--", part, kept] if part and kept else None
    return None


def send_tail(path: str, offset: int, out: int = 1) -> int:
    """What ``tail -c +<offset + 1> path`` writes to ``out``, sent with sendfile(2); the exit
    status tail would have (1, with a message on stderr, when the file cannot be read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        sys.stderr.write(f"pink-ssh-gate: cannot open {path!r} for reading: {exc.strerror}\n")
        return 1
    try:
        while sent := os.sendfile(out, fd, offset, SEND_BYTES):
            offset += sent
    except OSError as exc:
        sys.stderr.write(f"pink-ssh-gate: error reading {path!r}: {exc.strerror}\n")
        return 1
    finally:
        os.close(fd)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inbox", required=True)
    parser.add_argument("--outbox", required=True)
    args = parser.parse_args(argv)
    command = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    run = allowed_argv(command, args.inbox, args.outbox)
    if run is None:
        sys.stderr.write(f"pink-ssh-gate: refused command {command!r}\n")
        return 126
    if run[0] == "tail":
        return send_tail(run[-1], int(run[2]) - 1)
    os.execvp(run[0], run)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
