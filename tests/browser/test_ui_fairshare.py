"""The order of a queued job among its user's own jobs (the job page's control, the submit
page's field) and the admins' fair-share table and GPU quota form on the usage page."""

from __future__ import annotations

import pytest

from tests.browser.ui_helpers import PASSWORDS, wait_js
from tests.helpers import TERMINAL, submit, wait_state

pytestmark = pytest.mark.browser
USER = "reorder-ui"


def test_the_job_page_reorders_a_queued_job_among_the_users_own(new_page, ui_cluster, images, screenshot):
    PASSWORDS[USER] = "reorder-ui-password"
    ui_cluster.add_user(USER, password=PASSWORDS[USER])
    api = ui_cluster.api(USER)
    slots = api.get("/api/v1/workers").json()["workers"][0]["max_parallel_jobs"]
    # Sleepers hold every job slot of the one worker, so the two jobs after them wait.
    sleepers = [submit(api, images["sleeper"], output="none").json()["job"]["id"] for _ in range(slots)]
    older, newer = (submit(api, images["writer"], output="none").json()["job"]["id"] for _ in range(2))
    try:
        for job_id in sleepers:
            wait_state(api, job_id, {"RUNNING"})
        page = new_page(USER)
        page.goto(f"{ui_cluster.url}/jobs/{newer}")
        page.wait_for_selector("#reorder:not([hidden])")
        assert page.input_value("#user-priority") == "0"
        page.fill("#user-priority", "5")
        screenshot(page, "job-reorder")
        page.click("#reorder-set")
        wait_js(page, "document.getElementById('facts').textContent.includes(\"Order among the user's jobs5\")")
        assert api.get(f"/api/v1/jobs/{newer}").json()["job"]["queue_position"] == 1
        assert api.get(f"/api/v1/jobs/{older}").json()["job"]["queue_position"] == 2
        page.fill("#user-priority", "101")  # out of range: the browser's own check keeps it
        page.click("#reorder-set")
        assert api.get(f"/api/v1/jobs/{newer}").json()["job"]["user_priority"] == 5
        # Someone else's job page has no control.
        other = new_page("carol")
        other.goto(f"{ui_cluster.url}/jobs/{newer}")
        assert other.locator("#reorder:not([hidden])").count() == 0
        submit_page = new_page(USER)
        submit_page.goto(f"{ui_cluster.url}/submit")
        assert submit_page.get_attribute("#user-priority", "max") == "100"
    finally:
        for job_id in sleepers + [older, newer]:
            api.post(f"/api/v1/jobs/{job_id}/cancel", params={"discard": "1"})
        for job_id in sleepers:
            wait_state(api, job_id, TERMINAL)


def test_admins_set_a_gpu_quota_on_the_usage_page(new_page, ui_cluster):
    ui_cluster.add_user("quota-ui")
    root = ui_cluster.api("root")
    try:
        page = new_page("root")
        page.goto(f"{ui_cluster.url}/usage")
        wait_js(page, "document.getElementById('share-policy').textContent.includes('halve in weight every 7')")
        page.fill("#quota-user", "quota-ui")
        page.fill("#quota-gpus", "3")
        page.click("#quota-set")
        wait_js(page, "[...document.querySelectorAll('#share-table tbody tr')].some(r => "
                      "r.cells[0].textContent === 'quota-ui' && r.cells[3].textContent === '3' "
                      "&& r.cells[4].textContent === 'root')")
        row = next(u for u in root.get("/api/v1/fairshare").json()["users"] if u["user"] == "quota-ui")
        assert row["gpu_quota"] == 3
        page.click("#quota-reset")
        wait_js(page, "![...document.querySelectorAll('#share-table tbody tr')].some(r => "
                      "r.cells[0].textContent === 'quota-ui')")
        page.fill("#quota-user", "nobody-here")
        page.click("#quota-set")
        wait_js(page, "document.getElementById('quota-error').textContent.includes('no user nobody-here')")
    finally:
        root.delete("/api/v1/users/quota-ui/quota")
