"""Streaming check of a job's input: a plain tar archive, hashed as it passes.

An input is whatever files a job should see at ``/in``: a tar archive (ustar, GNU or pax) of
files, directories, symlinks and hardlinks that stay inside it, the same rules as for images
(:mod:`.safetar`). Its id is the sha256 of the archive's bytes as uploaded, so the checker
hashes every byte it is fed; a client that said which id it computed is held to it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pink.errors import ImageArchiveError

from .safetar import SafeTarStream

#: What errors about an input tell the user to send.
INPUT_HINT = "send a plain tar archive of the input folder (`tar -cf input.tar -C FOLDER .`)"


@dataclass(frozen=True)
class InputInfo:
    """What a valid input archive is: its id (``sha256:<hex>`` of its bytes) and size."""

    input_id: str
    total_bytes: int
    members: int


class InputArchiveChecker(SafeTarStream):
    """Push-based checker of one input archive: :meth:`feed` every chunk, then :meth:`finish`.

    ``expected``: the id the client computed ("" when it did not say); :meth:`finish` refuses an
    archive whose bytes hash to another one.
    """

    hint = INPUT_HINT
    #: Inputs are folders of data, with more members than an image has.
    max_members = 250_000

    def __init__(self, expected: str = "", max_metadata_bytes: int = 64 << 20) -> None:
        super().__init__(max_metadata_bytes)
        self._expected = expected
        self._sha256 = hashlib.sha256()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        super().feed(data)
        self._sha256.update(data)

    def finish(self) -> InputInfo:
        """Check the end of the stream, the links and the id; return what the input is."""
        return self._finished(self._result)

    def _result(self) -> InputInfo:
        input_id = f"sha256:{self._sha256.hexdigest()}"
        if self._expected and input_id != self._expected:
            raise ImageArchiveError(
                f"the input's bytes have the id {input_id}, not {self._expected} as the upload "
                f"said: the file changed while it was sent, or the client hashed another one; "
                f"send it again"
            )
        return InputInfo(input_id, self.bytes_seen, len(self._members))
