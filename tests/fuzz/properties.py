"""The three properties of the tar validator's fuzzing, shared by the CI run
(tests/fuzz/test_tar_fuzz.py) and the full one (``python -m bench.fuzz_tar``).

Each case's bytes reach :class:`~webapp.upload.ImageArchiveChecker` in chunks of drawn sizes,
or through :class:`~webapp.upload.ValidatingReader` reading a source that returns drawn sizes.
The checker may raise :class:`~pink.errors.ImageArchiveError` and nothing else; any other
exception, or no verdict within :data:`HANG_SECONDS`, is a crash. Then:

- ``valid``: a generated archive is accepted, with its config digest, diff_ids, layer paths,
  tags, missing layers and size;
- ``unsafe``: an archive with an unsafe construction in it is refused;
- ``mutated``: a damaged archive is refused, or accepted and still safe as Python's tarfile
  and Go's archive/tar (modelled) read it; and chunking does not change the verdict.
"""

from __future__ import annotations

import contextlib
import signal
import traceback
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

from hypothesis import strategies as st

from pink.errors import ImageArchiveError
from webapp.upload import ImageArchiveChecker, ImageInfo, ValidatingReader

from .archives import Archive, archives
from .attacks import Attack, Mutated, mutated_archives, unsafe_archives
from .oracle import unsafe_reason, views

#: Seconds one check may take before it counts as a hang (real ones take milliseconds).
HANG_SECONDS = 10.0


@dataclass(frozen=True)
class Feed:
    """How the bytes reach the checker: chunk sizes (cycled), and whether through
    ValidatingReader, whose consumer reads ``read_size`` at a time."""

    chunks: tuple[int, ...]
    via_reader: bool = False
    read_size: int = -1


WHOLE = Feed((1 << 62,))

feeds = st.builds(
    Feed,
    chunks=st.tuples(
        st.lists(st.integers(1, 16) | st.sampled_from((511, 512, 513, 1024))
                 | st.integers(1, 70_000), max_size=4),
        st.integers(4096, 1 << 17),  # one large chunk keeps big archives from taking a call a byte
    ).map(lambda t: (*t[0], t[1])),
    via_reader=st.booleans(),
    read_size=st.sampled_from((-1, 512, 65536)) | st.integers(256, 1 << 17),
)


@dataclass(frozen=True)
class Verdict:
    """What the checker said: the image, an ImageArchiveError message, or a crash."""

    info: ImageInfo | None = None
    error: str | None = None
    crash: str | None = None


class _Hang(BaseException):
    """Raised by the alarm in the middle of a check that took too long."""


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise _Hang

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Source:
    """A request body that returns at most the next drawn chunk size per read."""

    def __init__(self, data: bytes, chunks: tuple[int, ...]) -> None:
        self._data, self._chunks, self._pos, self._i = memoryview(data), chunks, 0, 0

    def read(self, n: int = -1) -> bytes:
        size = self._chunks[self._i % len(self._chunks)]
        self._i += 1
        if n >= 0:
            size = min(size, n)
        piece = self._data[self._pos : self._pos + size].tobytes()
        self._pos += len(piece)
        return piece


def _validate(data: bytes, feed: Feed, present: Collection[str]) -> ImageInfo:
    if feed.via_reader:
        reader = ValidatingReader(_Source(data, feed.chunks), len(data),
                                  chunk_size=max(feed.chunks), present_diff_ids=present)
        while reader.read(feed.read_size):
            pass
        assert reader.info is not None
        return reader.info
    checker = ImageArchiveChecker()
    pos, i = 0, 0
    while pos < len(data):
        size = feed.chunks[i % len(feed.chunks)]
        checker.feed(data[pos : pos + size])
        pos, i = pos + size, i + 1
    return checker.finish(present)


def check(data: bytes, feed: Feed, present: Collection[str] = ()) -> Verdict:
    """Run the checker over ``data``; never raises."""
    try:
        with _deadline(HANG_SECONDS):
            return Verdict(info=_validate(data, feed, present))
    except ImageArchiveError as exc:
        return Verdict(error=str(exc))
    except _Hang:
        return Verdict(crash=f"hang: no verdict after {HANG_SECONDS:.0f} s")
    except Exception as exc:  # the property under test: this must never happen
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return Verdict(crash=f"{type(exc).__name__}: {str(exc)[:200]} "
                             f"({where.filename}:{where.lineno})")


