"""Image GC: a worker removes the job images it loaded, least recently used first (DESIGN §2).

Users' images stay in the worker's engine after their job so that a resubmit skips the upload.
They fill the engine's disk over time; this removes them when free space on the engine's data
root falls under ``worker.image_gc_min_free_bytes`` or the images PINK loaded add up to more
than ``worker.image_cache_max_bytes`` (0 switches either rule off).

Never removed:

- an image PINK did not load. Loaded images cannot carry a label, so :class:`LoadRecord` keeps
  a small JSON file in the worker's state folder: image id -> last used (the end of the last
  job that used it here, or its load). Images present before PINK or loaded by hand are never
  in it;
- an image a job of this worker needs: one QUEUED, STARTING, RUNNING or EXPORTING (its queue
  in etcd), one being run, or one being loaded while its upload arrives; and no image at all
  while an upload to the worker is in flight (a thin upload relies on layers of held images).
  Images the GC is about to remove leave the heartbeat's layer list too, so no new thin upload
  counts on them.

The removal is made safe against a resubmit placed on the worker meanwhile (web servers place a
resubmit where the heartbeat says the image is): the daemon first takes the image out of its
heartbeat, then re-reads its queue, and only then deletes what is still not needed. A resubmit
that read the old heartbeat and was queued after that re-read fails with "image ... is no
longer held by worker ...; submit the tarball again" (gpu_worker.runner), never runs something
else. The cache size is the sum of the images' sizes (layers shared between images counted
once per image: an upper bound).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Collection, Mapping

import docker.errors

log = logging.getLogger(__name__)

#: Queue states whose job needs its image on this worker.
NEEDS_IMAGE = ("QUEUED", "STARTING", "RUNNING", "EXPORTING")


def plan_gc(images: Mapping[str, int], needed: Collection[str], usage: Mapping[str, float], free: int,
            cap: int, min_free: int) -> list[str]:
    """The images to remove, oldest use first.

    ``images``: id -> size in bytes of every image the engine holds; ``needed``: ids jobs here
    need; ``usage``: id -> last use of the images PINK loaded (others are never removed);
    ``free``: free bytes on the engine's data root; ``cap``: most bytes PINK's images may take
    (0: no cap); ``min_free``: free bytes to keep (0: no threshold). Removes images until both
    hold again, or none is left that may go.
    """
    candidates = sorted((usage[i], i) for i in images if i in usage and i not in needed)
    cache = sum(size for i, size in images.items() if i in usage)
    chosen: list[str] = []
    for _used, image in candidates:
        over_cap = cap > 0 and cache > cap
        short = min_free > 0 and free < min_free
        if not (over_cap or short):
            break
        chosen.append(image)
        cache -= images[image]
        free += images[image]
    return chosen


#: The record file is rewritten when an image's last use moves by this much (a restart loses
#: at most this much of the order in which images were used).
TOUCH_SAVE_S = 10.0


class LoadRecord:
    """The images PINK loaded on this worker and when each was last used, in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.used: dict[str, float] = {}
        try:
            raw = json.loads(path.read_text())
            self.used = {str(k): float(v) for k, v in raw.get("images", {}).items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            # Forgetting the record only keeps images (they count as foreign): never removes one.
            log.warning("image GC: cannot read %s (%s); images loaded before are kept", path, exc)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".images-")
        with os.fdopen(fd, "w") as f:
            json.dump({"images": self.used}, f)
        os.replace(tmp, self.path)

    def loaded(self, image_ids: Collection[str], at: float | None = None) -> None:
        """Record images PINK loaded (only ids that were not in the engine before the load)."""
        new = [i for i in image_ids if i not in self.used]
        if new:
            for i in new:
                self.used[i] = at or time.time()
            self._save()

    def touch(self, image_id: str, at: float | None = None) -> None:
        """A job that used ``image_id`` ended: it was used now (only images PINK loaded)."""
        if image_id in self.used:
            before = self.used[image_id]
            self.used[image_id] = max(before, at or time.time())
            if self.used[image_id] - before >= TOUCH_SAVE_S:  # not a file write per job
                self._save()

    def keep_only(self, present: Collection[str]) -> None:
        """Forget images no longer in the engine (removed here or by hand)."""
        gone = [i for i in self.used if i not in present]
        if gone:
            for i in gone:
                del self.used[i]
            self._save()


class ImageGC:
    """The daemon's periodic step: pick, hide from the heartbeat, re-check, remove."""

    def __init__(self, record: LoadRecord, engine, min_free: int, cap: int, fallback_dir: str) -> None:
        self.record = record
        self.engine = engine
        self.min_free = min_free
        self.cap = cap
        self.fallback_dir = fallback_dir
        #: Images taken out of the heartbeat because they are about to go.
        self.hidden: set[str] = set()
        self._root: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.min_free or self.cap)

    def data_root_free(self) -> int:
        """Free bytes where the engine keeps images (its DockerRootDir when this host can see
        it, else the inbox's disk)."""
        if self._root is None:
            try:
                root = self.engine.info().get("DockerRootDir") or ""
            except Exception as exc:  # noqa: BLE001 - the engine is away: try again next time
                log.debug("image GC: engine info failed: %s", exc)
                root = ""
            self._root = root if root and os.path.isdir(root) else self.fallback_dir
        return shutil.disk_usage(self._root).free

    def cache_bytes(self, sizes: Mapping[str, int]) -> int:
        """Bytes of the images PINK loaded that the engine holds (an upper bound: see above)."""
        return sum(size for i, size in sizes.items() if i in self.record.used)

    def collect(self, sizes: Mapping[str, int], needed: Callable[[], set[str]],
                publish: Callable[[], None]) -> list[str]:
        """One GC pass over the engine's images (``sizes``: id -> bytes). ``needed()`` re-reads what jobs here need (the queue in etcd, runs,
        preloads); ``publish()`` sends a heartbeat without :attr:`hidden`. Returns the ids
        removed."""
        self.record.keep_only(sizes)
        self.hidden &= set(sizes)
        if not self.enabled:
            return []
        chosen = plan_gc(sizes, needed(), self.record.used, self.data_root_free(), self.cap, self.min_free)
        if not chosen:
            return []
        # Out of the heartbeat first: no web server places a resubmit for it here from now on.
        self.hidden |= set(chosen)
        publish()
        # A resubmit placed before that heartbeat is in the queue now: keep its image.
        still = needed()
        removed = []
        for image in chosen:
            if image in still:
                self.hidden.discard(image)
                continue
            try:
                self.engine.api.remove_image(image, force=False, noprune=False)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                # In use by a container (a job's that ended but is not swept yet): keep it.
                log.info("image GC: keeping %s: %s", image, exc.explanation or exc)
                self.hidden.discard(image)
                continue
            log.info("image GC: removed image %s (%d MiB, last used %s)", image, sizes[image] >> 20,
                     time.strftime("%Y-%m-%d %H:%M", time.gmtime(self.record.used.get(image, 0))))
            removed.append(image)
        self.record.keep_only([i for i in sizes if i not in removed])
        return removed
