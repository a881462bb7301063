"""Typed exceptions shared by the web servers, the workers and the CLI.

Every message is meant to be shown to a person: it says what went wrong and, where it can,
what to do next.
"""


class PinkError(Exception):
    """Base class of every error PINK raises on purpose."""


class ConfigError(PinkError):
    """A configuration file or environment variable has a bad or missing value."""


class StoreUnavailable(PinkError):
    """etcd could not be reached (no quorum, all endpoints down, timeout). Transient."""


class StoreError(PinkError):
    """etcd refused a request (a bug or a limit, e.g. too many operations). Permanent."""


class ImageArchiveError(PinkError):
    """The uploaded bytes are not a valid, safe tar archive: a `docker save` archive, or a job's
    input. Permanent."""


class InputUnavailable(PinkError):
    """The worker a job was placed on no longer holds the job's input (it was removed meanwhile)."""


class TransferError(PinkError):
    """Copying bytes to or from a worker over SSH failed. Usually transient."""


class WorkerUnavailable(TransferError):
    """No SSH connection to the worker could be made (down, wrong host key, refused)."""


class ArchiveTooLarge(ImageArchiveError):
    """A compressed upload decompresses to more bytes than an upload may hold. Permanent."""
