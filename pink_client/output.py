"""What the CLI shows: human-readable sizes, durations and times, tables and JSON on stdout,
status messages and transfer progress (tqdm) on stderr."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any, Sequence, TextIO

from tqdm import tqdm


def human_bytes(n: float | int | None, binary: bool = False) -> str:
    """``2.5 GB``; with ``binary`` in powers of 1024 (``16.0 GiB``), as memory sizes are given."""
    if n is None:
        return "-"
    base, units = (1024, ("B", "KiB", "MiB", "GiB", "TiB")) if binary else (1000, ("B", "kB", "MB", "GB", "TB"))
    value = float(n)
    for unit in units:
        if abs(value) < base or unit == units[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= base
    raise AssertionError("unreachable")  # pragma: no cover - the loop always returns


def gpu_use(job: dict) -> str | None:
    """``utilisation mean 91.5%, max 100%, peak memory 74.0 GiB``: the GPU samples of a job's
    run (None: it has none: no GPU, no NVML on its worker, or it has not ended)."""
    if job.get("gpu_util_mean") is None:
        return None
    peak = job.get("gpu_mem_peak_bytes")
    return f"utilisation mean {job['gpu_util_mean']:g}%, max {job.get('gpu_util_max') or 0:g}%" + \
        (f", peak memory {human_bytes(peak, binary=True)}" if peak is not None else "")


def human_duration(seconds: float | int | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_time(t: float | None) -> str:
    if not t:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(t)))


def starts_by(job: dict, now: float, short: bool = False) -> str | None:
    """When a queued job starts at the latest, from the time limits of the jobs ahead of it:
    ``~14:32`` (``short``, for a table) or ``by ~14:32 at the latest (in 25m), if the jobs ahead
    use their full time limits``; ``now``; None when the server does not know (or it is not queued)."""
    at = job.get("estimated_start_at")
    if job.get("state") != "QUEUED" or at is None:
        return None
    if at <= now + 1:
        return "now"
    same_day = time.localtime(at)[:3] == time.localtime(now)[:3]
    clock = "~" + time.strftime("%H:%M" if same_day else "%a %H:%M", time.localtime(at))
    if short:
        return clock
    return f"by {clock} at the latest (in {human_duration(at - now)}), if the jobs ahead use their full time limits"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    for row in (headers, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """The bytes of one transfer attempt: a tqdm bar on stderr when ``bar``, otherwise (when
    ``summary``) a single line on stderr once it has finished."""

    def __init__(
        self, verb: str, total: int | None, *, bar: bool, summary: bool, done: int = 0
    ) -> None:
        self.verb = verb
        self.summary = summary
        self.stream = sys.stderr
        self.moved = 0
        self.t0 = time.monotonic()
        self.bar: tqdm | None = None
        if bar:
            self.bar = tqdm(
                desc=verb, total=total, initial=done, file=self.stream, unit="B",
                unit_scale=True, unit_divisor=1000, mininterval=0.1, dynamic_ncols=True,
            )

    def add(self, n: int) -> None:
        self.moved += n
        if self.bar is not None:
            self.bar.update(n)

    def finish(self) -> None:
        """The transfer is complete: leave the full bar on screen, or print the summary."""
        if self.bar is not None:
            self.bar.close()
        elif self.summary:
            elapsed = time.monotonic() - self.t0
            self.stream.write(
                f"{self.verb} {human_bytes(self.moved)} in {elapsed:.1f} s"
                f" ({self.moved / max(elapsed, 1e-6) / 1e6:.1f} MB/s)\n"
            )
            self.stream.flush()

    def abort(self) -> None:
        """The transfer failed: end the bar's line so the next message starts on a fresh one."""
        if self.bar is not None:
            self.bar.close()


@dataclasses.dataclass
class Ui:
    quiet: bool = False
    fmt: str = "table"

    def info(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def progress(self, verb: str, total: int | None, done: int = 0) -> Progress:
        """A bar only on a terminal and never with -q or -o json; a summary line otherwise."""
        bar = not self.quiet and self.fmt != "json" and isatty(sys.stderr)
        return Progress(verb, total, bar=bar, summary=not self.quiet and not bar, done=done)