@dataclass(frozen=True)
class Outcome:
    """One case's result: whether the checker accepted it, and what was wrong, if anything."""

    accepted: bool
    crash: str | None = None  # an exception other than ImageArchiveError, or a hang
    unsafe: str | None = None  # an unsafe archive accepted
    wrong: str | None = None  # a valid archive refused or misread; a chunking-dependent verdict

    @property
    def problem(self) -> str | None:
        return self.crash or self.unsafe or self.wrong


def _read_as_unsafe(data: bytes) -> str | None:
    for reader, entries in views(data).items():
        reason = unsafe_reason(entries)
        if reason:
            return f"{reader} reads it as unsafe: {reason}"
    return None


@dataclass(frozen=True)
class ValidCase:
    """A valid archive, and how it is fed."""

    archive: Archive
    feed: Feed


@dataclass(frozen=True)
class UnsafeCase:
    """An archive with an unsafe construction, and how it is fed."""

    attack: Attack
    feed: Feed


@dataclass(frozen=True)
class MutatedCase:
    """A damaged archive, and how it is fed."""

    mutated: Mutated
    feed: Feed


def check_valid(case: ValidCase) -> Outcome:
    """Accepted, read as generated; and safe as the other readers read it (else the generator
    is wrong)."""
    a = case.archive
    data = a.encode().data
    verdict = check(data, case.feed, a.present)
    if verdict.crash:
        return Outcome(False, crash=verdict.crash)
    if verdict.error:
        return Outcome(False, wrong=f"valid archive refused: {verdict.error}")
    expected = ImageInfo(a.digest, a.tags, a.diff_ids, a.layer_paths, a.missing, len(data))
    if verdict.info != expected:
        return Outcome(True, wrong=f"read as {verdict.info}, expected {expected}")
    unsafe = _read_as_unsafe(data)
    if unsafe:
        return Outcome(True, wrong=f"the generator made an unsafe archive: {unsafe}")
    return Outcome(True)


def check_unsafe(case: UnsafeCase) -> Outcome:
    """Refused."""
    archive = case.attack.archive
    verdict = check(archive.encode().data, case.feed, archive.present)
    if verdict.crash:
        return Outcome(False, crash=verdict.crash)
    if verdict.info is not None:
        return Outcome(True, unsafe=f"{case.attack.kind}: accepted")
    return Outcome(False)


def check_mutated(case: MutatedCase) -> Outcome:
    """Refused, or accepted and safe as the other readers read it; the same verdict when the
    bytes come whole."""
    data, present = case.mutated.data, case.mutated.archive.present
    verdict, whole = check(data, case.feed, present), check(data, WHOLE, present)
    if verdict.crash or whole.crash:
        return Outcome(False, crash=verdict.crash or whole.crash)
    accepted = verdict.info is not None
    if (verdict.info, verdict.error) != (whole.info, whole.error):
        return Outcome(accepted, wrong=f"chunking changes the verdict: {verdict} vs {whole}")
    unsafe = _read_as_unsafe(data) if accepted else None
    return Outcome(accepted, unsafe=unsafe)


def valid_cases() -> st.SearchStrategy[ValidCase]:
    return st.builds(ValidCase, archives(), feeds)


def unsafe_cases(kind: str | None = None) -> st.SearchStrategy[UnsafeCase]:
    return st.builds(UnsafeCase, unsafe_archives(kind), feeds)


def mutated_cases(json_damage: str | None = None) -> st.SearchStrategy[MutatedCase]:
    return st.builds(MutatedCase, mutated_archives(json_damage), feeds)


@dataclass(frozen=True)
class Property:
    """A property to fuzz: its cases, its check, and the kind of a case (for the report)."""

    name: str
    cases: st.SearchStrategy
    check: Callable[..., Outcome]
    kind: Callable[..., str]


PROPERTIES = (
    Property("valid", valid_cases(), check_valid,
             lambda c: f"{c.archive.layout} {c.archive.fmt}{' thin' if c.archive.missing else ''}"),
    Property("unsafe", unsafe_cases(), check_unsafe, lambda c: c.attack.kind),
    Property("mutated", mutated_cases(), check_mutated,
             lambda c: f"{c.mutated.json_damage} JSON" if c.mutated.json_damage else "bytes"),
)
