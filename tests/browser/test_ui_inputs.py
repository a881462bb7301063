"""A job's inputs from the browser: the submit page sends a command line, environment variables,
a dataset, a working directory and resources (the Pink-Job-Spec header), the job runs with them,
and the job page shows what it ran with (the values of its variables to its owner only)."""

from __future__ import annotations

import pytest

from tests.browser.ui_helpers import DATASET_FILES, wait_js

pytestmark = pytest.mark.browser

#: Prints what the container got: the variable, PINK's, the dataset, its directory and limits.
COMMAND = ("sh -c 'echo \"$GREETING from $PINK_JOB_ID\"; echo \"datasets=$PINK_DATASETS\"; "
           "cat /data/ui-demo/greeting.txt; echo \"cwd=$(pwd)\"; "
           "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null; "
           "grep /dev/shm /proc/mounts; echo \"cpus=$PINK_CPUS\"'")


def test_a_job_runs_with_the_command_env_dataset_and_resources_given_on_the_page(
        new_page, ui_cluster, fresh_image, screenshot):
    tarball = fresh_image("echo the image's own command", "inputs")
    page = new_page("dana")
    page.goto(f"{ui_cluster.url}/submit")
    page.wait_for_selector("#datasets input[value=ui-demo]")
    assert f"on {ui_cluster.workers[0].name}" in page.locator("#datasets").inner_text()
    page.set_input_files("#file", str(tarball))
    page.fill("#name", "with-inputs")
    page.fill("#command", COMMAND)
    page.fill("#env", "# what the job greets with\nGREETING=hello world\n")
    page.check("#datasets input[value=ui-demo]")
    page.fill("#workdir", "/tmp")
    page.fill("#cpus", "0.5")
    page.fill("#memory", "64m")
    page.fill("#shm", "16m")
    page.evaluate("window.scrollTo(0, 0)")  # a full-page shot of a scrolled page repeats the sticky bar
    screenshot(page, "submit-inputs", full_page=True)

    # A value the server refuses: the message names the field, and nothing is submitted.
    page.fill("#memory", "1k")
    page.click("#submit-btn")
    error = page.locator("#result .alert-error")
    error.wait_for(timeout=60_000)
    assert "memory must be at least 6 MiB" in error.inner_text()
    assert ui_cluster.api("dana").get("/api/v1/jobs").json()["jobs"] == []

    page.fill("#memory", "64m")
    page.click("#submit-btn")
    page.wait_for_selector("#new-job-link", timeout=60_000)
    job_id = page.get_attribute("#new-job-link", "href").rsplit("/", 1)[1]

    page.goto(f"{ui_cluster.url}/jobs/{job_id}")
    wait_js(page, "document.getElementById('log-status').textContent.startsWith('End of the log')", 90)
    log = page.locator("#log").inner_text()
    assert f"hello world from {job_id}" in log and "the image's own command" not in log
    assert "datasets=ui-demo" in log and DATASET_FILES["greeting.txt"].strip() in log
    assert "cwd=/tmp" in log and "cpus=0.5" in log
    assert str(64 << 20) in log and "size=16384k" in log

    job = ui_cluster.api("dana").get(f"/api/v1/jobs/{job_id}").json()["job"]
    assert job["state"] == "SUCCEEDED", job
    assert job["command"][:2] == ["sh", "-c"] and job["env"] == {"GREETING": "hello world"}
    assert (job["datasets"], job["workdir"]) == (["ui-demo"], "/tmp")
    assert (job["cpus"], job["memory_bytes"], job["shm_bytes"]) == (0.5, 64 << 20, 16 << 20)

    # The job page shows what it ran with; the variable's value only on request.
    spec = page.locator("#spec")
    assert "sh -c" in spec.inner_text() and "/data/ui-demo" in spec.inner_text()
    assert "0.5" in spec.inner_text() and "64.0 MiB" in spec.inner_text() and "16.0 MiB" in spec.inner_text()
    assert page.locator("#env-list").inner_text() == "GREETING"
    page.click("#env-toggle")
    assert page.locator("#env-list").inner_text() == "GREETING=hello world"
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "job-inputs", full_page=True)

    # An admin sees the variable's name, never its value.
    assert ui_cluster.api("root").get(f"/api/v1/jobs/{job_id}").json()["job"]["env"] == {"GREETING": "***"}
    admin = new_page("root")
    admin.goto(f"{ui_cluster.url}/jobs/{job_id}")
    admin.wait_for_selector("#env-list")
    assert admin.locator("#env-list").inner_text() == "GREETING"
    assert "owner's only" in admin.locator("#spec").inner_text()
    assert "hello world" not in admin.locator("#spec").inner_text()
