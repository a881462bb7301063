"""What a submission asks for: the job spec, parsed and checked before any byte of the image
is read, and the refusal every check raises.

A spec comes as query parameters (scalars) and as the ``Pink-Job-Spec`` header, a JSON object
that may carry any field (docs/api.md); a field given both ways is refused."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pink.arrays import ArrayRangeError, ArraySpec, parse_array
from pink.errors import PinkError
from pink.layers import DIFF_ID
from pink.model import DATASET_NAME, IMAGE_ID, INPUT_ID, MIN_MEMORY_BYTES, User, format_size, parse_size, valid_output

#: Most layers a client may name (docker images have tens).
MAX_LAYERS = 500
#: The request header carrying the spec as JSON, and its largest size.
SPEC_HEADER = "Pink-Job-Spec"
MAX_HEADER_BYTES = 32 << 10
#: Fields that may come either way (``data`` as a query parameter is comma-separated).
EITHER_WAY = ("gpus", "timeout", "output", "name", "priority", "user_priority", "cpus", "memory", "shm_size",
              "workdir", "data", "input", "retry_lost", "notify", "webhook", "array", "array_args")
#: Fields only the header carries (lists and objects do not fit a query parameter).
HEADER_ONLY = ("command", "entrypoint", "env")
HEADER_FIELDS = EITHER_WAY + HEADER_ONLY
#: What the client found out about the image is said in query parameters only. (A job is
#: linked to an earlier one only by POST /jobs/<id>/resubmit, never by what a client claims.)
QUERY_FIELDS = EITHER_WAY + ("image", "omitted_layers")

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: PINK_* variables are what PINK tells the job (docs/jobs.md); a job may not set them.
RESERVED_ENV_PREFIX = "PINK_"
MAX_ENV = 128  # their values are bounded by the header's size
MAX_ARGV = 1024
MAX_WORKDIR = 4096
MAX_DATASETS = 32
MAX_CPUS = 4096
MIN_SHM = 1 << 20
#: Most jobs the parser expands an array to; web.max_array_size is the operator's (lower) limit.
MAX_ARRAY_JOBS = 100_000
#: The most re-runs of a LOST job one submission may ask for (retry_lost=N).
MAX_RETRY_LOST = 10
MAX_URL = 2000


class SubmitError(PinkError):
    """The submission was refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _bad(message: str) -> SubmitError:
    return SubmitError(400, message)


@dataclass(frozen=True)
class JobSpec:
    gpus: int = 0
    timeout_s: int = 3600
    output: str = "full"
    name: str = ""
    priority: int = 0
    #: Orders only this user's own jobs (anyone may set it).
    user_priority: int = 0
    image_id: str = ""
    resubmit_of: str = ""
    #: Bottom layers (diff_ids) a thin archive leaves out because the worker holds them.
    omitted_layers: tuple[str, ...] = ()
    #: argv replacing the image's CMD / ENTRYPOINT (None: the image's own; () entrypoint: none).
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    #: Operator-declared datasets, mounted read-only at /data/NAME.
    datasets: tuple[str, ...] = ()
    #: The input (POST /api/v1/inputs) mounted read-only at /in; "" for none.
    input: str = ""
    #: Resources; 0 = the worker's default for this job (see pink.scheduling).
    cpus: float = 0.0
    memory_bytes: int = 0
    shm_bytes: int = 0
    #: A job array (pink.arrays): its indexes and limit, and with ``array_args`` one command per
    #: job (the indexes are then 0..N-1). None: a single job.
    array: ArraySpec | None = None
    array_args: tuple[tuple[str, ...], ...] = ()
    #: (array id, index, size, limit) of an existing array this one job joins: the retry of
    #: a LOST job of an array (webapp.reactor). Never from a request.
    joins_array: tuple = ()

    @property
    def array_size(self) -> int:
        return len(self.array.indexes) if self.array else 0
    #: Re-run the job if it ends LOST, at most this many times; the LOST job it retries.
    retry_lost: int = 0
    retry_of: str = ""
    #: E-mail the owner when the job ends; POST the end to this URL (checked against the
    #: operator's allow-list by webapp.jobs.submit).
    notify: bool = False
    webhook: str = ""

    @classmethod
    def parse(cls, args, user: User, header: str = "") -> "JobSpec":
        """The spec of a submission: query parameters ``args`` (strings) merged with the JSON
        ``header`` (the raw ``Pink-Job-Spec`` value, "" when absent). Raises SubmitError (400)
        naming the field at the first thing wrong."""
        given = _merge(args, header)
        image_id = _text(given, "image")
        if image_id and not IMAGE_ID.fullmatch(image_id):
            raise _bad("image must look like sha256:<64 hex digits>")
        input_id = _text(given, "input")
        if input_id and not INPUT_ID.fullmatch(input_id):
            raise _bad("input must look like sha256:<64 hex digits> (the id POST /api/v1/inputs answered)")
        omitted = tuple(d for d in _text(given, "omitted_layers").split(",") if d)
        if len(omitted) > MAX_LAYERS or not all(DIFF_ID.fullmatch(d) for d in omitted):
            raise _bad(f"omitted_layers must be at most {MAX_LAYERS} comma-separated "
                       "layer diff_ids (sha256:<64 hex digits>)")
        try:
            output = valid_output(_text(given, "output") or "full")
        except ValueError as exc:
            raise _bad(str(exc)) from None
        name = _text(given, "name")
        if len(name) > 120 or not name.isprintable():
            raise _bad("name must be at most 120 printable characters")
        workdir = _text(given, "workdir")
        if workdir and (not workdir.startswith("/") or "\0" in workdir or len(workdir) > MAX_WORKDIR):
            raise _bad(f"workdir must be an absolute path (starting with /) of at most {MAX_WORKDIR} "
                       "characters, without NUL")
        command = _argv(given, "command", may_be_empty=False)
        array, array_args = _array(given)
        if array_args and command is not None:
            raise _bad("array_args gives each job its command: leave command out")
        # Only admins may jump the queue (it is the worker's, shared by everyone); anyone may
        # politely go last.
        priority = _whole(given, "priority", 0, -100, 100)
        if priority > 0 and not user.admin:
            raise _bad(f"priority {priority}: only admins may raise a job's priority above 0 (it would run "
                       "before other users' jobs); you may lower it, down to -100, to let your other "
                       "jobs go first")
        return cls(
            gpus=_whole(given, "gpus", 0, 0, 64),
            timeout_s=_whole(given, "timeout", 3600, 1, 7 * 24 * 3600),
            output=output,
            name=name,
            priority=priority,
            user_priority=_whole(given, "user_priority", 0, -100, 100),
            image_id=image_id,
            omitted_layers=omitted,
            command=command,
            entrypoint=_argv(given, "entrypoint", may_be_empty=True),
            env=_env(given.get("env", {})),
            workdir=workdir,
            datasets=_datasets(given.get("data", [])),
            input=input_id,
            cpus=_cpus(given.get("cpus", "")),
            memory_bytes=_size(given, "memory", MIN_MEMORY_BYTES),
            shm_bytes=_size(given, "shm_size", MIN_SHM),
            array=array,
            array_args=array_args,
            retry_lost=_whole(given, "retry_lost", 0, 0, MAX_RETRY_LOST),
            notify=_flag(given, "notify"),
            webhook=_webhook(given),
        )


