"""The web server's upload path.

An upload's raw HTTP body is read straight from the socket (:class:`SocketBody`), framed as tar
as it streams (:mod:`.tarstream`; a compressed image is decompressed first, :mod:`.unpack`), held to the rules of safe members (:mod:`.safetar`), checked
as a docker image (:class:`ImageArchiveChecker`) or hashed as a job's input
(:class:`InputArchiveChecker`), and handed on to the SSH transfer through
:class:`ValidatingReader`, which finishes the check before the last bytes leave.
"""

from .image import ImageArchiveChecker, ImageInfo
from .input import InputArchiveChecker, InputInfo
from .reader import SocketBody, ValidatingReader, drain_body
from .unpack import Unpacking

__all__ = ["ImageArchiveChecker", "ImageInfo", "InputArchiveChecker", "InputInfo", "SocketBody",
           "Unpacking", "ValidatingReader", "drain_body"]
