"""What happens when a job ends, from the browser: the account page's job-end e-mail setting,
the submit page's e-mail / webhook / retries-if-lost fields, and what the job page shows."""

from __future__ import annotations

import pytest

from tests.browser.ui_helpers import wait_js

pytestmark = pytest.mark.browser
USER = "fred"


def test_email_setting_and_the_submit_fields_for_when_a_job_ends(new_page, ui_cluster, fresh_image):
    api = ui_cluster.api(USER)
    page = new_page(USER)
    page.goto(f"{ui_cluster.url}/account")
    wait_js(page, "!document.getElementById('notify-save').disabled && "
                  "document.getElementById('notify-email').value === ''")
    page.fill("#notify-email", "fred@example.org")
    page.check("#notify-all")
    page.click("#notify-save")
    page.locator("#notify-result .alert-ok").wait_for()
    me = api.get("/api/v1/me").json()
    assert (me["email"], me["notify_all"]) == ("fred@example.org", True)
    page.uncheck("#notify-all")
    page.click("#notify-save")
    wait_js(page, "document.getElementById('notify-result').textContent.includes('fred@example.org.')")
    assert api.get("/api/v1/me").json()["notify_all"] is False

    tarball = fresh_image("echo ended", "reactions")
    page.goto(f"{ui_cluster.url}/submit")
    page.set_input_files("#file", str(tarball))
    page.fill("#name", "announced")
    page.check("#notify")
    page.fill("#retry-lost", "2")
    page.fill("#webhook", "https://elsewhere.example.com/hook")
    page.click("#submit-btn")
    error = page.locator("#result .alert-error")
    error.wait_for(timeout=60_000)
    assert "not on the operator's allow-list" in error.inner_text()
    page.fill("#webhook", "https://hooks.example.org/ci")
    page.click("#submit-btn")
    page.wait_for_selector("#new-job-link", timeout=60_000)
    job_id = page.get_attribute("#new-job-link", "href").rsplit("/", 1)[1]
    job = api.get(f"/api/v1/jobs/{job_id}").json()["job"]
    assert (job["notify"], job["retry_lost"], job["webhook"]) == (True, 2, "https://hooks.example.org/ci")

    page.goto(f"{ui_cluster.url}/jobs/{job_id}")
    wait_js(page, "document.getElementById('facts').textContent.includes('Retries if lost')")
    facts = page.locator("#facts").inner_text()
    assert "e-mail, https://hooks.example.org/ci" in facts
