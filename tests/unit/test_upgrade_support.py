"""What rolling upgrades (docs/deploy.md) rely on: ``pink-admin drain`` / ``undrain`` say when
nothing changed (the worker role undrains only a worker it drained itself), and ``/healthz``
tells which release a web server runs."""

from __future__ import annotations

from pink import __version__
from pink.config import Config
from webapp import admin


def test_pink_admin_drain_says_when_the_worker_was_drained_already(cluster, monkeypatch, capsys, app):
    cluster.add_worker("w1")
    monkeypatch.setattr(admin, "Store", lambda _cfg: cluster.store)
    monkeypatch.setattr(admin.config, "load", lambda _path: Config())
    for verb, drained, said in (("drain", True, "worker w1 drained"), ("drain", True, "worker w1 was drained already"),
                                ("undrain", False, "worker w1 undrained"),
                                ("undrain", False, "worker w1 was undrained already")):
        assert admin.main([verb, "w1"]) == 0
        assert capsys.readouterr().out.strip() == said
        assert cluster.store.is_drained("w1") is drained


def test_healthz_tells_the_version(client):
    assert client.get("/healthz").json == {"ok": True, "version": __version__}
