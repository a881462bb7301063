"""Output modes from the browser: the submit page sends the mode picked (a bad directory is
refused with the server's message), the job page shows the mode and the archive's top
entries; a cancel with *Discard its files* keeps nothing."""

from __future__ import annotations

import pytest

from tests.browser.ui_helpers import wait_js
from tests.helpers import TERMINAL, submit, wait_state

pytestmark = pytest.mark.browser

WRITES = "mkdir -p /out/sub; echo result > /out/r.txt; head -c 5000 /dev/zero > /out/sub/zeros; echo done"


def test_submit_with_one_output_directory_and_see_its_entries(new_page, ui_cluster, fresh_image, screenshot):
    tarball = fresh_image(WRITES, "outputs")
    page = new_page("ines")
    page.goto(f"{ui_cluster.url}/submit")
    page.set_input_files("#file", str(tarball))
    page.fill("#name", "out-dir")
    page.check("input[name=output][value=path]")
    page.fill("#output-dir", "/in")  # the job's input lives there: the server says no
    page.click("#submit-btn")
    error = page.locator("#result .alert-error")
    error.wait_for(timeout=60_000)
    assert "path:/in is not allowed" in error.inner_text()
    assert not [j for j in ui_cluster.api("ines").get("/api/v1/jobs").json()["jobs"] if j["name"] == "out-dir"]

    page.fill("#output-dir", "/out")
    page.click("#submit-btn")
    page.wait_for_selector("#new-job-link", timeout=60_000)
    job_id = page.get_attribute("#new-job-link", "href").rsplit("/", 1)[1]
    job = wait_state(ui_cluster.api("ines"), job_id, TERMINAL, timeout=90)
    assert (job["state"], job["output"]) == ("SUCCEEDED", "path:/out"), job

    page.goto(f"{ui_cluster.url}/jobs/{job_id}")
    page.wait_for_selector("#output-entries li")
    assert "only /out (.tar.zst)" in page.locator("#facts").inner_text()
    entries = page.locator("#output-entries li").all_inner_texts()
    assert entries == ["/out/sub (dir, 5.0 KB)", "/out/r.txt (file, 7 B)"]
    assert page.locator("#download").is_visible()
    wait_js(page, "document.getElementById('log-status').textContent.startsWith('End of the log')", 30)
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "job-output-entries", full_page=True)


def test_cancel_with_discard_keeps_no_files(new_page, ui_cluster, images):
    api = ui_cluster.api("ines")
    r = submit(api, images["sleeper"], name="discard-me", timeout=600, output="changes")
    assert r.status_code == 201, r.text
    job_id = r.json()["job"]["id"]
    page = new_page("ines")
    page.goto(f"{ui_cluster.url}/jobs/{job_id}")
    page.wait_for_selector("#job-state .badge[data-state=RUNNING]", timeout=60_000)
    page.check("#discard")
    page.click("#cancel")
    assert "What it wrote is thrown away." in page.locator("#confirm-body").inner_text()
    page.click("#confirm-yes")
    page.wait_for_selector("#job-state .badge[data-state=CANCELLED]")
    job = wait_state(api, job_id, TERMINAL)
    assert (job["state"], job["discard_output"], job["output_bytes"]) == ("CANCELLED", True, 0)
    wait_js(page, "document.getElementById('output').textContent.includes('threw its files away')")
