"""Compressed ``docker save`` archives: the four kinds ``docker load`` takes, read as a stream.

``docker save IMG | gzip > img.tar.gz`` (or ``| zstd``, ``| xz``, ``| bzip2``) is an archive
``docker load`` accepts. The web server checks the plain tar inside one as it streams, the
worker hands the plain tar to its engine, the CLI reads the image id from it: all through
:class:`Decompressor`, which is pushed compressed bytes and gives back the plain bytes in
pieces of at most ``piece_bytes``, so a small input that decompresses to gigabytes (a
"decompression bomb") never sits in memory: the caller counts the pieces and stops.

The decompressors are kept libraries: :mod:`zlib` (gzip), :mod:`bz2` and :mod:`lzma` from the
standard library, and for zstd Python 3.14's :mod:`compression.zstd` or, before 3.14, its
backport ``backports.zstd`` (the same API as :mod:`bz2` and :mod:`lzma`: ``max_length``,
``eof``, ``needs_input``, ``unused_data``). Concatenated members (``pigz``, ``pbzip2``, ``zstd``
of several frames, ``cat a.gz b.gz``) are one stream, as gzip, zstd and Go's readers read
them; anything else after the last member is refused. Each format's own checksum (gzip CRC-32,
zstd content checksum, xz check) is verified at the end of its member.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Iterable, Iterator

try:  # Python >= 3.14
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the Python version
    from backports import zstd  # type: ignore[import-not-found,no-redef]

GZIP, ZSTD, XZ, BZIP2 = "gzip", "zstd", "xz", "bzip2"
#: First bytes of each kind of stream, and the command that writes a plain tar from it.
MAGIC = (
    (b"\x1f\x8b", GZIP, "gunzip"),
    (b"\x28\xb5\x2f\xfd", ZSTD, "unzstd"),
    (b"\xfd7zXZ\x00", XZ, "unxz"),
    (b"BZh", BZIP2, "bunzip2"),
)
#: Bytes :func:`sniff` needs to tell every kind apart.
SNIFF_BYTES = max(len(m) for m, _, _ in MAGIC)
PIECE_BYTES = 1 << 20

_ZLIB = type(zlib.decompressobj())
_ERRORS = (zlib.error, OSError, EOFError, lzma.LZMAError, zstd.ZstdError, ValueError)


class CompressedStreamError(ValueError):
    """The compressed stream is corrupt or ends early; the message is for a person."""


def sniff(head: bytes) -> str:
    """The kind of compressed stream that starts with ``head`` ("" for none of them)."""
    for magic, kind, _ in MAGIC:
        if head.startswith(magic):
            return kind
    return ""


def _new(kind: str):
    if kind == GZIP:
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header and trailer
    if kind == ZSTD:
        return zstd.ZstdDecompressor()
    if kind == XZ:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    if kind == BZIP2:
        return bz2.BZ2Decompressor()
    raise ValueError(f"unknown compression {kind!r}")


class Decompressor:
    """Push-based decompressor of one ``kind`` of stream: :meth:`feed` every chunk in order
    (each call yields the plain bytes it frees, in pieces of at most ``piece_bytes``; consume
    them before the next call), then :meth:`finish`. Both raise :class:`CompressedStreamError`.
    """

    def __init__(self, kind: str, piece_bytes: int = PIECE_BYTES) -> None:
        self.kind = kind
        self._piece = piece_bytes
        self._d = _new(kind)
        self._started = False  # the current member has been fed bytes
        self._holds_output = False  # the decompressor has plain bytes it has not handed out
        self.members = 0  # members that ended
        self.compressed_bytes = 0

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
        data = bytes(data)
        self.compressed_bytes += len(data)
        while data or self._holds_output:
            if self._d.eof:  # a new member follows the one that ended
                self._d = _new(self.kind)
                self._started = False
            fresh = not self._started
            self._started = True
            try:
                out = self._d.decompress(data, self._piece)
            except _ERRORS as exc:
                raise CompressedStreamError(self._corrupt(fresh, exc)) from None
            if self._d.eof:
                self.members += 1
                data = self._d.unused_data
                self._holds_output = False
            else:
                data = getattr(self._d, "unconsumed_tail", b"")  # zlib hands back what it left
                # zlib may hold output after taking all its input (a long match cut at
                # max_length); the others say so with needs_input.
                self._holds_output = (len(out) == self._piece if isinstance(self._d, _ZLIB)
                                      else not self._d.needs_input)
            if out:
                yield out

    def _corrupt(self, fresh: bool, exc: Exception) -> str:
        if fresh and self.members:
            return (f"unexpected data after the end of the {self.kind} stream (after "
                    f"{self.members} complete member(s), compressed byte ~{self.compressed_bytes}; "
                    f"{exc})")
        return f"corrupt {self.kind} data near compressed byte {self.compressed_bytes} ({exc})"

    def finish(self) -> None:
        """Raise :class:`CompressedStreamError` unless the stream ended at the end of a member."""
        if self._started and not self._d.eof:
            raise CompressedStreamError(
                f"the {self.kind} stream is truncated: it ends in the middle of compressed data "
                f"(after {self.compressed_bytes} bytes)"
            )
        if not self.members:
            raise CompressedStreamError(f"the {self.kind} stream is empty")


def decompressed(chunks: Iterable[bytes], piece_bytes: int = PIECE_BYTES) -> Iterator[bytes]:
    """The plain bytes of ``chunks``: decompressed when they start as a gzip, zstd, xz or bzip2
    stream (whole, or :class:`CompressedStreamError`), passed through as they are otherwise."""
    chunks = iter(chunks)
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= SNIFF_BYTES:
            break
    kind = sniff(head)
    if not kind:
        if head:
            yield head
        yield from chunks
        return
    d = Decompressor(kind, piece_bytes)
    yield from d.feed(head)
    for chunk in chunks:
        yield from d.feed(chunk)
    d.finish()
