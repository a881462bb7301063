"""Compressed image uploads: the plain tar inside a gzip, zstd, xz or bzip2 stream, checked.

``docker load`` takes ``docker save`` archives compressed with any of the four, so PINK does
too, for every client (the browser, the CLI, the raw API): :class:`Unpacking` sits in front of
an :class:`~.image.ImageArchiveChecker`, recognises a compressed upload by its first bytes,
decompresses it as it streams (:mod:`pink.compression`, in pieces of 1 MiB, so memory stays
flat) and feeds the checker the plain tar. A plain tar passes through untouched.

The worker receives the upload's bytes as sent (compressed: the SSH copy needs its size up
front, and the compressed size is what the request said) and decompresses them the same way on
their way to its engine (:mod:`gpu_worker.untag`). What the server checked is what loads.

``max_plain_bytes`` bounds the plain tar: a small upload that would decompress to more (a
"decompression bomb") is refused with :class:`~pink.errors.ArchiveTooLarge` as soon as it
passes the bound, before the last compressed byte reaches the worker, which then loads nothing.
"""

from __future__ import annotations

from collections.abc import Collection

from pink.compression import SNIFF_BYTES, CompressedStreamError, Decompressor, sniff
from pink.errors import ArchiveTooLarge, ImageArchiveError

from .image import ImageArchiveChecker, ImageInfo
from .tarstream import TRUNCATED_HINT


class Unpacking:
    """Push-based: :meth:`feed` every chunk of the upload in order, then :meth:`finish`, as for
    the :class:`ImageArchiveChecker` it feeds (``checker``)."""

    def __init__(self, checker: ImageArchiveChecker | None = None,
                 max_plain_bytes: int | None = None) -> None:
        self.checker = checker if checker is not None else ImageArchiveChecker()
        self._max = max_plain_bytes
        self._head = b""  # the first bytes, until the kind of stream is known
        self._decided = False
        self._d: Decompressor | None = None
        self.plain_bytes = 0
        self._error: ImageArchiveError | None = None  # after one, the upload stays refused

    @property
    def compression(self) -> str:
        """"gzip", "zstd", "xz", "bzip2", or "" for a plain tar (once known)."""
        return self._d.kind if self._d is not None else ""

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._error is not None:
            raise self._error
        try:
            self._feed(data)
        except ImageArchiveError as exc:
            self._error = exc
            raise

    def _feed(self, data: bytes | bytearray | memoryview) -> None:
        if not self._decided:
            self._head += bytes(data)
            if len(self._head) < SNIFF_BYTES:
                return
            data, self._head = self._head, b""
            self._decide(data)
        if self._d is None:
            self.checker.feed(data)
            return
        try:
            for piece in self._d.feed(data):
                self._feed_plain(piece)
        except CompressedStreamError as exc:
            raise ImageArchiveError(f"{exc}; {TRUNCATED_HINT}") from None

    def _decide(self, head: bytes) -> None:
        self._decided = True
        kind = sniff(head)
        if kind:
            self._d = Decompressor(kind)

    def _feed_plain(self, piece: bytes) -> None:
        self.plain_bytes += len(piece)
        if self._max is not None and self.plain_bytes > self._max:
            raise ArchiveTooLarge(
                f"the {self.compression}-compressed archive holds more than {self._max} bytes "
                f"of tar: an upload may hold at most that much once decompressed"
            )
        self.checker.feed(piece)

    def finish(self, present_diff_ids: Collection[str] = ()) -> ImageInfo:
        if not self._decided:  # fewer bytes than a magic number
            head, self._head = self._head, b""
            self._decide(head)
            if head:
                self.feed(head)
        if self._d is not None:
            try:
                self._d.finish()
            except CompressedStreamError as exc:
                raise ImageArchiveError(f"{exc}; {TRUNCATED_HINT}") from None
        return self.checker.finish(present_diff_ids)
