"""What happens when a job ends (pink.notify, pink.reactions, webapp.reactor): the webhook
allow-list, the submit checks, retries of LOST jobs (exactly one with racing web servers) and
the notification outbox, on the in-memory etcd of tests/unit/conftest.py."""

from __future__ import annotations

import dataclasses

import pytest

from pink import notify, reactions
from pink.config import Config, NotifyConfig
from pink.model import Job, User
from pink.states import JobState
from webapp import janitor, reactor
from webapp.spec import JobSpec, SubmitError

IMG = "sha256:" + "cd" * 32
ALLOW = ("https://hooks.example.org/pink/", "ci.example.com", "http://127.0.0.1:8080/")


@pytest.mark.parametrize("url", [
    "https://hooks.example.org/pink/", "https://hooks.example.org/pink/a/b?x=1",
    "https://HOOKS.example.org:443/pink/x", "https://ci.example.com/anything",
    "http://127.0.0.1:8080/", "http://127.0.0.1:8080/deep/path",
])
def test_allowed_webhooks(url):
    assert notify.webhook_allowed(url, ALLOW)


@pytest.mark.parametrize("url", [
    "http://hooks.example.org/pink/x",               # another scheme than the prefix's
    "https://hooks.example.org/pinkish",             # the prefix's path is matched by whole segments
    "https://hooks.example.org/other",
    "https://hooks.example.org.evil.com/pink/",      # a host that only starts like an allowed one
    "https://evil.com/https://hooks.example.org/pink/",
    "https://hooks.example.org@evil.com/pink/",      # userinfo: the request would go to evil.com
    "https://user:pw@hooks.example.org/pink/",
    "http://allowed@evil",
    "https://hooks.example.org:8443/pink/",          # another port
    "http://ci.example.com/x",                       # a bare host allows https only
    "https://ci.example.com:444/x",
    "https://sub.ci.example.com/x",
    "http://127.0.0.1:8081/", "http://127.0.0.1/", "http://localhost:8080/",
    "https://hooks.example.org/pink/../admin",       # dot segments leave the prefix
    "https://hooks.example.org/pink/%2e%2e/admin",
    "https://hooks.example.org\\@evil.com/pink/",
    "ftp://hooks.example.org/pink/", "file:///etc/passwd", "hooks.example.org/pink/", "",
    "https://hooks.example.org:99999/pink/", "https://hooks.example.org/pink/ x",
])
def test_refused_webhooks(url):
    assert not notify.webhook_allowed(url, ALLOW)


def test_nothing_is_allowed_by_an_empty_list():
    assert not notify.webhook_allowed("https://hooks.example.org/pink/", ())


def test_spec_takes_retry_notify_and_webhook_either_way():
    alice = User("alice", "")
    spec = JobSpec.parse({"retry_lost": "2", "notify": "1"}, alice, '{"webhook": "https://ci.example.com/h"}')
    assert (spec.retry_lost, spec.notify, spec.webhook) == (2, True, "https://ci.example.com/h")
    assert JobSpec.parse({}, alice, '{"notify": true, "retry_lost": 1}').notify is True
    for args, message in (({"retry_lost": "11"}, "retry_lost must be between 0 and 10"),
                          ({"notify": "yes"}, "notify must be 1 or 0"),
                          ({"webhook": "javascript:alert(1)"}, "webhook must be an http:// or https:// URL")):
        with pytest.raises(SubmitError, match=message):
            JobSpec.parse(args, alice)


def test_submit_refuses_what_cannot_be_honoured():
    cfg = NotifyConfig(webhook_allow=ALLOW, smtp_host="relay", smtp_from="pink@example.org")
    alice = User("alice", "")
    assert "not on the operator's allow-list" in notify.check_request(cfg, alice, False, "https://evil.com/")
    assert "set your e-mail address first" in notify.check_request(cfg, alice, True, "")
    assert notify.check_request(cfg, dataclasses.replace(alice, email="a@example.org"), True,
                                "https://ci.example.com/x") == ""
    assert "sends no e-mail" in notify.check_request(NotifyConfig(), alice, True, "")
    assert "takes no webhooks" in notify.check_request(NotifyConfig(), alice, False, "https://ci.example.com/")


