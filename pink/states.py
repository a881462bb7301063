"""Job states and the one table of legal transitions (DESIGN §3)."""

from __future__ import annotations

import enum


class JobState(str, enum.Enum):
    UPLOADING = "UPLOADING"
    QUEUED = "QUEUED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    EXPORTING = "EXPORTING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"
    LOST = "LOST"

    def __str__(self) -> str:
        return self.value

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


S = JobState
TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED, S.LOST})
#: States in which a worker holds a claim on the job (and may be executing it).
CLAIMED = frozenset({S.STARTING, S.RUNNING, S.EXPORTING})

#: The whole state machine. A state missing as a key has no way out (terminal).
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.UPLOADING: frozenset({S.QUEUED, S.FAILED, S.CANCELLED}),
    S.QUEUED: frozenset({S.STARTING, S.FAILED, S.CANCELLED}),
    # STARTING -> TIMED_OUT never happens: the clock starts when the container runs.
    S.STARTING: frozenset({S.RUNNING, S.FAILED, S.CANCELLED, S.LOST}),
    # A job with no archive to make (output mode none) ends from RUNNING in its outcome.
    S.RUNNING: frozenset({S.EXPORTING, S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED, S.LOST}),
    # EXPORTING ends in the outcome the container had; FAILED also covers a failed export.
    S.EXPORTING: frozenset({S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED, S.LOST}),
}


def can_transition(old: JobState, new: JobState) -> bool:
    """True when ``old -> new`` is a legal move of the state machine."""
    return new in TRANSITIONS.get(old, frozenset())
