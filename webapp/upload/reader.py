"""File-like readers of the upload path: the request body, and the validating pass-through.

:class:`SocketBody` reads an upload's HTTP body straight from gunicorn's socket;
:class:`ValidatingReader` wraps such a body, checks the bytes as a ``docker save`` archive (or
an input's tar) while they are read, and is what the SSH transfer reads from. :func:`drain_body`
reads what is left of a body that is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import BinaryIO

from werkzeug.exceptions import ClientDisconnected

from pink.errors import ImageArchiveError

from .image import ImageArchiveChecker, ImageInfo
from .input import InputArchiveChecker, InputInfo
from .unpack import Unpacking


class SocketBody:
    """The request body of an upload read straight from gunicorn's client socket.

    Gunicorn's own body reader gathers every read in BytesIO buffers and copies each MiB several
    times over before the application sees it; on a 1 GiB upload that was the web server's
    largest CPU cost after SSH itself. Here each ``read(n)`` is ``recv_into`` one buffer. The
    bytes gunicorn already holds come first, and its count of what is left of the body is kept
    up to date, so that it finds the body consumed and can keep the connection. :meth:`of`
    returns None (use ``request.stream``) unless the request is exactly what this expects.
    """

    def __init__(self, sock, reader, buffered: bytes, length: int) -> None:
        self._sock = sock
        self._reader = reader  # gunicorn's LengthReader: its .length is what is left
        self._head = memoryview(buffered)
        self._left = length

    @classmethod
    def of(cls, environ: dict, length: int | None) -> "SocketBody | None":
        body, sock = environ.get("wsgi.input"), environ.get("gunicorn.socket")
        reader = getattr(body, "reader", None)
        unreader = getattr(reader, "unreader", None)
        if (length is None or sock is None or type(body).__name__ != "Body"
                or type(reader).__name__ != "LengthReader" or getattr(reader, "length", None) != length
                or not hasattr(unreader, "take_buffered") or not hasattr(unreader, "unread")
                or getattr(body, "buf", None) is None or body.buf.getbuffer().nbytes
                or getattr(sock, "gettimeout", lambda: 1)() not in (None,)):
            return None
        held = unreader.take_buffered()
        if len(held) > length:  # never the case behind nginx, which does not pipeline
            unreader.unread(held[length:])
            held = held[:length]
        return cls(sock, reader, held, length)

    def read(self, n: int | None = -1) -> bytes | bytearray:
        want = self._left if n is None or n < 0 else min(n, self._left)
        if want <= 0:
            return b""
        if self._head:
            piece = self._head[:want].tobytes()
            self._head = self._head[len(piece):]
        else:
            buf = bytearray(want)
            view = memoryview(buf)
            got = 0
            while got < want:
                k = self._sock.recv_into(view[got:], want - got)
                if not k:
                    break  # the client went away: the caller sees a short body
                got += k
            piece = buf if got == want else buf[:got]
        self._left -= len(piece)
        self._reader.length -= len(piece)
        return piece


class ValidatingReader:
    """File-like pass-through that validates an upload while it is read.

    Meant as the source of ``scp.SCPClient.putfo(reader, path, size=length)``: every
    :meth:`read` pulls from ``source``, feeds the checker (an :class:`ImageArchiveChecker`
    unless another is given) and returns the same bytes. When the last byte has been read, the
    checker's ``finish`` runs *before* those bytes are returned, so a bad archive never arrives
    complete on the worker. :attr:`info` then holds the result.
    """

    def __init__(
        self,
        source: BinaryIO,
        length: int,
        checker: ImageArchiveChecker | InputArchiveChecker | Unpacking | None = None,
        chunk_size: int = 1 << 20,
        on_progress: Callable[[int], None] | None = None,
        present_diff_ids: Collection[str] = (),
    ) -> None:
        if length < 0:
            raise ValueError("length must be >= 0")
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self._source = source
        self._length = length
        self.checker = checker if checker is not None else ImageArchiveChecker()
        self._chunk = chunk_size
        self._on_progress = on_progress
        self._present = present_diff_ids
        self._pos = 0
        self.info: ImageInfo | InputInfo | None = None

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        """Bytes handed out so far (scp's putfo tracks progress with it)."""
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        """Up to ``n`` bytes (all that remain when ``n`` < 0); b"" once ``length`` is reached."""
        remaining = self._length - self._pos
        if remaining <= 0:
            if self.info is None:
                self._finish()
            return b""
        want = remaining if n is None or n < 0 else min(n, remaining)
        if want == 0:
            return b""
        parts: list[bytes] = []
        got = 0
        while got < want:
            piece = self._source.read(min(want - got, self._chunk))
            if not piece:
                raise ImageArchiveError(
                    f"upload truncated: got {self._pos + got} of {self._length} bytes (the "
                    f"client sent less than its Content-Length); upload the file again"
                )
            if len(piece) > want - got:
                piece = piece[: want - got]  # a source that ignores the size asked for
            self.checker.feed(piece)
            parts.append(piece)
            got += len(piece)
        self._pos += got
        if self._pos >= self._length:
            self._finish()
        if self._on_progress is not None:
            self._on_progress(self._pos)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _finish(self) -> None:
        # A thin image archive is checked against the layers the worker holds.
        self.info = self.checker.finish(self._present) if self._present else self.checker.finish()


def drain_body(stream, limit: int | None = None) -> bool:
    """Read and drop what is left of a request body; False if more than ``limit`` was left
    (the caller then closes the connection instead)."""
    left = limit
    try:
        while chunk := stream.read(1 << 20):
            if left is not None:
                left -= len(chunk)
                if left < 0:
                    return False
    except (OSError, ClientDisconnected):
        return False
    return True
