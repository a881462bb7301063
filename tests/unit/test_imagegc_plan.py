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
