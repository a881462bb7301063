"""The admin usage page: the table per user (and per day) of the jobs that ended, with totals;
and that it is for admins only."""

from __future__ import annotations

import pytest

import pink_dev as dev
from tests.browser.ui_helpers import wait_js
from tests.helpers import submit, wait_state

pytestmark = pytest.mark.browser
USER = "usage-ui"


def test_the_usage_page_shows_a_users_jobs_per_user_and_day(new_page, ui_cluster, images):
    ui_cluster.add_user(USER)
    api = ui_cluster.api(USER)
    job = submit(api, images["fail"]).json()["job"]["id"]
    wait_state(api, job, {"FAILED"})
    dev.wait_until(lambda: api.get(f"/api/v1/jobs/{job}").json()["job"]["accounted_at"], 30,
                   "the job to be accounted", interval=0.5)
    page = new_page("root")
    page.goto(f"{ui_cluster.url}/usage")
    page.fill("#usage-user", USER)
    page.click("#usage-form button[type=submit]")
    # The page first shows every user; the filtered answer has this user's row alone.
    wait_js(page, "(rows => rows.length === 1 && rows[0].cells[0].textContent === "
                  f"'{USER}')(document.querySelectorAll('#usage-by-user tbody tr'))")
    row = page.locator("#usage-by-user tbody tr").first
    assert [row.locator("td").nth(i).inner_text() for i in range(3)] == [USER, "1", "failed 1"]
    assert page.locator("#usage-by-user tfoot").inner_text().startswith("Total")
    assert page.locator("#usage-by-day tbody tr").count() == 1
    assert new_page("alice").goto(f"{ui_cluster.url}/usage").status == 403
