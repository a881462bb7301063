"""A job's input files from the browser: a folder picked on the submit page goes as a tar the page
builds (POST /api/v1/inputs, with its progress), the job names it and lists its files from /in,
read-only; the job page shows the input. A `.tar` of files is the other way to give one."""

from __future__ import annotations

import io
import tarfile

import pytest

from tests.browser.ui_helpers import wait_js

pytestmark = pytest.mark.browser

USER = "ines"
#: The input folder: nested, a name that is not ASCII and one too long for a plain ustar header.
FILES = {
    "hello.txt": "hello from the input\n",
    "sub/numbers.csv": "1,2,3\n",
    "sub/déjà vu.txt": "not ASCII\n",
    f"long/{'n' * 120}.txt": "a long name\n",
}
#: Lists /in, prints a file, and tries to write there.
COMMAND = ("sh -c 'cd /in && find . -type f | sort && cat hello.txt; "
           "touch /in/new 2>/dev/null && echo in-is-writable || echo in-is-read-only'")


def fill_submit_page(page, url: str, image, picker: str, path, name: str) -> None:
    """The submit page with the image, the input (picked with ``picker``), a name and COMMAND."""
    page.goto(f"{url}/submit")
    page.set_input_files("#file", str(image))
    page.set_input_files(picker, str(path))
    page.locator("#input-chosen").wait_for()
    page.fill("#name", name)
    page.fill("#command", COMMAND)


def finished_log(page, url: str, job_id: str) -> str:
    page.goto(f"{url}/jobs/{job_id}")
    wait_js(page, "document.getElementById('log-status').textContent.startsWith('End of the log')", 90)
    return page.locator("#log").inner_text()


def test_an_input_folder_given_on_the_page_is_read_only_at_in(new_page, ui_cluster, images, screenshot, tmp_path):
    folder = tmp_path / "my-data"
    for name, text in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    page = new_page(USER)
    fill_submit_page(page, ui_cluster.url, images["writer"], "#input-folder", folder, "with-input-folder")
    chosen = page.locator("#input-chosen").inner_text()
    assert "my-data/" in chosen and "4 files" in chosen
    page.evaluate("""() => {
        window.__progress = [];
        document.getElementById('submit-form').addEventListener('upload-progress',
            (e) => window.__progress.push(e.detail));
    }""")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "submit-input-folder", full_page=True)
    page.click("#submit-btn")
    page.wait_for_selector("#new-job-link", timeout=60_000)
    assert "Input: " in page.locator("#result").inner_text()
    sent = [p for p in page.evaluate("window.__progress") if p["what"] == "input"]
    assert sent and sent[-1]["loaded"] == sent[-1]["total"] and sent[-1]["total"] % 10240 == 0
    job_id = page.get_attribute("#new-job-link", "href").rsplit("/", 1)[1]

    log = finished_log(page, ui_cluster.url, job_id)
    for name in FILES:
        assert f"./{name}" in log
    assert "hello from the input" in log and "in-is-read-only" in log
    api = ui_cluster.api(USER)
    job = api.get(f"/api/v1/jobs/{job_id}").json()["job"]
    assert job["state"] == "SUCCEEDED", job
    assert page.locator("#job-input").inner_text() == job["input"]
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "job-input-folder", full_page=True)
    assert api.get(f"/api/v1/inputs/{job['input']}").json()["workers"] == [job["worker"]]

    # The same folder from a fresh page: the same tar, so the same input.
    again = new_page(USER)
    fill_submit_page(again, ui_cluster.url, images["writer"], "#input-folder", folder, "same-folder")
    again.click("#submit-btn")
    again.wait_for_selector("#new-job-link", timeout=60_000)
    second = again.get_attribute("#new-job-link", "href").rsplit("/", 1)[1]
    assert api.get(f"/api/v1/jobs/{second}").json()["job"]["input"] == job["input"]


def test_a_tar_of_files_is_an_input_and_a_compressed_one_is_refused_in_the_page(new_page, ui_cluster, images, tmp_path):
    page = new_page(USER)
    page.goto(f"{ui_cluster.url}/submit")
    gz = tmp_path / "data.tar.gz"
    with tarfile.open(gz, "w:gz") as tf:
        tf.addfile(tarfile.TarInfo("x"))
    page.set_input_files("#input-tar", str(gz))
    assert "gzip-compressed" in page.locator("#input-error .alert-error").inner_text()
    assert page.locator("#input-chosen").is_hidden()

    tar = tmp_path / "data.tar"
    with tarfile.open(tar, "w") as tf:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(FILES["hello.txt"])
        tf.addfile(info, io.BytesIO(FILES["hello.txt"].encode()))
    fill_submit_page(page, ui_cluster.url, images["writer"], "#input-tar", tar, "with-input-tar")
    page.click("#submit-btn")
    page.wait_for_selector("#new-job-link", timeout=60_000)
    job_id = page.get_attribute("#new-job-link", "href").rsplit("/", 1)[1]
    log = finished_log(page, ui_cluster.url, job_id)
    assert "./hello.txt" in log and "hello from the input" in log and "in-is-read-only" in log
