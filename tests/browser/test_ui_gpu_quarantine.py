"""The workers page shows a quarantined GPU and why; an admin quarantines one with the button
(a prompt for the reason) and releases it with the Release button; users see no buttons."""

from __future__ import annotations

import pytest

import pink_dev as dev

pytestmark = pytest.mark.browser


def test_admin_quarantines_and_releases_a_gpu_on_the_workers_page(new_page, ui_cluster, screenshot):
    name = ui_cluster.workers[0].name
    root = ui_cluster.api("root")
    try:
        # One quarantine through the API: the card shows it, with the reason, to everyone.
        r = root.post(f"/api/v1/workers/{name}/gpus/2/quarantine", json={"reason": "fan failing"})
        assert r.status_code == 200, r.text
        plain = new_page("carol")
        plain.goto(f"{ui_cluster.url}/workers")
        card = plain.locator(f"article[data-worker='{name}']")
        card.locator(".gpu.quarantined[data-gpu='2']").wait_for(timeout=20000)
        assert "GPU 2 quarantined: admin root: fan failing" in card.locator(".quarantine-list").inner_text()
        assert card.get_by_role("button", name="Release GPU 2 of " + name).count() == 0
        assert card.get_by_role("button", name="Quarantine GPU 0 of " + name).count() == 0

        page = new_page("root")
        page.goto(f"{ui_cluster.url}/workers")
        card = page.locator(f"article[data-worker='{name}']")
        card.locator(".gpu.quarantined[data-gpu='2']").wait_for(timeout=20000)
        # The admin's Quarantine button asks for the reason.
        page.once("dialog", lambda dialog: dialog.accept("ECC errors seen by hand"))
        card.get_by_role("button", name=f"Quarantine GPU 3 of {name}").click()
        card.locator(".gpu.quarantined[data-gpu='3']").wait_for(timeout=20000)
        dev.wait_until(lambda: "ECC errors seen by hand" in card.locator(".quarantine-list").inner_text(), 20,
                       "the reason on the card")
        screenshot(page, "workers-quarantine")
        card.get_by_role("button", name=f"Release GPU 2 of {name}").click()
        card.get_by_role("button", name=f"Release GPU 3 of {name}").click()
        dev.wait_until(lambda: card.locator(".gpu.quarantined").count() == 0, 20, "no GPU quarantined")
        dev.wait_until(lambda: card.locator(".gpu.free").count() == 4, 20, "all four GPUs free again")
        assert root.get("/api/v1/workers").json()["workers"][0]["quarantined"] == {}
    finally:
        for index in (2, 3):
            root.delete(f"/api/v1/workers/{name}/gpus/{index}/quarantine")
