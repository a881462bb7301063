"""The job page's resubmit with changes and delete (with confirmation), in a real headless
Chromium against the browser layer's cluster (tests/browser/conftest.py)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

import pink_dev as dev
from tests.browser.ui_helpers import wait_js
from tests.helpers import TERMINAL, submit, wait_state

pytestmark = pytest.mark.browser


def _ended_job(api, image: Path, name: str) -> dict:
    job = wait_state(api, submit(api, image, name=name).json()["job"]["id"], TERMINAL)
    # The worker reports the images it holds every few seconds; a resubmit needs it counted.
    dev.wait_until(lambda: api.get(f"/api/v1/images/{job['image_id']}").json()["workers"], 30,
                   "the worker to report the image")
    return job


def test_resubmit_with_a_changed_command_and_environment(new_page, ui_cluster, images, screenshot):
    api = ui_cluster.api("alice")
    old = _ended_job(api, images["writer"], "to-change")
    before = len(api.get("/api/v1/jobs").json()["jobs"])
    page = new_page("alice")
    page.goto(f"{ui_cluster.url}/jobs/{old['id']}")
    page.click("#resubmit")
    page.wait_for_selector("#resubmit-dialog[open]")
    # Prefilled with what it ran with: the image's own command, no variables, 0 GPUs, its limit.
    assert page.input_value("#rs-command") == "" and page.input_value("#rs-env") == ""
    assert (page.input_value("#rs-gpus"), page.input_value("#rs-timeout")) == ("0", str(old["timeout_s"]))
    page.click("#rs-cancel")  # changed my mind: nothing is sent
    assert page.locator("#resubmit-dialog[open]").count() == 0
    page.click("#resubmit")
    page.fill("#rs-command", "sh -c 'echo $GREETING")  # a quote left open
    page.press("#rs-command", "Enter")  # Enter submits the form
    assert "quote that is not closed" in page.locator("#resubmit-error").inner_text()
    assert page.locator("#resubmit-dialog[open]").count() == 1  # still open, to fix it
    page.fill("#rs-command", "sh -c 'echo $GREETING from the page'")
    page.fill("#rs-env", "GREETING=hello")
    page.fill("#rs-timeout", "120")
    screenshot(page, "job-resubmit")
    page.click("#rs-submit")
    page.wait_for_url(lambda url: re.search(r"/jobs/[0-9a-f]{20}$", url) and not url.endswith(old["id"]))
    new_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector("#job-state .badge[data-state=SUCCEEDED]", timeout=60_000)
    wait_js(page, "document.getElementById('log').textContent.includes('hello from the page')")
    new = api.get(f"/api/v1/jobs/{new_id}").json()["job"]
    assert len(api.get("/api/v1/jobs").json()["jobs"]) == before + 1  # one resubmit, the cancelled form sent none
    assert new["command"] == ["sh", "-c", "echo $GREETING from the page"] and new["env"] == {"GREETING": "hello"}
    assert (new["timeout_s"], new["resubmit_of"], new["image_bytes"]) == (120, old["id"], 0)
    assert "nothing (its worker held the image)" in page.locator("#facts").inner_text()


def test_delete_asks_first_then_the_job_and_its_files_are_gone(new_page, ui_cluster, images, screenshot):
    api = ui_cluster.api("alice")
    job = _ended_job(api, images["writer"], "to-delete")
    outbox = Path(ui_cluster.workers[0].outbox)
    files = [outbox / f"{job['id']}.tar.zst", outbox / f"{job['id']}.log"]
    assert all(p.exists() for p in files)
    page = new_page("alice")
    page.goto(f"{ui_cluster.url}/jobs/{job['id']}")
    page.wait_for_selector("#delete:visible")
    page.click("#delete")
    page.wait_for_selector("#confirm[open]")
    assert page.evaluate("document.activeElement.id") == "confirm-no"  # the safe choice has focus
    assert "cannot be undone" in page.locator("#confirm-body").inner_text()
    screenshot(page, "job-delete")
    page.keyboard.press("Escape")  # changed my mind
    time.sleep(0.5)
    assert api.get(f"/api/v1/jobs/{job['id']}").status_code == 200
    page.click("#delete")
    page.click("#confirm-yes")
    page.wait_for_selector("#job-error .alert")
    assert f"You deleted job {job['id']}" in page.locator("#job-error").inner_text()
    assert page.locator("#job-actions").is_hidden()
    gone = api.get(f"/api/v1/jobs/{job['id']}/output")
    assert gone.status_code == 410 and "deleted by alice" in gone.json()["error"]
    dev.wait_until(lambda: not any(p.exists() for p in files), 15, "the worker to remove the job's files")
    # Coming back to the page later says what happened, not "no such job".
    page.reload()
    page.wait_for_selector("#job-error .alert")
    assert f"job {job['id']} was deleted by alice at" in page.locator("#job-error").inner_text()
