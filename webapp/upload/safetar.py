"""Members safe to extract: the rules every upload's tar stream is held to, images and inputs.

On top of the framing (:mod:`.tarstream`), :class:`SafeTarStream` refuses absolute names,
``..`` components, names below a symlink, symlinks and hardlinks that lead out of the archive
(also through chains of symlinks, resolved at the end), devices and fifos, and members that
appear twice; it keeps a table of the members seen, whose names count against a memory budget.
The subclasses say which file members they buffer (:meth:`SafeTarStream._wants`) and what a
finished archive holds.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from pink.errors import ImageArchiveError

from .tarstream import TarStream

#: Longest member or link name accepted (Linux PATH_MAX).
MAX_NAME_BYTES = 4096
#: Symlink hops followed while resolving one path (as Linux's MAXSYMLINKS).
MAX_SYMLINK_HOPS = 40

# Member kinds kept in the member table.
FILE, DIR, SYMLINK, HARDLINK = "f", "d", "l", "h"

T = TypeVar("T")


def safe_name(raw: str, what: str) -> str:
    """Normalised archive path, or ImageArchiveError for absolute/``..``/NUL names."""
    subject = f"{what} {raw!r}"
    if "\0" in raw:
        raise ImageArchiveError(f"unsafe archive: {subject} contains a NUL byte")
    if len(raw.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise ImageArchiveError(
            f"unsafe archive: {what} {raw[:80]!r}... is longer than {MAX_NAME_BYTES} bytes"
        )
    if raw.startswith("/"):
        raise ImageArchiveError(f"unsafe archive: {subject} is an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageArchiveError(f"unsafe archive: {subject} contains a '..' component")
    return "/".join(parts)


def _check_symlink(name: str, target: str) -> None:
    """Refuse a symlink whose target, read lexically, leaves the archive."""
    if not target:
        raise ImageArchiveError(f"unsafe archive: symlink {name!r} has an empty target")
    if "\0" in target:
        raise ImageArchiveError(f"unsafe archive: symlink {name!r} target contains a NUL byte")
    if target.startswith("/"):
        raise ImageArchiveError(
            f"unsafe archive: symlink {name!r} points to the absolute path {target!r}"
        )
    depth: list[str] = name.split("/")[:-1]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not depth:
                raise ImageArchiveError(
                    f"unsafe archive: symlink {name!r} -> {target!r} points outside the "
                    f"archive"
                )
            depth.pop()
        else:
            depth.append(part)


class SafeTarStream(TarStream):
    """A tar stream of members that stay inside the archive wherever it is extracted.

    ``max_metadata_bytes`` bounds what is kept in memory: member and link names, and what a
    subclass buffers (:meth:`_reserve`).
    """

    #: Most members an archive may have (the member table lives in memory).
    max_members = 100_000

    def __init__(self, max_metadata_bytes: int = 64 << 20) -> None:
        if max_metadata_bytes <= 0:
            raise ValueError("max_metadata_bytes must be positive")
        super().__init__()
        self._max_metadata = max_metadata_bytes
        self._metadata_used = 0
        # name -> (kind, size, link target or "")
        self._members: dict[str, tuple[str, int, str]] = {}
        self._info = None

    def _wants(self, name: str, size: int) -> bool:
        """Whether to buffer the data of the regular file ``name`` (then :meth:`_keep` decides
        again from its first byte). Nothing, unless a subclass says otherwise."""
        return False

    def _on_member(
        self, raw_name: str, link: str, typeflag: bytes, size: int, offset: int
    ) -> tuple[str, bool]:
        name = safe_name(raw_name, "member")
        if typeflag in (b"3", b"4", b"6"):
            kind_word = {b"3": "character device", b"4": "block device", b"6": "fifo"}[typeflag]
            raise ImageArchiveError(
                f"unsafe archive: member {raw_name!r} is a {kind_word}; only files, directories "
                f"and links are accepted"
            )
        if typeflag not in (b"0", b"\0", b"7", b"1", b"2", b"5"):
            raise ImageArchiveError(
                f"unsupported tar member type {typeflag.decode('latin-1')!r} for {raw_name!r}; "
                f"{self.hint}"
            )
        if name == "":
            # "./" - the archive root itself, as `tar -C dir -c .` writes it.
            if typeflag != b"5":
                raise ImageArchiveError(f"unsafe archive: member {raw_name!r} has an empty name")
            return raw_name, False
        if name in self._members:
            raise ImageArchiveError(
                f"unsafe archive: member {name!r} appears twice; {self.hint}"
            )
        if len(self._members) >= self.max_members:
            raise ImageArchiveError(
                f"the archive has more than {self.max_members} members (files, directories and "
                f"links), more than PINK accepts; {self.hint}"
            )
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if self._members.get(parent, ("",))[0] == SYMLINK:
                raise ImageArchiveError(
                    f"unsafe archive: member {name!r} lies inside {parent!r}, which is a symlink"
                )
        self._reserve(len(name) + len(link), name)

        if typeflag == b"2":
            _check_symlink(name, link)
            self._members[name] = (SYMLINK, 0, link)
            return name, False
        if typeflag == b"1":
            target = safe_name(link, f"hardlink {name!r} target")
            kind = self._members.get(target, ("",))[0]
            if kind == SYMLINK:
                # link(2) links the symlink itself: its target is then read from elsewhere.
                raise ImageArchiveError(
                    f"unsafe archive: hardlink {name!r} points to the symlink {link!r}, which "
                    f"would lead elsewhere from the hardlink's place"
                )
            if kind == "" or kind == DIR:
                raise ImageArchiveError(
                    f"unsafe archive: hardlink {name!r} points to {link!r}, which is not a file "
                    f"earlier in the archive"
                )
            self._members[name] = (HARDLINK, 0, target)
            return name, False
        if typeflag == b"5":
            self._members[name] = (DIR, 0, "")
            return name, False
        self._members[name] = (FILE, size, "")
        return name, self._wants(name, size)

    def _reserve(self, nbytes: int, what: str) -> None:
        self._metadata_used += nbytes
        if self._metadata_used > self._max_metadata:
            raise ImageArchiveError(
                f"archive metadata (member names, and an image's JSON files) exceeds the limit "
                f"of {self._max_metadata} bytes at member {what!r}; {self.hint}"
            )

    # --------------------------------------------------------------------------- finishing

    def _finished(self, result: Callable[[], T]) -> T:
        """Check the end of the stream and every symlink, then return ``result()``, what the
        archive holds (remembered: later calls return it again). The first error is kept and
        raised again, as by :meth:`feed`."""
        if self._error is not None:
            raise ImageArchiveError(self._error)
        if self._info is None:
            try:
                self._check_end()
                self._check_symlinks()
                self._info = result()
            except ImageArchiveError as exc:
                self._error = str(exc)
                raise
        return self._info

    def _check_symlinks(self) -> None:
        # Each symlink was checked lexically as it arrived; chains (a -> ., b -> a/..) can
        # still escape once all links are known, so resolve every one for real.
        for name, (kind, _, _) in self._members.items():
            if kind == SYMLINK:
                self._resolve(name, f"symlink {name!r}")

    def _resolve(self, path: str, what: str) -> str:
        """Follow archive symlinks in ``path``; the resolved name (which may not exist)."""
        todo = list(reversed(path.split("/")))
        done: list[str] = []
        hops = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    raise ImageArchiveError(
                        f"unsafe archive: {what} points outside the archive through other symlinks"
                    )
                done.pop()
                continue
            candidate = "/".join(done + [part])
            entry = self._members.get(candidate)
            if entry is not None and entry[0] == SYMLINK:
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise ImageArchiveError(f"unsafe archive: {what} is part of a symlink loop")
                if entry[2].startswith("/"):  # refused in feed(); never follow one
                    raise ImageArchiveError(f"unsafe archive: {what} points outside the archive")
                todo.extend(reversed(entry[2].split("/")))
                continue
            done.append(part)
        return "/".join(done)
