"""What a submission asks for: the job spec, parsed and checked before any byte of the image
is read, and the refusal every check raises."""

from __future__ import annotations

from dataclasses import dataclass, field

from pink.errors import PinkError
from pink.layers import DIFF_ID
from pink.model import IMAGE_ID, OUTPUT_MODES, User

#: Most layers a client may name (docker images have tens).
MAX_LAYERS = 500


class SubmitError(PinkError):
    """The submission was refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class JobSpec:
    gpus: int = 0
    timeout_s: int = 3600
    output: str = "full"
    name: str = ""
    priority: int = 0
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
    #: Resources; 0 = the worker's default for this job (see pink.scheduling).
    cpus: float = 0.0
    memory_bytes: int = 0
    shm_bytes: int = 0

    @classmethod
    def parse(cls, args, user: User) -> "JobSpec":
        def number(key: str, default: int, low: int, high: int) -> int:
            raw = args.get(key, "")
            if raw == "":
                return default
            try:
                value = int(raw)
            except ValueError:
                raise SubmitError(400, f"{key} must be a whole number, not {raw!r}") from None
            if not low <= value <= high:
                raise SubmitError(400, f"{key} must be between {low} and {high}")
            return value

        output = args.get("output", "full")
        if output not in OUTPUT_MODES:
            raise SubmitError(400, f"output must be one of {', '.join(OUTPUT_MODES)}")
        name = args.get("name", "")
        if len(name) > 120 or not name.isprintable():
            raise SubmitError(400, "name must be at most 120 printable characters")
        image_id = args.get("image", "")
        if image_id and not IMAGE_ID.match(image_id):
            raise SubmitError(400, "image must look like sha256:<64 hex digits>")
        omitted = tuple(d for d in args.get("omitted_layers", "").split(",") if d)
        if len(omitted) > MAX_LAYERS or not all(DIFF_ID.match(d) for d in omitted):
            raise SubmitError(400, f"omitted_layers must be at most {MAX_LAYERS} comma-separated "
                                   "layer diff_ids (sha256:<64 hex digits>)")
        return cls(
            gpus=number("gpus", 0, 0, 64),
            timeout_s=number("timeout", 3600, 1, 7 * 24 * 3600),
            output=output,
            name=name,
            # Only admins may jump the queue; anyone may politely go last.
            priority=number("priority", 0, -100, 100 if user.admin else 0),
            image_id=image_id,
            resubmit_of=args.get("resubmit_of", "")[:20],
            omitted_layers=omitted,
        )
