"""The admin API and pink-admin commands that quarantine and release one GPU of a worker."""

from __future__ import annotations

from pink import quarantine
from pink.config import Config
from webapp import admin


def test_admins_quarantine_and_release_a_gpu(client, cluster, as_user):
    cluster.add_worker("w1", gpus=2)
    url = "/api/v1/workers/w1/gpus/1/quarantine"
    assert client.post(url, json={"reason": "ECC"}, headers=as_user("alice")).status_code == 403
    resp = client.post(url, json={}, headers=as_user("root"))
    assert resp.status_code == 400 and "reason" in resp.json["error"]
    assert client.post("/api/v1/workers/w1/gpus/7/quarantine", json={"reason": "x"},
                       headers=as_user("root")).status_code == 404
    assert client.post("/api/v1/workers/nope/gpus/0/quarantine", json={"reason": "x"},
                       headers=as_user("root")).status_code == 404
    resp = client.post(url, json={"reason": " fans failing "}, headers=as_user("root"))
    assert resp.status_code == 200 and resp.json == {"worker": "w1", "gpu": 1, "quarantined": True,
                                                     "reason": "fans failing"}
    held = quarantine.admin_quarantines(cluster.store, "w1")
    assert list(held) == [1] and held[1]["by"] == "root" and held[1]["reason"] == "fans failing"
    assert quarantine.reason_text(held[1]) == "admin root: fans failing"
    resp = client.delete(url, headers=as_user("root"))
    assert resp.json == {"worker": "w1", "gpu": 1, "quarantined": False, "released": True}
    assert client.delete(url, headers=as_user("root")).json["released"] is False
    assert quarantine.admin_quarantines(cluster.store, "w1") == {}


def test_the_workers_listing_shows_quarantines_and_the_image_cache(client, cluster, as_user):
    cluster.add_worker("w1", gpus=2, quarantined={"0": "GPU is lost"}, image_cache_bytes=5 << 30)
    worker = client.get("/api/v1/workers", headers=as_user("alice")).json["workers"][0]
    assert worker["quarantined"] == {"0": "GPU is lost"} and worker["image_cache_bytes"] == 5 << 30


def test_pink_admin_gpu_commands(cluster, monkeypatch, capsys, app):
    cluster.add_worker("w1", gpus=2)
    monkeypatch.setattr(admin, "Store", lambda _cfg: cluster.store)
    monkeypatch.setattr(admin.config, "load", lambda _path: Config())
    assert admin.main(["gpu", "quarantine", "w1", "0", "--reason", "Xid 79 twice"]) == 0
    assert quarantine.admin_quarantines(cluster.store, "w1")[0]["reason"] == "Xid 79 twice"
    assert admin.main(["gpu", "quarantine", "w1", "5", "--reason", "x"]) == 1
    assert "has no GPU 5" in capsys.readouterr().err
    assert admin.main(["gpu", "release", "w1", "0"]) == 0
    assert "released" in capsys.readouterr().out
    assert quarantine.admin_quarantines(cluster.store, "w1") == {}
