"""The estimated start of a queued job on its page and in the jobs list; an admin changes a
worker's job slots live on the workers page (a prompt) and resets them; users see no control."""

from __future__ import annotations

import pytest

import pink_dev as dev
from tests.helpers import TERMINAL, submit, wait_state

pytestmark = pytest.mark.browser


def test_queued_job_shows_its_estimate_and_an_admin_raises_the_slots(new_page, ui_cluster, images, screenshot):
    name = ui_cluster.workers[0].name
    root, dana = ui_cluster.api("root"), ui_cluster.api("dana")
    slots_url = f"/api/v1/workers/{name}/slots"
    jobs = []
    try:
        assert root.put(slots_url, json={"slots": 1}).status_code == 200
        dev.wait_until(lambda: root.get("/api/v1/workers").json()["workers"][0]["max_parallel_jobs"] == 1, 20,
                       "1 slot in the heartbeat")
        jobs.append(submit(dana, images["sleeper"], name="ahead", timeout=900).json()["job"]["id"])
        wait_state(dana, jobs[0], {"RUNNING"}, timeout=60)
        jobs.append(submit(dana, images["sleeper"], name="behind", timeout=60).json()["job"]["id"])
        queued = wait_state(dana, jobs[1], {"QUEUED"})
        assert queued["estimated_start_at"] is not None

        page = new_page("dana")
        page.goto(f"{ui_cluster.url}/jobs/{jobs[1]}")
        facts = page.locator("#facts")
        dev.wait_until(lambda: "if the jobs ahead use their full time limits" in facts.inner_text(), 20,
                       "the estimate on the job page")
        assert "at the latest" in facts.inner_text()
        page.goto(f"{ui_cluster.url}/jobs")
        row = page.locator(f"tr[data-id='{jobs[1]}']")
        row.locator(".eta").wait_for(timeout=20000)
        assert row.locator(".eta").inner_text().startswith("starts by ~")

        # A user sees the slots, no control.
        page.goto(f"{ui_cluster.url}/workers")
        card = page.locator(f"article[data-worker='{name}']")
        dev.wait_until(lambda: "configured 4" in card.locator("dd.slots").inner_text(), 20, "the slots on the card")
        assert card.get_by_role("button", name=f"Change job slots of {name}").count() == 0

        admin = new_page("root")
        admin.goto(f"{ui_cluster.url}/workers")
        card = admin.locator(f"article[data-worker='{name}']")
        card.get_by_role("button", name=f"Change job slots of {name}").wait_for(timeout=20000)
        # A bad value: the server's message, nothing changed.
        admin.once("dialog", lambda dialog: dialog.accept("0"))
        card.get_by_role("button", name=f"Change job slots of {name}").click()
        admin.locator("#workers-error").get_by_text("from 1 to 256").wait_for(timeout=20000)
        admin.once("dialog", lambda dialog: dialog.accept("2"))
        card.get_by_role("button", name=f"Change job slots of {name}").click()
        wait_state(dana, jobs[1], {"RUNNING"}, timeout=30)  # no restart: the worker took the change live
        dev.wait_until(lambda: card.locator("dd.slots").inner_text().startswith("2"), 20, "2 slots on the card")
        screenshot(admin, "workers-slots")
        card.get_by_role("button", name=f"Reset job slots of {name}").click()
        dev.wait_until(lambda: card.locator("dd.slots").inner_text().startswith("4"), 20, "back to the configured 4")
        assert card.get_by_role("button", name=f"Reset job slots of {name}").count() == 0
        assert [dana.get(f"/api/v1/jobs/{j}").json()["job"]["state"] for j in jobs] == ["RUNNING"] * 2
    finally:
        root.delete(slots_url)
        for job_id in jobs:
            dana.post(f"/api/v1/jobs/{job_id}/cancel")
        for job_id in jobs:
            wait_state(dana, job_id, TERMINAL, timeout=60)
