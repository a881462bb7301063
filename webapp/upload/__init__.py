"""The web server's upload path.

An upload's raw HTTP body is read straight from the socket (:class:`SocketBody`), framed as tar
as it streams (:mod:`.tarstream`), checked as a docker image (:class:`ImageArchiveChecker`), and
handed on to the SSH transfer through :class:`ValidatingReader`, which finishes the check
before the last bytes leave.
"""

from .image import ImageArchiveChecker, ImageInfo
from .reader import SocketBody, ValidatingReader

__all__ = ["ImageArchiveChecker", "ImageInfo", "SocketBody", "ValidatingReader"]
