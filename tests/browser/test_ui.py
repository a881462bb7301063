"""The browser UI in a real headless Chromium against a real cluster behind nginx (TLS).

Each test uses its own user(s) and jobs, so tests may run in any order on the shared cluster.
Screenshots of the main pages go to docs/screenshots/ (shown in the README).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
import time
from pathlib import Path

import pytest
import requests

import pink_dev as dev
from tests.helpers import TERMINAL, archive_members, submit, wait_state
from tests.browser.ui_helpers import PASSWORDS, login, wait_js

pytestmark = pytest.mark.browser

#: Upload speed the browser is held to (bytes/s) so a 2 MB image shows many progress events.
THROTTLE = 1_000_000


def throttle_uploads(page, bytes_per_s: int = THROTTLE) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": bytes_per_s})


def record_progress(page) -> None:
    page.evaluate("""() => {
        window.__progress = [];
        document.getElementById('submit-form').addEventListener('upload-progress',
            (e) => window.__progress.push(e.detail));
    }""")


def inbox_files(cluster) -> list[str]:
    return sorted(p.name for p in Path(cluster.workers[0].inbox).iterdir())


# --------------------------------------------------------------------------- log in


def test_login_by_keyboard_sets_a_safe_session_cookie_and_logout_ends_it(new_page, ui_cluster, screenshot):
    page = new_page()
    page.goto(f"{ui_cluster.url}/jobs")
    assert "/login" in page.url  # pages send strangers to the login form, and back afterwards
    screenshot(page, "login")
    # Wrong password: an error, no session.
    page.fill("#username", "alice")
    page.fill("#password", "wrong password")
    page.keyboard.press("Enter")
    assert page.locator(".alert-error").inner_text() == "Wrong user name or password."
    # By keyboard only: the user name is kept and the password field has the focus (autofocus
    # is applied when the browser next renders, so wait for it rather than read it at once).
    page.wait_for_function("document.activeElement && document.activeElement.id === 'password'", timeout=5000)
    page.keyboard.type(PASSWORDS["alice"])
    page.keyboard.press("Enter")
    page.wait_for_url(f"{ui_cluster.url}/jobs")
    assert page.locator(".whoami").inner_text().strip() == "alice"
    cookie = next(c for c in page.context.cookies() if c["name"] == "pink_session")
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.click("form.logout button")
    page.wait_for_url(re.compile(r".*/login$"))
    page.goto(f"{ui_cluster.url}/account")
    assert "/login" in page.url


# --------------------------------------------------------------------------- submit → live → download


WRITER = "echo hello; mkdir -p /out; echo result-42 > /out/result.txt"


def test_upload_shows_progress_and_the_jobs_page_sees_success_live_then_download(
        new_page, ui_cluster, fresh_image, screenshot, tmp_path):
    tarball = fresh_image(WRITER, "resnet50")
    jobs_page = new_page("alice")
    jobs_page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads
    jobs_page.wait_for_selector("#live[data-state=live]")

    page = new_page("alice")
    page.goto(f"{ui_cluster.url}/submit")
    throttle_uploads(page)
    record_progress(page)
    page.set_input_files("#file", str(tarball))
    page.fill("#name", "train-resnet50")
    page.click("#submit-btn")
    wait_js(page, "window.__progress.length >= 3 && document.getElementById('progress').value > 20")
    label = page.locator("#progress-label").inner_text()
    assert re.search(r"of 2\.\d MB · [\d.]+ (KB|MB)/s · [\d.]+s left", label), label
    screenshot(page, "submit-progress")
    page.wait_for_selector("#new-job-link", timeout=60_000)
    progress = page.evaluate("window.__progress")
    size = tarball.stat().st_size
    loaded = [p["loaded"] for p in progress]
    assert len(progress) >= 5 and loaded == sorted(loaded) and loaded[-1] == size == progress[-1]["total"]
    job_id = page.get_attribute("#new-job-link", "href").rsplit("/", 1)[1]

    # The jobs page, opened before the upload, shows the job and its success by itself.
    row = jobs_page.locator(f"tr[data-id='{job_id}']")
    row.locator(".badge[data-state=SUCCEEDED]").wait_for(timeout=60_000)
    assert jobs_page.evaluate("window.__sameDocument") is True
    assert row.locator(".job-link").inner_text() == "train-resnet50"
    assert row.locator("td[data-label=Image]").inner_text() == "2.0 MB"

    # The job page: timeline, exit code, log, and the archive with its size and sha256.
    page.goto(f"{ui_cluster.url}/jobs/{job_id}")
    page.wait_for_selector("#download")
    wait_js(page, "document.getElementById('log-status').textContent.startsWith('End of the log')")
    assert "hello" in page.locator("#log").inner_text()
    states = page.locator("#timeline .badge").all_inner_texts()
    assert states == ["Uploading", "Queued", "Starting", "Running", "Exporting", "Succeeded"]
    job = ui_cluster.api("alice").get(f"/api/v1/jobs/{job_id}").json()["job"]
    assert page.locator("#sha256").inner_text() == job["output_sha256"]
    assert page.locator("#expires").inner_text().startswith("The worker keeps it until ")
    screenshot(page, "job", full_page=True)
    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename == f"pink-{job_id}.tar.zst"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    data = saved.read_bytes()
    assert len(data) == job["output_bytes"] and hashlib.sha256(data).hexdigest() == job["output_sha256"]
    assert archive_members(data)["out/result.txt"] == b"result-42\n"


def test_cancel_an_upload_leaves_no_job_waiting(new_page, ui_cluster, fresh_image):
    tarball = fresh_image(WRITER)
    page = new_page("alice")
    page.goto(f"{ui_cluster.url}/submit")
    throttle_uploads(page, 200_000)
    record_progress(page)
    page.set_input_files("#file", str(tarball))
    page.fill("#name", "cancelled-upload")
    page.click("#submit-btn")
    wait_js(page, "window.__progress.length >= 2")
    page.click("#cancel-upload")
    assert "Upload cancelled" in page.locator("#result").inner_text()
    api = ui_cluster.api("alice")

    def settled():
        jobs = [j for j in api.get("/api/v1/jobs").json()["jobs"] if j["name"] == "cancelled-upload"]
        return jobs and all(j["state"] == "FAILED" for j in jobs) and jobs

    # The server saw the client go: the record fails and the partial file is removed.
    for job in dev.wait_until(settled, 30, "the broken upload to be recorded as FAILED"):
        assert not (Path(ui_cluster.workers[0].inbox) / f"{job['id']}.tar").exists()


# --------------------------------------------------------------------------- cancel, resubmit


def test_cancel_a_running_job_asks_first(new_page, ui_cluster, images, screenshot):
    api = ui_cluster.api("alice")
    r = submit(api, images["sleeper"], name="sleeper", timeout=600)
    assert r.status_code == 201, r.text
    job_id = r.json()["job"]["id"]
    page = new_page("alice")
    page.goto(f"{ui_cluster.url}/jobs/{job_id}")
    page.wait_for_selector("#job-state .badge[data-state=RUNNING]", timeout=60_000)
    page.click("#cancel")
    page.wait_for_selector("#confirm[open]")
    assert page.evaluate("document.activeElement.id") == "confirm-no"  # the safe choice has focus
    screenshot(page, "job-cancel")
    page.keyboard.press("Escape")  # changed my mind
    assert page.locator("#confirm[open]").count() == 0
    time.sleep(0.5)
    assert api.get(f"/api/v1/jobs/{job_id}").json()["job"]["state"] == "RUNNING"
    page.click("#cancel")
    page.click("#confirm-yes")
    page.wait_for_selector("#job-state .badge[data-state=CANCELLED]")
    assert wait_state(api, job_id, TERMINAL)["state"] == "CANCELLED"
    assert page.locator("#cancel").is_hidden()
    assert page.locator("#resubmit").is_visible()


def test_resubmit_a_failed_job_reuses_the_image_on_the_worker(new_page, ui_cluster, images):
    api = ui_cluster.api("alice")
    r = submit(api, images["fail"], name="fails")
    job = wait_state(api, r.json()["job"]["id"], TERMINAL)
    assert job["state"] == "FAILED" and job["exit_code"] == 3
    page = new_page("alice")
    page.goto(f"{ui_cluster.url}/jobs/{job['id']}")
    wait_js(page, "document.getElementById('log-status').textContent.startsWith('End of the log')")
    assert "about to fail" in page.locator("#log").inner_text()
    # The worker reports the images it holds every few seconds; wait until it counts this one.
    dev.wait_until(lambda: api.get(f"/api/v1/images/{job['image_id']}").json()["workers"], 30,
                   "the worker to report the image")
    page.click("#resubmit")
    page.click("#rs-submit")  # as it ran: no changes
    page.wait_for_url(lambda url: re.search(r"/jobs/[0-9a-f]{20}$", url) and not url.endswith(job["id"]))
    new_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector("#job-state .badge[data-state=FAILED]", timeout=60_000)
    assert page.locator(f"#facts a[href='/jobs/{job['id']}']").inner_text() == job["id"]
    again = api.get(f"/api/v1/jobs/{new_id}").json()["job"]
    assert again["resubmit_of"] == job["id"] and again["image_id"] == job["image_id"]
    assert again["history"][0]["state"] == "QUEUED"  # no upload: the worker still had the image


def test_an_image_a_worker_holds_is_not_uploaded_again(new_page, ui_cluster, images):
    api = ui_cluster.api("alice")
    first = wait_state(api, submit(api, images["writer"], name="first-upload").json()["job"]["id"], TERMINAL)
    dev.wait_until(lambda: api.get(f"/api/v1/images/{first['image_id']}").json()["workers"], 30,
                   "the worker to report the image")
    page = new_page("alice")
    page.goto(f"{ui_cluster.url}/submit")
    page.set_input_files("#file", str(images["writer"]))
    held = page.locator("#image-held")
    held.wait_for()  # the page read the image id from the tarball and asked the server
    assert "nothing needs to be uploaded" in held.inner_text()
    assert page.locator("#submit-btn").inner_text() == "Submit (no upload needed)"
    page.fill("#name", "second-run")
    page.click("#submit-btn")
    page.wait_for_selector("#new-job-link")
    assert "nothing was uploaded" in page.locator("#result").inner_text()
    job_id = page.get_attribute("#new-job-link", "href").rsplit("/", 1)[1]
    job = wait_state(api, job_id, TERMINAL)
    assert job["state"] == "SUCCEEDED" and job["image_id"] == first["image_id"]
    assert job["history"][0]["state"] == "QUEUED" and not job["image_bytes"]


def test_a_gzip_image_is_uploaded_from_the_page_and_runs(new_page, ui_cluster, images, tmp_path):
    gz = tmp_path / "writer.tar.gz"
    gz.write_bytes(gzip.compress(images["writer"].read_bytes(), 1))
    page = new_page("alice")
    page.goto(f"{ui_cluster.url}/submit")
    page.set_input_files("#file", str(gz))
    page.locator("#file-chosen").wait_for()
    # No error; no held-image check for a compressed file (the server reads its id): it goes up.
    assert not page.locator("#file-error .alert-error").count()
    assert not page.locator("#image-held").count()
    assert page.locator("#submit-btn").inner_text() == "Upload and submit"
    page.fill("#name", "gzip-from-page")
    page.click("#submit-btn")
    page.wait_for_selector("#new-job-link", timeout=60_000)
    job_id = page.get_attribute("#new-job-link", "href").rsplit("/", 1)[1]
    job = wait_state(ui_cluster.api("alice"), job_id, TERMINAL)
    assert job["state"] == "SUCCEEDED" and job["image_bytes"] == gz.stat().st_size


# --------------------------------------------------------------------------- isolation, escaping, bad files, CSRF


def test_names_are_shown_as_text_never_as_html(new_page, ui_cluster, images):
    name = '<img src=x onerror="window.__xss=1"> & "quotes"'
    job_id = submit(ui_cluster.api("alice"), images["writer"], name=name).json()["job"]["id"]
    page = new_page("alice")
    link = page.locator(f"tr[data-id='{job_id}'] .job-link")
    assert link.inner_text() == name and link.locator("img").count() == 0
    page.goto(f"{ui_cluster.url}/jobs/{job_id}")
    page.locator("#job-name", has_text="quotes").wait_for()
    assert page.locator("#job-name").inner_text() == name
    assert page.evaluate("window.__xss") is None


def test_a_second_user_does_not_see_the_first_users_job(new_page, ui_cluster, images):
    alice = ui_cluster.api("alice")
    job_id = submit(alice, images["writer"], name="alice-private").json()["job"]["id"]
    page = new_page("bob")
    wait_js(page, "document.getElementById('counts').textContent !== ''")  # the list has arrived
    assert page.locator(f"tr[data-id='{job_id}']").count() == 0
    assert "alice-private" not in page.locator("main").inner_text()
    page.goto(f"{ui_cluster.url}/jobs/{job_id}")
    page.wait_for_selector("#job-error .alert-error")
    assert "no job" in page.locator("#job-error").inner_text().lower()
    assert "alice-private" not in page.content()
    for path in (f"/api/v1/jobs/{job_id}", f"/api/v1/events?job={job_id}", f"/api/v1/jobs/{job_id}/logs"):
        assert page.request.get(f"{ui_cluster.url}{path}").status == 404


def test_a_bad_file_shows_a_clear_error_and_leaves_nothing_behind(new_page, ui_cluster, screenshot, tmp_path):
    page = new_page("carol")
    page.goto(f"{ui_cluster.url}/submit")
    before = inbox_files(ui_cluster)
    # Not a tar at all: refused in the page before anything is sent.
    text = tmp_path / "notes.txt"
    text.write_text("just some notes\n" * 100)
    page.set_input_files("#file", str(text))
    assert "not a tar archive" in page.locator("#file-error .alert-error").inner_text()
    # A tar, but not from `docker save`: the server refuses it while it streams.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        member = tarfile.TarInfo("hello.txt")
        member.size = 6
        tar.addfile(member, io.BytesIO(b"hello\n"))
    bad = tmp_path / "bad.tar"
    bad.write_bytes(buf.getvalue())
    page.set_input_files("#file", str(bad))
    page.click("#submit-btn")
    error = page.locator("#result .alert-error")
    error.wait_for()
    assert "The file was refused" in error.inner_text() and "manifest.json" in error.inner_text()
    screenshot(page, "submit-error")
    jobs = ui_cluster.api("carol").get("/api/v1/jobs").json()["jobs"]
    assert [j["state"] for j in jobs] == ["FAILED"] and "manifest.json" in jobs[0]["reason"]
    assert inbox_files(ui_cluster) == before
    assert not (Path(ui_cluster.workers[0].inbox) / f"{jobs[0]['id']}.tar").exists()


def test_csrf_token_is_required_for_session_requests(new_page, ui_cluster, images):
    api = ui_cluster.api("bob")
    job_id = submit(api, images["sleeper"], name="csrf-target", timeout=600).json()["job"]["id"]
    page = new_page("bob")
    token = page.get_attribute('meta[name="csrf-token"]', "content")
    cancel = f"{ui_cluster.url}/api/v1/jobs/{job_id}/cancel"
    # The session cookie alone (what a forged cross-site request carries) is refused.
    r = page.request.post(cancel)
    assert r.status == 403 and "CSRF" in r.json()["error"]
    r = page.request.post(cancel, headers={"X-CSRF-Token": "not-the-token"})
    assert r.status == 403
    r = page.request.post(f"{ui_cluster.url}/logout", form={"csrf_token": "wrong"})
    assert r.status == 403
    assert api.get(f"/api/v1/jobs/{job_id}").json()["job"]["state"] not in TERMINAL
    # With the session's token it works; bearer-token clients (the CLI) need none.
    r = page.request.post(cancel, headers={"X-CSRF-Token": token})
    # (A job already running is handed to its worker to keep what it wrote: EXPORTING first.)
    assert r.status == 200 and r.json()["job"]["state"] in ("CANCELLED", "EXPORTING")
    # A login form posted without its token does not log anyone in.
    anon, ca = requests.Session(), str(ui_cluster.ca_cert)
    r = anon.post(f"{ui_cluster.url}/login", data={"username": "bob", "password": PASSWORDS["bob"]},
                  allow_redirects=False, verify=ca)
    assert r.status_code == 400 and anon.get(f"{ui_cluster.url}/api/v1/me", verify=ca).status_code == 401


# --------------------------------------------------------------------------- workers, account, users


def test_admin_drains_and_undrains_a_worker(new_page, ui_cluster, images, screenshot):
    alice = ui_cluster.api("alice")
    running = submit(alice, images["sleeper"], name="keeps-a-worker-busy", timeout=600).json()["job"]["id"]
    page = new_page("root")
    page.goto(f"{ui_cluster.url}/workers")
    name = ui_cluster.workers[0].name
    card = page.locator(f"article[data-worker='{name}']")
    card.wait_for()
    assert card.locator(".badge").inner_text() == "Up"
    # The page polls every 5 s: wait for it to show the running job.
    dev.wait_until(lambda: int(card.locator("dd").nth(1).inner_text()) >= 1, 30, "the running job on the worker card")
    assert card.locator(".gpu").count() == 4 and card.locator(".gpu.free").count() == 4
    card.get_by_role("button", name=f"Drain {name}").click()
    card.locator(".badge", has_text="Drained").wait_for()
    r = submit(alice, images["writer"], name="while-drained")
    assert r.status_code == 503, r.text  # drained: the only worker takes nothing new
    card.get_by_role("button", name=f"Undrain {name}").click()
    card.locator(".badge", has_text="Up").wait_for()
    alice.post(f"/api/v1/jobs/{running}/cancel")
    # Users see the page but get no drain buttons.
    plain = new_page("carol")
    plain.goto(f"{ui_cluster.url}/workers")
    plain.locator(f"article[data-worker='{name}']").wait_for()
    assert plain.get_by_role("button", name=re.compile("Drain")).count() == 0


def test_account_tokens_and_password(new_page, ui_cluster, screenshot):
    page = new_page("erin")
    page.goto(f"{ui_cluster.url}/account")
    page.fill("#token-label", "laptop")
    page.fill("#token-password", PASSWORDS["erin"])
    page.click("#token-form button[type=submit]")
    secret = page.locator("#token-secret")
    secret.wait_for()
    token = secret.inner_text()
    assert token.startswith("pink_")
    page.locator("#tokens-body tr", has_text="laptop").wait_for()
    screenshot(page, "account")
    me = requests.get(f"{ui_cluster.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"},
                      verify=str(ui_cluster.ca_cert))
    assert me.json()["user"] == "erin"
    page.locator("#tokens-body tr", has_text="laptop").get_by_role("button").click()
    page.click("#confirm-yes")
    page.locator("#tokens-body tr", has_text="laptop").wait_for(state="detached")
    me = requests.get(f"{ui_cluster.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"},
                      verify=str(ui_cluster.ca_cert))
    assert me.status_code == 401
    # Change the password: a wrong current one is refused, then it works, and another
    # browser session of erin's (a login of its own) is logged out while this one stays.
    other = new_page()
    login(other, ui_cluster.url, "erin")
    page.fill("#old-password", "not my password")
    page.fill("#new-password", "a-new-password-1")
    page.fill("#new-password2", "a-new-password-1")
    page.click("#password-form button[type=submit]")
    assert "wrong" in page.locator("#password-result .alert-error").inner_text()
    page.fill("#old-password", PASSWORDS["erin"])
    page.click("#password-form button[type=submit]")
    page.locator("#password-result .alert-ok").wait_for()
    page.goto(f"{ui_cluster.url}/jobs")
    assert page.url.endswith("/jobs")
    other.goto(f"{ui_cluster.url}/jobs")
    assert "/login" in other.url
    PASSWORDS["erin"] = "a-new-password-1"
    login(other, ui_cluster.url, "erin")


def test_admin_lists_and_creates_users(new_page, ui_cluster, screenshot):
    page = new_page("root")
    page.goto(f"{ui_cluster.url}/users")
    page.locator("#users-body tr[data-user=alice]").wait_for()
    page.fill("#new-username", "frank")
    page.fill("#new-user-password", "franks-password")
    page.click("#user-form button[type=submit]")
    page.locator("#users-body tr[data-user=frank]").wait_for()
    screenshot(page, "users")
    page.fill("#new-username", "frank")
    page.fill("#new-user-password", "franks-password")
    page.click("#user-form button[type=submit]")
    assert "already exists" in page.locator("#user-result .alert-error").inner_text()
    # frank can log in; plain users have no Users page.
    PASSWORDS["frank"] = "franks-password"
    frank = new_page("frank")
    assert frank.locator("nav.mainnav a", has_text="Users").count() == 0
    frank.goto(f"{ui_cluster.url}/users")
    assert "Only admins" in frank.locator("main").inner_text()
    # Disabling frank logs him out at once; enabled again he logs in; deleted, he is gone.
    row = page.locator("#users-body tr[data-user=frank]")
    row.get_by_role("button", name="Disable frank").click()
    page.click("#confirm-yes")
    page.locator("#users-body tr[data-user=frank] .tag-bad").wait_for()
    frank.goto(f"{ui_cluster.url}/jobs")
    assert "/login" in frank.url
    page.locator("#users-body tr[data-user=frank]").get_by_role("button", name="Enable frank").click()
    page.locator("#users-body tr[data-user=frank] .tag-bad").wait_for(state="detached")
    login(frank, ui_cluster.url, "frank")
    assert frank.url.endswith("/jobs")
    page.locator("#users-body tr[data-user=alice]").get_by_role("button", name="Tokens of alice").click()
    page.locator("#user-tokens-title", has_text="Tokens of alice").wait_for()
    page.locator("#users-body tr[data-user=frank]").get_by_role("button", name="Delete frank").click()
    page.click("#confirm-yes")
    page.locator("#users-body tr[data-user=frank]").wait_for(state="detached")


def test_narrow_screen_has_no_sideways_scrolling(new_page, ui_cluster, screenshot):
    page = new_page("alice", viewport={"width": 390, "height": 844})
    page.locator("#jobs-body tr[data-id]").first.wait_for()
    screenshot(page, "jobs-narrow")
    for path in ("/jobs", "/submit", "/workers", "/account"):
        page.goto(f"{ui_cluster.url}{path}")
        page.wait_for_load_state("networkidle") if path != "/jobs" else time.sleep(1)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width}px wide on a 390px screen"


# --------------------------------------------------------------------------- a busy cluster, for the README


def test_a_busy_cluster_shows_running_and_queued_jobs(new_page, ui_cluster, images, screenshot):
    """Five long jobs on a worker that runs four at a time: the fifth waits, with its position
    and the reason, and everything updates live. The screenshots of the jobs and workers pages
    are taken here, with the finished jobs of the other tests below the running ones."""
    api = ui_cluster.api("alice")
    names = ["bert-finetune", "sweep lr=3e-4", "sweep lr=1e-3", "eval-nightly", "render-frames"]
    ids = []
    for name in names:
        r = submit(api, images["sleeper"], name=name, timeout=3600)
        assert r.status_code == 201, r.text
        ids.append(r.json()["job"]["id"])
    try:
        page = new_page("alice")
        last = page.locator(f"tr[data-id='{ids[-1]}']")
        last.locator(".badge[data-state=QUEUED]").wait_for(timeout=60_000)
        dev.wait_until(lambda: page.locator("#jobs-body .badge[data-state=RUNNING]").count() >= 4, 60,
                       "four running jobs on the jobs page")
        queue = last.locator("td[data-label=Queue]").inner_text()
        assert queue.startswith("#1 · "), queue
        time.sleep(1.5)  # runtimes tick
        screenshot(page, "jobs")
        page.goto(f"{ui_cluster.url}/workers")
        card = page.locator(f"article[data-worker='{ui_cluster.workers[0].name}']")
        dev.wait_until(lambda: card.locator("dd").nth(1).inner_text() == "4", 30, "4 running on the worker card")
        assert card.locator(".mine li").count() == 5
        screenshot(page, "workers")
    finally:
        for job_id in ids:
            api.post(f"/api/v1/jobs/{job_id}/cancel")
