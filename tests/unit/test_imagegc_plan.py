"""Image GC: the pure plan (which images go) and the record of what PINK loaded."""

from __future__ import annotations

import json

from gpu_worker.imagegc import LoadRecord, plan_gc

GB = 1 << 30
IMAGES = {"sha256:old": 2 * GB, "sha256:mid": 3 * GB, "sha256:new": 1 * GB, "sha256:foreign": 5 * GB}
USAGE = {"sha256:old": 100.0, "sha256:mid": 200.0, "sha256:new": 300.0}  # foreign: not PINK's


def test_nothing_goes_while_free_space_and_cap_hold():
    assert plan_gc(IMAGES, set(), USAGE, free=50 * GB, cap=10 * GB, min_free=20 * GB) == []


def test_under_the_threshold_the_least_recently_used_go_first_until_it_holds():
    # 1 GiB short: the oldest alone frees 2 GiB.
    assert plan_gc(IMAGES, set(), USAGE, free=19 * GB, cap=0, min_free=20 * GB) == ["sha256:old"]
    # 4 GiB short: old (2) + mid (3).
    assert plan_gc(IMAGES, set(), USAGE, free=16 * GB, cap=0, min_free=20 * GB) == ["sha256:old", "sha256:mid"]


def test_a_needed_image_is_never_removed_even_when_it_is_the_oldest():
    assert plan_gc(IMAGES, {"sha256:old"}, USAGE, free=19 * GB, cap=0, min_free=20 * GB) == ["sha256:mid"]


def test_a_foreign_image_is_never_removed_however_short_the_disk():
    chosen = plan_gc(IMAGES, {"sha256:mid"}, USAGE, free=0, cap=0, min_free=100 * GB)
    assert chosen == ["sha256:old", "sha256:new"]  # all of PINK's that are not needed; foreign stays


def test_the_cap_counts_only_pinks_images():
    # PINK's images: 6 GiB (the foreign 5 GiB does not count). Cap 4 GiB: the oldest (2) suffices.
    assert plan_gc(IMAGES, set(), USAGE, free=100 * GB, cap=4 * GB, min_free=0) == ["sha256:old"]
    assert plan_gc(IMAGES, set(), USAGE, free=100 * GB, cap=6 * GB, min_free=0) == []
    assert plan_gc(IMAGES, set(), USAGE, free=100 * GB, cap=1 * GB, min_free=0) == ["sha256:old", "sha256:mid"]


def test_both_rules_off_remove_nothing():
    assert plan_gc(IMAGES, set(), USAGE, free=0, cap=0, min_free=0) == []


def test_a_recorded_image_no_longer_in_the_engine_is_not_planned():
    assert plan_gc({"sha256:new": GB}, set(), USAGE, free=0, cap=0, min_free=GB) == ["sha256:new"]


def test_the_record_survives_a_restart_and_forgets_images_that_left(tmp_path):
    path = tmp_path / "state" / "images.json"
    record = LoadRecord(path)
    record.loaded(["sha256:a", "sha256:b"], at=10.0)
    record.touch("sha256:a", at=50.0)
    record.touch("sha256:foreign", at=60.0)  # never loaded by PINK: stays out of the record
    again = LoadRecord(path)
    assert again.used == {"sha256:a": 50.0, "sha256:b": 10.0}
    again.loaded(["sha256:a"], at=99.0)  # loading again does not make it newer than its use
    again.keep_only({"sha256:a"})
    assert json.loads(path.read_text()) == {"images": {"sha256:a": 50.0}}


def test_an_unreadable_record_keeps_every_image(tmp_path, caplog):
    path = tmp_path / "images.json"
    path.write_text("{not json")
    assert LoadRecord(path).used == {}
    assert "images loaded before are kept" in caplog.text


class Engine:
    """The engine calls the GC makes: info (the data root) and remove_image."""

    def __init__(self, root, in_use=()):
        self.root, self.in_use, self.removed = root, set(in_use), []
        self.api = self

    def info(self):
        return {"DockerRootDir": str(self.root)}

    def remove_image(self, image, force=False, noprune=False):
        import docker.errors

        assert force is False
        if image in self.in_use:
            raise docker.errors.APIError("conflict", explanation=f"image {image} is being used by a container")
        self.removed.append(image)


def test_a_resubmit_placed_while_the_gc_picked_its_image_keeps_it(tmp_path):
    from gpu_worker.imagegc import ImageGC

    record = LoadRecord(tmp_path / "images.json")
    record.loaded(["sha256:old", "sha256:mid"], at=1.0)
    engine = Engine(tmp_path)
    gc = ImageGC(record, engine, min_free=1 << 60, cap=0, fallback_dir=str(tmp_path))
    published = []
    needed_calls = []

    def needed():
        # First read: nothing needs them. The re-read after the heartbeat: a resubmit of "mid"
        # was queued meanwhile.
        needed_calls.append(1)
        return set() if len(needed_calls) == 1 else {"sha256:mid"}

    def publish():
        published.append(set(gc.hidden))

    removed = gc.collect({"sha256:old": GB, "sha256:mid": GB, "sha256:foreign": GB}, needed, publish)
    assert published == [{"sha256:old", "sha256:mid"}], "both left the heartbeat before anything was removed"
    assert removed == engine.removed == ["sha256:old"]
    assert gc.hidden == {"sha256:old"} and set(record.used) == {"sha256:mid"}


def test_an_image_a_container_still_uses_is_kept_and_offered_again(tmp_path):
    from gpu_worker.imagegc import ImageGC

    record = LoadRecord(tmp_path / "images.json")
    record.loaded(["sha256:old"], at=1.0)
    gc = ImageGC(record, Engine(tmp_path, in_use={"sha256:old"}), min_free=1 << 60, cap=0,
                 fallback_dir=str(tmp_path))
    assert gc.collect({"sha256:old": GB}, set, lambda: None) == []
    assert gc.hidden == set() and "sha256:old" in record.used
    assert ImageGC(record, Engine(tmp_path), 0, 0, str(tmp_path)).collect({"sha256:old": GB}, set, lambda: None) == []
