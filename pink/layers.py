"""Which image layers a worker holds, for thin uploads (DESIGN §2.2).

``docker load`` skips a layer whose whole *chain* (the layer and every layer under it) the
engine already has, and then does not need its ``layer.tar`` in the archive. A layer's diff_id
alone is not enough: the same diff_id on top of another base is another chain. So a worker
publishes, per image it holds, the chain ids of the image's layers, bottom first; a web server
compares them with the chain ids of the diff_ids a client sends and learns how many bottom
layers that worker can do without.

The worker's heartbeat carries this in ``WorkerInfo.layers``, one string per image:
``"<image id> <chain 1> <chain 2> ..."`` with each chain id shortened to its first 128 bits
(32 hex digits; finding a second diff_id list with the same truncated chain is a 2^128 search).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping, Sequence

DIFF_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
#: Hex digits kept of each chain id.
CHAIN_HEX = 32


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """Docker's ChainIDs: chain(1) = diff(1), chain(n) = sha256(chain(n-1) + " " + diff(n))."""
    chains: list[str] = []
    for diff in diff_ids:
        if chains:
            diff = "sha256:" + hashlib.sha256(f"{chains[-1]} {diff}".encode()).hexdigest()
        chains.append(diff)
    return chains


def _short(chain: str) -> str:
    return chain.rpartition(":")[2][:CHAIN_HEX]


def held_entry(image_id: str, diff_ids: Sequence[str]) -> str:
    """The string a worker publishes for one image it holds."""
    return " ".join([image_id, *(_short(c) for c in chain_ids(diff_ids))])


def parse_held(entries: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """image id -> its shortened chain ids, from a worker's published entries (entries of
    other forms, such as the plain diff_ids older workers published, are ignored)."""
    out: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        image, *chains = entry.split(" ")
        if chains:
            out[image] = tuple(chains)
    return out


def held_prefix(diff_ids: Sequence[str], held: Mapping[str, Sequence[str]],
                images: Collection[str] | None = None) -> int:
    """How many bottom layers of ``diff_ids`` the worker holds as one chain, looking only at
    ``images`` (image ids) when given: a client may leave out only layers of images it may use."""
    wanted = [_short(c) for c in chain_ids(diff_ids)]
    best = 0
    for image, chains in held.items():
        if images is not None and image not in images:
            continue
        n = 0
        for mine, theirs in zip(wanted, chains):
            if mine != theirs:
                break
            n += 1
        best = max(best, n)
    return best
