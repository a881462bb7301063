"""Job arrays: one image, N jobs, each told its index (docs/jobs.md).

What web servers, workers and the CLI share (no etcd here: the CLI imports it): the
``array=`` syntax (``0-99%8``, ``1,3,5-7``). The store's array keys: :mod:`pink.arraystore`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable

#: Highest index an array may use (indexes are told to jobs; keep them short).
MAX_INDEX = 999_999
_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$")


class ArrayRangeError(ValueError):
    """``array=`` is not a range; the message says what is wrong, for the user."""


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    #: The indexes, ascending, each once.
    indexes: tuple[int, ...]
    #: Most jobs of the array claimed at once (0: no limit).
    limit: int = 0


def parse_array(text: str, max_size: int) -> ArraySpec:
    """``"0-99%8"`` -> indexes 0..99, at most 8 at once; ``"1,3,5-7"`` -> 1, 3, 5, 6, 7.

    Items are separated by commas, each an index or an inclusive range ``A-B`` (A <= B); an
    optional ``%N`` (N >= 1) at the end limits how many run at once. Raises
    :class:`ArrayRangeError` for anything else, for more than ``max_size`` jobs, or an index
    named twice."""
    text = text.strip()
    if not text:
        raise ArrayRangeError("array is empty: give indexes like 0-99, 1,3,5-7 or 0-99%8")
    body, percent, limit_text = text.partition("%")
    limit = 0
    if percent:
        if not limit_text.isdigit() or int(limit_text) < 1:
            raise ArrayRangeError(f"array {text!r}: after % comes how many jobs may run at once, "
                                  "a whole number of at least 1")
        limit = int(limit_text)
    indexes: list[int] = []
    for item in body.split(","):
        match = _ITEM.match(item.strip())
        if not match:
            raise ArrayRangeError(f"array {text!r}: {item.strip()!r} is not an index or a range "
                                  "A-B of indexes (e.g. 0-99, 1,3,5-7, 0-99%8)")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise ArrayRangeError(f"array {text!r}: the range {low}-{high} goes backwards")
        if high > MAX_INDEX:
            raise ArrayRangeError(f"array {text!r}: indexes go up to {MAX_INDEX}")
        if len(indexes) + high - low + 1 > max_size:
            raise ArrayRangeError(f"array {text!r} has more than {max_size} jobs (the most one array "
                                  "may have here)")
        indexes.extend(range(low, high + 1))
    if len(set(indexes)) != len(indexes):
        twice = next(i for i in indexes if indexes.count(i) > 1)
        raise ArrayRangeError(f"array {text!r}: index {twice} is named twice")
    return ArraySpec(tuple(sorted(indexes)), limit)


def counts(states: Iterable[str]) -> dict[str, int]:
    """How many jobs are in each state (only the states that occur), e.g. for ``pink ls``."""
    out: dict[str, int] = {}
    for state in states:
        out[state] = out.get(state, 0) + 1
    return out


__all__ = ["ArrayRangeError", "ArraySpec", "parse_array", "counts", "MAX_INDEX"]
