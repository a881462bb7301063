"""Live job slots (pink.slots): the setting, its validation, the worker's view of it
(gpu_worker.liveslots), the admin API and ``pink-admin worker slots``."""

from __future__ import annotations

import threading

import pytest

from gpu_worker.liveslots import LiveSlots
from pink import slots
from pink.config import Config
from webapp import admin


@pytest.mark.parametrize("given, expected", [(1, 1), (256, 256), ("3", 3), (" 12 ", 12)])
def test_valid_slot_counts(given, expected):
    assert slots.parse(given) == expected


@pytest.mark.parametrize("given", [0, -1, 257, 2.5, "2.5", "", "four", None, True, [2]])
def test_invalid_slot_counts_say_what_is_allowed(given):
    with pytest.raises(ValueError, match="job slots must be a whole number from 1 to 256"):
        slots.parse(given)


def test_a_setting_is_kept_until_reset(cluster):
    assert slots.setting(cluster.store, "w1") is None
    assert slots.set_slots(cluster.store, "w1", "3", by="root") == 3
    entry = slots.setting(cluster.store, "w1")
    assert entry["slots"] == 3 and entry["by"] == "root"
    assert slots.setting(cluster.store, "w10") is None, "one worker's setting is not another's"
    with pytest.raises(ValueError):
        slots.set_slots(cluster.store, "w1", 0, by="root")
    assert slots.setting(cluster.store, "w1")["slots"] == 3, "a refused value loses nothing"
    assert slots.reset(cluster.store, "w1") is True
    assert slots.reset(cluster.store, "w1") is False
    assert slots.setting(cluster.store, "w1") is None


def test_a_value_written_by_hand_that_is_not_a_setting_counts_as_none(cluster):
    key = cluster.store._k("slots", "w1")  # noqa: SLF001
    for raw in (b"3", b"{}", b'{"slots": 0}', b"not json"):
        cluster.store.etcd.call(lambda c, raw=raw: c.put(key, raw), "test")
        assert slots.setting(cluster.store, "w1") is None


def test_the_worker_rereads_its_slots_only_after_a_change(cluster):
    wake = threading.Event()
    live = LiveSlots(cluster.store, "w1", 4, wake)
    assert live.effective() == 4
    slots.set_slots(cluster.store, "w1", 2, by="root")
    assert live.effective() == 4, "no watch event yet: not re-read"
    live._on_change(True)  # noqa: SLF001 - what the watch calls
    assert wake.is_set() and live.effective() == 2 and live.value == 2
    slots.reset(cluster.store, "w1")
    live._on_change(True)  # noqa: SLF001
    assert live.effective() == 4


def test_admins_set_and_reset_slots_through_the_api(client, cluster, as_user):
    cluster.add_worker("w1", slots_configured=2)
    url = "/api/v1/workers/w1/slots"
    assert client.put(url, json={"slots": 3}, headers=as_user("alice")).status_code == 403
    for body in ({}, {"slots": 0}, {"slots": "many"}, {"slots": 1000}, [3]):
        resp = client.put(url, json=body, headers=as_user("root"))
        assert resp.status_code == 400 and "job slots must be a whole number from 1 to 256" in resp.json["error"]
    assert client.put("/api/v1/workers/nope/slots", json={"slots": 3}, headers=as_user("root")).status_code == 404
    resp = client.put(url, json={"slots": 3}, headers=as_user("root"))
    assert resp.status_code == 200
    assert resp.json == {"worker": "w1", "slots": 3, "configured": 2, "by": "root"}
    assert slots.setting(cluster.store, "w1")["slots"] == 3
    assert client.delete(url, headers=as_user("root")).json == {"worker": "w1", "slots": 2, "configured": 2,
                                                                "reset": True}
    assert client.delete(url, headers=as_user("root")).json["reset"] is False
    assert slots.setting(cluster.store, "w1") is None


def test_the_workers_listing_shows_the_slots_in_force_and_configured(client, cluster, as_user):
    cluster.add_worker("w1", max_parallel_jobs=3, slots_configured=4)
    worker = client.get("/api/v1/workers", headers=as_user("alice")).json["workers"][0]
    assert (worker["max_parallel_jobs"], worker["slots_configured"]) == (3, 4)


def test_pink_admin_worker_slots(cluster, monkeypatch, capsys, app):
    cluster.add_worker("w1", slots_configured=4)
    monkeypatch.setattr(admin, "Store", lambda _cfg: cluster.store)
    monkeypatch.setattr(admin.config, "load", lambda _path: Config())
    assert admin.main(["worker", "slots", "w1", "2"]) == 0
    out = capsys.readouterr().out
    assert "w1: 2 job slots (until reset; its configured max_parallel_jobs (4))" in out
    assert slots.setting(cluster.store, "w1")["slots"] == 2
    assert admin.main(["worker", "slots", "w1", "0"]) == 1
    assert "job slots must be a whole number from 1 to 256, not 0" in capsys.readouterr().err
    assert admin.main(["worker", "slots", "w1"]) == 1
    assert "give either a number of job slots or --reset" in capsys.readouterr().err
    assert admin.main(["worker", "slots", "w1", "3", "--reset"]) == 1
    assert admin.main(["worker", "slots", "nope", "3"]) == 1
    assert "no worker 'nope' is registered" in capsys.readouterr().err
    assert slots.setting(cluster.store, "w1")["slots"] == 2, "refusals lose nothing"
    assert admin.main(["worker", "slots", "w1", "--reset"]) == 0
    assert "job slots back to its configured max_parallel_jobs (4)" in capsys.readouterr().out
    assert slots.setting(cluster.store, "w1") is None
    assert admin.main(["worker", "slots", "w1", "--reset"]) == 0
    assert "had no live job-slot setting" in capsys.readouterr().out
