"""Job arrays in the browser: submit an array from the submit page (a bad range is refused with
the server's words), see it folded into one row of the jobs list, open its page and cancel it
with one button."""

from __future__ import annotations

import pytest

from tests.browser.ui_helpers import PASSWORDS, wait_js

pytestmark = pytest.mark.browser

USER = "arno"


@pytest.fixture
def user(ui_cluster) -> str:
    """A user of this module's own, so other tests' jobs stay out of its lists."""
    if USER not in ui_cluster.tokens:
        PASSWORDS[USER] = f"{USER}-secret-pw"
        ui_cluster.add_user(USER, password=PASSWORDS[USER])
    return USER


def test_an_array_is_submitted_listed_as_one_row_and_cancelled_from_the_page(
        new_page, ui_cluster, fresh_image, user, screenshot):
    tarball = fresh_image("echo index=$PINK_ARRAY_INDEX; sleep 120", "array")
    page = new_page(user)
    page.goto(f"{ui_cluster.url}/submit")
    page.set_input_files("#file", str(tarball))
    page.fill("#name", "sweep")
    page.fill("#array", "5-1")
    page.click("#submit-btn")
    error = page.locator("#result .alert-error")
    error.wait_for(timeout=60_000)
    assert "the range 5-1 goes backwards" in error.inner_text()
    api = ui_cluster.api(user)
    assert api.get("/api/v1/jobs").json()["jobs"] == []

    page.fill("#array", "0-3%1")
    page.click("#submit-btn")
    page.wait_for_selector("#new-array-link", timeout=60_000)
    assert "Array sweep of 4 jobs" in page.locator("#result").inner_text()
    array_id = page.get_attribute("#new-array-link", "href").rsplit("/", 1)[1]
    jobs = api.get("/api/v1/jobs").json()["jobs"]
    assert len(jobs) == 4 and {j["array_id"] for j in jobs} == {array_id}

    # The jobs list: one row for the array, its counts in the state column.
    page.goto(f"{ui_cluster.url}/jobs")
    row = page.locator(f"tr[data-array='{array_id}']")
    row.wait_for()
    assert page.locator("#jobs-body tr").count() == 1
    assert "sweep [array, 4 jobs]" in row.inner_text()
    wait_js(page, f"document.querySelector(\"tr[data-array='{array_id}'] .array-counts\")"
                  ".textContent.includes('1 running')", 90)
    assert "3 queued" in row.locator(".array-counts").inner_text()

    # Its page: the jobs by index, at most one running; one button cancels them all.
    row.locator("a.array-link").click()
    page.wait_for_url(f"{ui_cluster.url}/arrays/{array_id}")
    page.wait_for_selector("#array-body tr")
    assert page.locator("#array-body tr").count() == 4
    assert "at most 1 at once" in page.locator("#array-summary").inner_text()
    screenshot(page, "array")
    page.click("#cancel-array")
    page.click("#confirm-yes")
    wait_js(page, "document.getElementById('array-summary').textContent.startsWith('4 cancelled')", 60)
    assert page.locator("#cancel-array").is_hidden()
    states = {j["state"] for j in api.get(f"/api/v1/arrays/{array_id}").json()["array"]["jobs"]}
    assert states == {"CANCELLED"}