# ----- retries of LOST jobs -------------------------------------------------------------------
CFG = Config(notify=NotifyConfig(retry_give_up_s=600, backoff_s=10, attempts=3,
                                 webhook_allow=("http://127.0.0.1:9/",)))


def lost_job(cluster, **fields):
    """A running job of alice's on w1 (which holds its image) whose worker dies: LOST."""
    cluster.store.create_user(User("alice", ""))
    cluster.add_worker("w1", images=(IMG,))
    job = cluster.add_job(state=JobState.RUNNING, image_id=IMG, image_bytes=1000, **fields)
    cluster.worker_dies("w1")
    janitor.sweep(cluster.store, CFG.web)
    job = cluster.store.get_job(job.id)
    assert job.state is JobState.LOST
    return job


def react(cluster, now=None):
    return reactor.react(CFG, cluster.store, cluster.links, None, now=now)


def test_a_lost_job_is_retried_once_on_a_worker_holding_its_image(cluster):
    old = lost_job(cluster, retry_lost=2, name="train")
    assert "retried if LOST (retry_lost=2)" in old.reason
    cluster.add_worker("w2", images=(IMG,))
    assert react(cluster)["retried"] == 1
    old = cluster.store.get_job(old.id)
    new = cluster.store.get_job(old.retried_by)
    assert (new.retry_of, new.retry_lost, new.worker, new.image_id, new.name) == (old.id, 1, "w2", IMG, "train")
    assert new.state is JobState.QUEUED and old.retry_note == f"retried as job {new.id}"
    assert react(cluster)["retried"] == 0  # nothing twice
    assert [j.id for j in cluster.store.list_jobs("alice")] == [new.id, old.id]
    # Nothing left to do for the old job: its outbox entry went; the new one has its own.
    assert [e.job_id for e in reactions.pending(cluster.store)] == [new.id]


def test_racing_web_servers_make_exactly_one_retry(cluster):
    old = lost_job(cluster, retry_lost=1)
    cluster.add_worker("w2", images=(IMG,))
    # Both read the LOST job before either wrote: both submit, one transaction wins.
    first = reactor.retry(CFG, cluster.store, cluster.links, None, old, now=old.updated_at)
    second = reactor.retry(CFG, cluster.store, cluster.links, None, old, now=old.updated_at)
    assert first is not None and (second is None or second.id == first.id)
    assert len(cluster.store.list_jobs("alice")) == 2
    assert cluster.store.get_job(old.id).retried_by == first.id


def test_the_old_jobs_revision_guards_the_retry(cluster):
    old = lost_job(cluster, retry_lost=1)
    cluster.add_worker("w2", images=(IMG,))
    reactions.update_job(cluster.store, old, retry_note="someone else wrote the job meanwhile")
    assert reactor.retry(CFG, cluster.store, cluster.links, None, old, now=old.updated_at) is None
    assert len(cluster.store.list_jobs("alice")) == 1  # no job made from a stale read


def test_no_worker_holds_the_image_waits_then_gives_up(cluster):
    old = lost_job(cluster, retry_lost=1)
    cluster.add_worker("w2")  # alive, without the image
    react(cluster, now=old.updated_at + 5)
    old = cluster.store.get_job(old.id)
    assert old.retry_note.startswith("retry waiting") and "holds image" in old.retry_note
    assert not old.retry_given_up and len(cluster.store.list_jobs("alice")) == 1
    react(cluster, now=old.updated_at + 601)
    old = cluster.store.get_job(old.id)
    assert old.retry_given_up and old.retry_note.startswith("gave up retrying after 601 s")
    cluster.add_worker("w3", images=(IMG,))
    assert react(cluster) == {"retried": 0, "notified": 0, "dropped": 1}
    assert reactions.pending(cluster.store) == []


