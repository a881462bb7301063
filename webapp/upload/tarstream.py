"""A push-based tar reader: the framing under the docker image and input checks.

The web server is pushed the upload's bytes, so :meth:`TarStream.feed` takes chunks of any
size at any boundaries, where :mod:`tarfile` would pull them from a file object. The reader
splits the stream into 512-byte blocks, checks each header (checksum, octal or base-256
numbers), applies GNU long names and pax extended headers to the member they describe, and
walks over member data and padding up to the end-of-archive marker.

What the members mean is left to subclasses (:mod:`.safetar`, then :mod:`.image` and
:mod:`.input`), through three hooks: :meth:`TarStream._on_member`
sees every header, :meth:`TarStream._keep` decides from its first byte whether a member asked
for is buffered, and :meth:`TarStream._on_content` receives a buffered member whole. Errors are
:class:`~pink.errors.ImageArchiveError` with a message for a person; after one the reader
stays failed.
"""

from __future__ import annotations

import re
import struct

from pink.errors import ImageArchiveError

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)

#: pax / GNU long-name payloads larger than this are refused (real ones are tiny).
MAX_EXTENDED_HEADER_BYTES = 1 << 20

SAVE_HINT = "upload the output of `docker save IMAGE`"
TRUNCATED_HINT = "the upload was cut short or the file is incomplete; upload the whole file again"