def _merge(args, header: str) -> dict[str, Any]:
    """The query parameters and the header's fields in one dict; query values are strings,
    header values what JSON made of them."""
    given: dict[str, Any] = {}
    for key in HEADER_ONLY:
        if key in args:
            raise _bad(f"{key} is a list or an object: send it in the {SPEC_HEADER} header (JSON)")
    for key in QUERY_FIELDS:
        if key in args:
            given[key] = args.get(key)
    if not header:
        return given
    if len(header) > MAX_HEADER_BYTES:
        raise _bad(f"the {SPEC_HEADER} header is {len(header)} bytes; at most {MAX_HEADER_BYTES}")
    if not header.isascii():
        raise _bad(f"the {SPEC_HEADER} header must be ASCII: escape other characters as \\uXXXX "
                   "(JSON's ensure_ascii)")
    try:
        fields = json.loads(header, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise _bad(f"the {SPEC_HEADER} header is not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise _bad(f"the {SPEC_HEADER} header must be a JSON object")
    unknown = sorted(set(fields) - set(HEADER_FIELDS))
    if unknown:
        raise _bad(f"{unknown[0]} is not a field of the {SPEC_HEADER} header (it takes "
                   f"{', '.join(HEADER_FIELDS)})")
    both = sorted(set(fields) & set(given))
    if both:
        raise _bad(f"{both[0]} is given both as a query parameter and in the {SPEC_HEADER} header; "
                   "give it once")
    given.update(fields)
    return given


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"{key!r} appears twice in one object")
        out[key] = value
    return out


def _text(given: dict[str, Any], key: str) -> str:
    value = given.get(key, "")
    if not isinstance(value, str):
        raise _bad(f"{key} must be a string")
    return value


def _whole(given: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    raw = given.get(key, "")
    if raw == "":
        return default
    try:
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise ValueError
        value = int(raw)
    except ValueError:
        raise _bad(f"{key} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise _bad(f"{key} must be between {low} and {high}")
    return value


def _flag(given: dict[str, Any], key: str) -> bool:
    raw = given.get(key, "")
    if isinstance(raw, bool):
        return raw
    if raw in ("", "0", "false") or (type(raw) is int and raw == 0):
        return False
    if raw in ("1", "true") or (type(raw) is int and raw == 1):
        return True
    raise _bad(f"{key} must be 1 or 0 (true or false), not {raw!r}")


def _webhook(given: dict[str, Any]) -> str:
    url = _text(given, "webhook")
    if url and (len(url) > MAX_URL or not url.isascii() or not url.isprintable() or " " in url
                or not url.startswith(("http://", "https://"))):
        raise _bad(f"webhook must be an http:// or https:// URL of at most {MAX_URL} printable ASCII characters")
    return url


def _cpus(raw: Any) -> float:
    if raw == "":
        return 0.0
    try:
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise ValueError
        value = float(raw)
    except (ValueError, OverflowError):
        raise _bad(f"cpus must be a number, not {raw!r}") from None
    if not 0 < value <= MAX_CPUS:  # also refuses nan
        raise _bad(f"cpus must be more than 0 and at most {MAX_CPUS}")
    return value


def _size(given: dict[str, Any], key: str, minimum: int) -> int:
    raw = given.get(key, "")
    if raw == "":
        return 0
    try:
        value = parse_size(raw)
    except ValueError as exc:
        raise _bad(f"{key}: {exc}") from None
    if value < minimum:
        raise _bad(f"{key} must be at least {format_size(minimum)}, not {format_size(value)}")
    if value >= 1 << 62:
        raise _bad(f"{key} is too large: {value} bytes")
    return value


def _argv(given: dict[str, Any], key: str, may_be_empty: bool) -> tuple[str, ...] | None:
    raw = given.get(key)
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        raise _bad(f"{key} must be a list of strings (an argv, not a shell line)")
    if len(raw) > MAX_ARGV:
        raise _bad(f"{key} has {len(raw)} items; at most {MAX_ARGV}")
    if not raw and not may_be_empty:
        raise _bad(f"{key} must have at least one item (leave it out to run the image's own)")
    if any("\0" in a for a in raw):
        raise _bad(f"{key} must not contain NUL characters")
    return tuple(raw)


def _array(given: dict[str, Any]) -> tuple[ArraySpec | None, tuple[tuple[str, ...], ...]]:
    """``array=`` (indexes, ``%N``) or ``array_args=`` (a JSON list of argv lists, one job each,
    indexes 0..N-1; then ``array=`` may only be ``%N``, the limit)."""
    text = _text(given, "array")
    raw = given.get("array_args")
    if raw is None:
        try:
            return (parse_array(text, MAX_ARRAY_JOBS) if text else None), ()
        except ArrayRangeError as exc:
            raise _bad(str(exc)) from None
    if isinstance(raw, str):  # the query parameter: JSON text
        try:
            raw = json.loads(raw)
        except ValueError:
            raise _bad("array_args must be a JSON list of argv lists (lists of strings)") from None
    if not isinstance(raw, list) or not raw:
        raise _bad("array_args must be a non-empty JSON list of argv lists (lists of strings), one per job")
    if len(raw) > MAX_ARRAY_JOBS:
        raise _bad(f"array_args has {len(raw)} jobs; at most {MAX_ARRAY_JOBS}")
    if not all(isinstance(argv, list) for argv in raw):
        raise _bad("array_args must be a list of argv lists: each item a list of strings")
    argvs = tuple(_argv({"array_args item": argv}, "array_args item", may_be_empty=False) or () for argv in raw)
    limit = 0
    if text:
        if not (text.startswith("%") and text[1:].isdigit() and int(text[1:]) >= 1):
            raise _bad("with array_args, array may only be %N: how many of its jobs may run at once")
        limit = int(text[1:])
    return ArraySpec(tuple(range(len(argvs))), limit), argvs  # type: ignore[misc]


def _env(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise _bad("env must be an object of variable name -> value (strings)")
    if len(raw) > MAX_ENV:
        raise _bad(f"env has {len(raw)} variables; at most {MAX_ENV}")
    for name, value in raw.items():
        if not ENV_NAME.fullmatch(name):
            raise _bad(f"env: {name!r} is not a variable name (letters, digits and _, not "
                       "starting with a digit)")
        if name.startswith(RESERVED_ENV_PREFIX):
            raise _bad(f"env: {name} is reserved: PINK sets the {RESERVED_ENV_PREFIX}* variables itself")
        if not isinstance(value, str):
            raise _bad(f"env: the value of {name} must be a string")
        if "\0" in value:
            raise _bad(f"env: the value of {name} must not contain NUL characters")
    return dict(raw)


def _datasets(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):  # the query parameter: comma-separated
        raw = [n for n in raw.split(",") if n]
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise _bad("data must be a list of dataset names")
    for name in raw:
        if not DATASET_NAME.fullmatch(name):
            raise _bad(f"data: {name!r} is not a dataset name (lowercase letters, digits, '_', '.', "
                       "'-'; at most 63)")
    if len(raw) > MAX_DATASETS:
        raise _bad(f"data names {len(raw)} datasets; at most {MAX_DATASETS}")
    if len(set(raw)) != len(raw):
        twice = next(n for n in raw if raw.count(n) > 1)
        raise _bad(f"data: {twice} is named twice")
    return tuple(raw)