def test_only_lost_jobs_are_retried(cluster):
    cluster.store.create_user(User("alice", ""))
    cluster.add_worker("w1", images=(IMG,))
    job = cluster.add_job(state=JobState.RUNNING, image_id=IMG, image_bytes=1, retry_lost=3)
    job = cluster.store.transition(job, JobState.EXPORTING)
    job = cluster.store.transition(job, JobState.FAILED, exit_code=1, reason="exit code 1")
    assert not reactions.wants_retry(job)
    assert react(cluster) == {"retried": 0, "notified": 0, "dropped": 1}
    assert len(cluster.store.list_jobs("alice")) == 1 and reactions.pending(cluster.store) == []


def test_a_running_job_keeps_its_outbox_entry(cluster):
    cluster.store.create_user(User("alice", ""))
    cluster.add_worker("w1", images=(IMG,))
    job = cluster.add_job(state=JobState.RUNNING, image_id=IMG, retry_lost=1)
    assert react(cluster) == {"retried": 0, "notified": 0, "dropped": 0}
    assert [e.job_id for e in reactions.pending(cluster.store)] == [job.id]


# ----- notifications ----------------------------------------------------------------------------
def test_a_failing_webhook_is_retried_with_backoff_and_delivered_once(cluster, monkeypatch):
    sent, answers = [], [notify.NotifyError("503"), notify.NotifyError("timeout"), None]

    def post(cfg, url, body):
        sent.append(body)
        answer = answers.pop(0)
        if answer:
            raise answer

    monkeypatch.setattr(notify, "post_webhook", post)
    cluster.store.create_user(User("alice", ""))
    cluster.add_worker("w1", images=(IMG,))
    job = cluster.add_job(state=JobState.SUCCEEDED, image_id=IMG, webhook="http://127.0.0.1:9/x")
    t = job.updated_at
    assert react(cluster, now=t)["notified"] == 0                # attempt 1 fails
    assert react(cluster, now=t + 5) == {"retried": 0, "notified": 0, "dropped": 0}   # backoff: 10 s
    assert len(sent) == 1
    react(cluster, now=t + 11)                                   # attempt 2 fails; next after 20 s
    react(cluster, now=t + 25)
    assert len(sent) == 2
    assert react(cluster, now=t + 32)["notified"] == 1           # attempt 3 succeeds
    assert len(sent) == 3 and sent[-1]["delivery"] == job.id and sent[-1]["job"]["state"] == "SUCCEEDED"
    done = cluster.store.get_job(job.id)
    assert done.notified_at is not None and done.notify_note == "delivered after 3 attempts"
    assert reactions.pending(cluster.store) == []
    react(cluster, now=t + 100)
    assert len(sent) == 3


def test_a_webhook_that_never_answers_is_given_up_and_noted(cluster, monkeypatch):
    def post(cfg, url, body):
        raise notify.NotifyError("webhook answered 500")

    monkeypatch.setattr(notify, "post_webhook", post)
    cluster.store.create_user(User("alice", ""))
    cluster.add_worker("w1", images=(IMG,))
    job = cluster.add_job(state=JobState.SUCCEEDED, image_id=IMG, webhook="http://127.0.0.1:9/x")
    for at in (0, 11, 31, 71):
        react(cluster, now=job.updated_at + at)
    done = cluster.store.get_job(job.id)
    assert done.notify_note == "gave up after 3 attempts: webhook answered 500"
    assert reactions.pending(cluster.store) == []


def test_one_web_server_claims_each_attempt(cluster):
    cluster.store.create_user(User("alice", ""))
    cluster.add_worker("w1")
    cluster.add_job(state=JobState.SUCCEEDED, webhook="http://127.0.0.1:9/x")
    entry, = reactions.pending(cluster.store)
    assert reactions.claim_attempt(cluster.store, entry, 1.0, now=100.0) is not None
    assert reactions.claim_attempt(cluster.store, entry, 1.0, now=100.0) is None
    again, = reactions.pending(cluster.store)
    assert (again.attempts, again.next_at) == (1, 101.0)