_COMPRESSED_MAGIC = (  # inputs are plain tars; images may be compressed (.unpack)
    (b"\x1f\x8b", "gzip", "gunzip"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
    (b"\xfd7zXZ\x00", "xz", "unxz"),
    (b"BZh", "bzip2", "bunzip2"),
)

# Type flags of members that carry data (regular and contiguous files).
_DATA_TYPES = (b"0", b"\0", b"7")

# Parser states.
_HEADER, _DATA, _PAD, _END1, _DONE = range(5)

# An octal numeric field: digits, space-padded on either side (before the NUL terminator).
_OCTAL = re.compile(rb" *([0-7]*) *")
# Pax records that would change every later member if a global header set them.
_MEMBER_KEYWORDS = ("path", "linkpath", "size")


def _nts(field: bytes) -> bytes:
    """A NUL-terminated string field."""
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


def _parse_number(field: bytes) -> int:
    """Octal ASCII or positive GNU base-256 numeric field; ValueError for anything else.

    Only fields every tar reader reads alike pass. Go's archive/tar (the reader of `docker
    load`) trims leading NULs where tarfile stops at the first one (a size field of a NUL and
    "0000001000" is 512 to Go, 0 to tarfile); int() takes signs (a negative size would send
    this reader backwards), underscores and tabs; Go reads a base-256 field that does not
    start with 0x80 as negative or with bits of its first byte, tarfile refuses it.
    """
    if field and field[0] & 0x80:
        if field[0] != 0x80:
            raise ValueError("negative or ambiguous base-256 number")
        return int.from_bytes(field[1:], "big")
    digits = _OCTAL.fullmatch(_nts(field))
    if digits is None or (not digits.group(1) and field.strip(b" \0")):
        raise ValueError("not an octal number")
    return int(digits.group(1) or b"0", 8)


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = _parse_number(block[148:156])
    except ValueError:
        return False
    # The checksum is computed with its own field taken as eight spaces (8 * 32 = 256).
    unsigned = sum(block) - sum(block[148:156]) + 256
    if stored == unsigned:
        return True
    # Some old tars summed signed chars; tarfile and GNU tar accept both.
    signed = sum(struct.unpack("148b8x356b", block)) + 256
    return stored == signed


def _not_a_tar(head: bytes, detail: str, hint: str) -> ImageArchiveError:
    for magic, name, tool in _COMPRESSED_MAGIC:
        if head.startswith(magic):
            return ImageArchiveError(
                f"not a tar archive: the upload is {name}-compressed; decompress it first "
                f"(`{tool}`) and upload the plain tar, or {hint}"
            )
    return ImageArchiveError(f"not a tar archive: {detail}; {hint}")


def _decode(raw: bytes) -> str:
    # surrogateescape keeps undecodable names distinct instead of failing or merging them.
    return raw.decode("utf-8", "surrogateescape")


def _parse_pax(payload: bytes, where: str) -> list[tuple[str, str]]:
    """The ``(key, value)`` records of a pax extended header."""
    records: list[tuple[str, str]] = []
    pos = 0
    while pos < len(payload):
        if payload[pos] == 0:
            break  # NUL padding after the last record
        space = payload.find(b" ", pos)
        try:
            if space < 0:
                raise ValueError
            length = int(payload[pos:space])
            record = payload[pos : pos + length]
            if length <= space - pos or len(record) != length or not record.endswith(b"\n"):
                raise ValueError
            key, eq, value = record[space - pos + 1 : -1].partition(b"=")
            if not eq:
                raise ValueError
        except ValueError:
            raise ImageArchiveError(
                f"corrupt tar archive: malformed pax extended header {where}"
            ) from None
        records.append((_decode(key), _decode(value)))
        pos += length
    return records


class TarStream:
    """Push-based reader of one tar stream; a subclass implements the hooks.

    Call :meth:`feed` with every chunk in order; at the end of the stream the subclass calls
    :meth:`_check_end`, after which :meth:`feed` is refused.
    """

    #: What errors tell the user to send instead (a subclass names its kind of archive).
    hint = SAVE_HINT

    def __init__(self) -> None:
        self._seen = 0
        self._state = _HEADER
        self._blk = bytearray()
        self._headers_seen = 0
        self._head = b""  # first bytes of the stream, to recognise compressed uploads
        # Current member.
        self._cur_name = ""
        self._cur_size = 0
        self._cur_offset = 0
        self._remaining = 0
        self._sink: bytearray | None = None
        self._sniff = False  # buffering decided by the first data byte
        self._ext_type = b""
        # Extended headers waiting for the member they describe.
        self._pending_pax: dict[str, str] = {}
        self._long_name: str | None = None
        self._long_link: str | None = None
        self._pending_ext_offset = -1
        self._last_member = ""
        self._error: str | None = None  # set by the first ImageArchiveError, in any phase
        self._ended = False

    @property
    def bytes_seen(self) -> int:
        """Bytes fed so far."""
        return self._seen

    # ------------------------------------------------------------------------------- hooks

    def _on_member(
        self, name: str, link: str, typeflag: bytes, size: int, offset: int
    ) -> tuple[str, bool]:
        """Check a member's header (extended headers applied) before any of its data.

        Return the name that messages and :meth:`_on_content` give the member, and whether to
        buffer its data (members of type 0, NUL or 7 carry data; the others none).
        """
        raise NotImplementedError

    def _keep(self, name: str, size: int, first: int) -> bool:
        """The first data byte of a member being buffered: whether to go on buffering it."""
        raise NotImplementedError

    def _on_content(self, name: str, data: bytes) -> None:
        """The whole data of a member that was buffered to its end."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- feeding

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Read the next chunk of the archive; raises ImageArchiveError when it is bad."""
        if self._error is not None:
            raise ImageArchiveError(self._error)
        if self._ended:
            raise RuntimeError("feed() called after finish()")
        mv = memoryview(data)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        if not mv:
            return
        if len(self._head) < 8:
            self._head += bytes(mv[: 8 - len(self._head)])
        try:
            self._feed(mv)
        except ImageArchiveError as exc:
            self._error = str(exc)
            raise

    def _feed(self, mv: memoryview) -> None:
        n = len(mv)
        pos = 0
        while pos < n:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, n - pos)
                if self._sink is not None:
                    if self._sniff:
                        self._sniff = False
                        if not self._keep(self._cur_name, self._cur_size, mv[pos]):
                            self._sink = None
                    if self._sink is not None:
                        self._sink += mv[pos : pos + take]
                pos += take
                self._seen += take
                self._remaining -= take
                if self._remaining == 0:
                    self._end_of_data()
            elif state == _PAD:
                take = min(self._remaining, n - pos)
                pos += take
                self._seen += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _HEADER
            elif state == _DONE:
                rest = mv[pos:].tobytes()
                if rest.count(0) != len(rest):
                    bad = self._seen + len(rest) - len(rest.lstrip(b"\0"))
                    raise ImageArchiveError(
                        f"unexpected data after the end of the tar archive (offset {bad}); "
                        f"{self.hint} and nothing else"
                    )
                self._seen += len(rest)
                pos = n
            else:  # _HEADER or _END1: one whole block is needed
                if not self._blk and n - pos >= BLOCK:
                    block = mv[pos : pos + BLOCK].tobytes()
                    pos += BLOCK
                    self._seen += BLOCK
                else:
                    take = min(BLOCK - len(self._blk), n - pos)
                    self._blk += mv[pos : pos + take]
                    pos += take
                    self._seen += take
                    if len(self._blk) < BLOCK:
                        continue
                    block = bytes(self._blk)
                    self._blk.clear()
                offset = self._seen - BLOCK
                if state == _HEADER:
                    self._on_header(block, offset)
                elif block != _ZERO_BLOCK:
                    raise ImageArchiveError(
                        f"corrupt tar archive: the end-of-archive marker at offset "
                        f"{offset - BLOCK} is followed by more data; {self.hint}"
                    )
                else:
                    self._state = _DONE

    def _on_header(self, block: bytes, offset: int) -> None:
        if block == _ZERO_BLOCK:
            if self._pending_ext_offset >= 0:
                raise ImageArchiveError(
                    f"corrupt tar archive: the extended header at offset "
                    f"{self._pending_ext_offset} is not followed by a member; {self.hint}"
                )
            self._state = _END1
            return
        if not _checksum_ok(block):
            if self._headers_seen == 0:
                raise _not_a_tar(self._head, "the first 512 bytes are not a tar header", self.hint)
            raise ImageArchiveError(
                f"corrupt tar archive: bad header checksum at offset {offset} (after member "
                f"{self._last_member!r}); {TRUNCATED_HINT}"
            )
        self._headers_seen += 1
        typeflag = block[156:157]
        try:
            size = _parse_number(block[124:136])
        except ValueError:
            raise ImageArchiveError(
                f"corrupt tar archive: bad size field in the header at offset {offset}"
            ) from None

        if typeflag in (b"x", b"g", b"L", b"K"):
            if size > MAX_EXTENDED_HEADER_BYTES:
                raise ImageArchiveError(
                    f"tar extended header at offset {offset} is {size} bytes, more than the "
                    f"{MAX_EXTENDED_HEADER_BYTES} accepted; {self.hint}"
                )
            # A global header describes no particular member, so it may precede the end.
            if typeflag != b"g" and self._pending_ext_offset < 0:
                self._pending_ext_offset = offset
            self._ext_type = typeflag
            self._start_data(f"<extended header at offset {offset}>", size, offset, bytearray())
            return

        name_raw = _nts(block[0:100])
        prefix = _nts(block[345:500])
        # Readers that disagree on a member's name: tarfile joins the prefix field of any
        # header, Go's archive/tar that of a GNU header whose atime field is not a number,
        # and only 131 bytes of it in a star header (one with "tar\0" at byte 508).
        if block[257:263] != b"ustar\0" and prefix:
            raise ImageArchiveError(
                f"corrupt tar archive: the non-ustar header at offset {offset} has data in the "
                f"ustar name prefix field, which tar readers read differently; {self.hint}"
            )
        if len(prefix) > 130 and block[508:512] == b"tar\0":
            raise ImageArchiveError(
                f"corrupt tar archive: the header at offset {offset} is a star header with a "
                f"name prefix longer than star's 130 bytes; {self.hint}"
            )
        if prefix:
            name_raw = prefix + b"/" + name_raw
        name = _decode(name_raw)
        link = _decode(_nts(block[157:257]))
        pax = self._pending_pax
        # Go's archive/tar takes a GNU long name over a pax path, tarfile whichever came
        # first: both must say the same.
        for keyword, gnu in (("path", self._long_name), ("linkpath", self._long_link)):
            if gnu is not None and pax.get(keyword, gnu) != gnu:
                raise ImageArchiveError(
                    f"corrupt tar archive: the header at offset {offset} has a GNU long name "
                    f"{gnu!r} and a pax {keyword} {pax[keyword]!r}, and tar readers disagree on "
                    f"which applies; {self.hint}"
                )
        if self._long_name is not None:
            name = self._long_name
        if self._long_link is not None:
            link = self._long_link
        name = pax.get("path", name)
        link = pax.get("linkpath", link)
        if "size" in pax:
            try:
                size = int(pax["size"])
                if size < 0:
                    raise ValueError
            except ValueError:
                raise ImageArchiveError(
                    f"corrupt tar archive: bad pax size {pax['size']!r} for member {name!r}"
                ) from None
        self._pending_pax = {}
        self._long_name = self._long_link = None
        self._pending_ext_offset = -1

        # Old V7 archives mark directories as regular files with a trailing slash. Go's
        # archive/tar reads a directory with no data, tarfile (from the header's own name) a
        # file with data where only a pax or GNU name ends in "/": a size makes that matter.
        if typeflag == b"\0" and name.endswith("/"):
            if size:
                raise ImageArchiveError(
                    f"corrupt tar archive: {name!r} at offset {offset} is a directory (a V7 "
                    f"name ending in '/') with {size} bytes of data; {self.hint}"
                )
            typeflag = b"5"
        name, buffer = self._on_member(name, link, typeflag, size, offset)
        self._last_member = name
        if typeflag in _DATA_TYPES:
            self._start_data(name, size, offset, bytearray() if buffer else None, sniff=buffer)
        else:
            # Links, directories and devices carry no data, whatever their size field says
            # (as Go's archive/tar and Python's tarfile read them).
            self._state = _HEADER

    def _start_data(
        self, name: str, size: int, offset: int, sink: bytearray | None, sniff: bool = False
    ) -> None:
        self._cur_name = name
        self._cur_size = size
        self._cur_offset = offset
        self._remaining = size
        self._sink = sink
        self._sniff = sniff
        if size == 0:
            self._sniff = False
            self._end_of_data()
        else:
            self._state = _DATA

    def _end_of_data(self) -> None:
        sink = self._sink
        self._sink = None
        if self._ext_type:
            self._on_extended(self._ext_type, bytes(sink or b""))
            self._ext_type = b""
        elif sink is not None:
            self._on_content(self._cur_name, bytes(sink))
        pad = -self._cur_size % BLOCK
        if pad:
            self._remaining = pad
            self._state = _PAD
        else:
            self._state = _HEADER

    def _on_extended(self, typeflag: bytes, payload: bytes) -> None:
        where = f"at offset {self._cur_offset}"
        if typeflag in (b"L", b"K"):
            value = _decode(payload.rstrip(b"\0"))
            if not value:  # Go's archive/tar ignores it and keeps the header's own name
                raise ImageArchiveError(
                    f"corrupt tar archive: empty GNU long name {where}; {self.hint}"
                )
            if typeflag == b"L":
                self._long_name = value
            else:
                self._long_link = value
            return
        for key, value in _parse_pax(payload, where):
            if key.startswith("GNU.sparse."):
                raise ImageArchiveError(
                    f"unsupported tar feature: sparse file {where}; {self.hint}"
                )
            if typeflag == b"g":
                # Go's archive/tar ignores global headers: one that renamed, relinked or
                # resized later members would make it read a different archive.
                if key in _MEMBER_KEYWORDS:
                    raise ImageArchiveError(
                        f"unsupported tar feature: the global pax header {where} sets {key!r} "
                        f"for every member after it; {self.hint}"
                    )
            elif value == "":
                self._pending_pax.pop(key, None)  # an empty value deletes the keyword (POSIX)
            else:
                self._pending_pax[key] = value

    # ----------------------------------------------------------------------------- the end

    def _check_end(self) -> None:
        """Raise ImageArchiveError unless the stream ended where a tar archive may end."""
        if self._seen == 0:
            raise ImageArchiveError(f"empty upload: no bytes were received; {self.hint}")
        if self._headers_seen == 0 and self._seen < BLOCK:
            raise _not_a_tar(self._head, f"only {self._seen} bytes, shorter than one tar header", self.hint)
        after = f"after member {self._last_member!r}" if self._last_member else "at its start"
        if self._state == _HEADER:
            if self._blk:
                raise ImageArchiveError(
                    f"archive is truncated: it ends in the middle of a tar header {after} "
                    f"(offset {self._seen}); {TRUNCATED_HINT}"
                )
            raise ImageArchiveError(
                f"archive is truncated: it ends {after} without the end-of-archive marker; "
                f"{TRUNCATED_HINT}"
            )
        if self._state == _DATA:
            got = self._cur_size - self._remaining
            raise ImageArchiveError(
                f"archive is truncated: it ends in the middle of {self._describe_current()} "
                f"(got {got} of {self._cur_size} bytes); {TRUNCATED_HINT}"
            )
        if self._state == _PAD:
            raise ImageArchiveError(
                f"archive is truncated: it ends in the middle of the padding after "
                f"{self._describe_current()}; {TRUNCATED_HINT}"
            )
        if self._state == _END1:
            raise ImageArchiveError(
                f"archive is truncated: it ends in the middle of the end-of-archive marker; "
                f"{TRUNCATED_HINT}"
            )
        self._ended = True

    def _describe_current(self) -> str:
        if self._ext_type:
            return self._cur_name.strip("<>")
        return f"member {self._cur_name!r}"