def test_a_lost_job_is_announced_after_its_retry(cluster, monkeypatch):
    sent = []
    monkeypatch.setattr(notify, "post_webhook", lambda cfg, url, body: sent.append(body))
    old = lost_job(cluster, retry_lost=1, webhook="http://127.0.0.1:9/x")
    cluster.add_worker("w2", images=(IMG,))
    react(cluster)
    assert sent == []  # the retry first ...
    react(cluster)
    assert sent[0]["job"]["state"] == "LOST" and sent[0]["job"]["retried_by"] == cluster.store.get_job(old.id).retried_by


def test_the_payload_and_the_mail_say_what_ended():
    job = Job(id="0" * 20, user="alice", state=JobState.FAILED, worker="w1", exit_code=3, name="train",
              reason="exit code 3", retried_by="1" * 20)
    cfg = NotifyConfig(base_url="https://pink.example.org/", smtp_from="pink@example.org")
    body = notify.payload(cfg, job)
    assert body["links"]["page"] == f"https://pink.example.org/jobs/{job.id}"
    assert body["job"]["exit_code"] == 3 and body["event"] == "job.ended" and body["delivery"] == job.id
    mail = notify.message(cfg, job, "alice@example.org")
    assert mail["Subject"] == f"[PINK] job train ({job.id}) FAILED" and mail[notify.DELIVERY_HEADER] == job.id
    assert "Exit code: 3" in mail.get_content() and f"Retried as job {'1' * 20}" in mail.get_content()


def test_a_retry_keeps_only_the_notifications_that_can_still_be_sent(cluster):
    # The owner has no e-mail address any more, and the webhook left the allow-list: the job
    # is retried all the same, without them.
    old = lost_job(cluster, retry_lost=1, notify=True, webhook="https://gone.example.org/x")
    cluster.add_worker("w2", images=(IMG,))
    react(cluster)
    new = cluster.store.get_job(cluster.store.get_job(old.id).retried_by)
    assert (new.notify, new.webhook, new.retry_of) == (False, "", old.id)


def test_the_notify_config_section(tmp_path):
    from pink import config

    path = tmp_path / "pink.toml"
    path.write_text('[web]\nsecret_key = "x"\n[notify]\nsmtp_host = "relay.example.org"\nsmtp_from = "pink@x.org"\n'
                    'smtp_starttls = true\nwebhook_allow = ["https://hooks.example.org/pink/"]\n')
    cfg = config.load(str(path), env={"PINK_NOTIFY_SMTP_PORT": "587"}).notify
    assert (cfg.smtp_host, cfg.smtp_port, cfg.smtp_starttls, cfg.email_enabled) == ("relay.example.org", 587, True, True)
    assert cfg.webhook_allow == ("https://hooks.example.org/pink/",)
    assert not config.load(str(path), env={"PINK_NOTIFY_SMTP_FROM": ""}).notify.email_enabled
    for key, value in (("ATTEMPTS", "0"), ("WEBHOOK_ALLOW", "ftp://files.example.org/")):
        with pytest.raises(config.ConfigError, match="notify"):
            config.load(str(path), env={f"PINK_NOTIFY_{key}": value})


@pytest.mark.parametrize("state", [s for s in JobState if s.terminal])
def test_only_lost_is_retried_and_only_with_retries_left(state):
    job = Job(id="0" * 20, user="alice", state=state, worker="w1", retry_lost=1)
    assert reactions.wants_retry(job) is (state is JobState.LOST)
    assert not reactions.wants_retry(dataclasses.replace(job, retry_lost=0))
    assert not reactions.wants_retry(dataclasses.replace(job, retried_by="1" * 20))
    assert not reactions.wants_retry(dataclasses.replace(job, retry_given_up=True))
