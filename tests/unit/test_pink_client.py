"""The `pink` CLI against a small fake of the HTTP API (tests/unit/fakeapi.py): login, submit
(held images, uploads, retries, thin archives, `docker save`) and what a job runs with."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from pink_client import archive, jobs, settings
from pink_client import main as cli
from tests.unit.fakeapi import PASSWORD, TOKEN, USER, Fake, Handler, make_image_tar, make_layered_tar

pytestmark = pytest.mark.usefixtures("cli_env")


# ----------------------------------------------------------------------------------- login



def _sent(tar: Path) -> bytes:
    """The archive as the CLI sends it: layer files last, bottom first (upload_ranges)."""
    raw = tar.read_bytes()
    return b"".join(raw[a:b] for a, b in archive.read_image_archive(tar).upload_ranges())

def test_login_stores_token_in_private_file(
    server: Fake, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    rc = cli.main(["login", server.url, "--user", USER, "--password-stdin"])
    assert rc == 0
    assert stat.S_IMODE(cli_env.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli_env.parent.stat().st_mode) == 0o700
    saved = json.loads(cli_env.read_text())
    assert saved["url"] == server.url and saved["token"] == TOKEN and saved["ca_cert"] == ""
    assert server.tokens_created[0]["name"].startswith("cli@")
    # The saved login is enough for the next command.
    server.add_job()
    assert cli.main(["ls", "-o", "json"]) == 0


def test_login_with_wrong_password_exits_4(
    server: Fake, cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("nope\n"))
    assert cli.main(["login", server.url, "--user", USER, "--password-stdin"]) == 4
    assert "wrong user name or password" in capsys.readouterr().err
    assert not cli_env.exists()


def test_saved_token_is_not_sent_to_another_server(
    server: Fake, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.save_config({"url": "https://elsewhere.example", "token": TOKEN, "ca_cert": ""})
    assert cli.main(["--url", server.url, "ls"]) == 4
    assert "not logged in" in capsys.readouterr().err
    assert server.requests == []


def test_logout_revokes_and_forgets_token(server: Fake, cli_env: Path) -> None:
    settings.save_config({"url": server.url, "token": TOKEN, "ca_cert": "", "token_id": "tok1"})
    assert cli.main(["logout"]) == 0
    assert ("DELETE", "/api/v1/tokens/tok1") in [(m, p) for m, p, _ in server.requests]
    saved = json.loads(cli_env.read_text())
    assert "token" not in saved and saved["url"] == server.url


# ---------------------------------------------------------------------------------- submit


def test_read_image_archive_finds_id_with_manifest_last(tmp_path: Path) -> None:
    tar = tmp_path / "img.tar"
    image_id = make_image_tar(tar)
    with tarfile.open(tar) as tf:
        assert tf.getnames()[-1] == "manifest.json"
    image = archive.read_image_archive(tar)
    assert image.image_id == image_id
    assert image.size == tar.stat().st_size
    assert image.tags == ("demo:latest",)


def test_submit_sends_zero_bytes_when_a_worker_holds_the_image(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    image_id = make_image_tar(tar)
    logged_in.images[image_id] = ["gpu7"]
    rc = cli.main(["submit", str(tar), "--gpus", "1", "--timeout", "10m"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "image already on worker gpu7: 0 bytes sent" in err
    [upload] = logged_in.uploads
    assert upload.body == b"" and upload.headers["Content-Length"] == "0"
    assert upload.params["image"] == image_id
    assert upload.params["gpus"] == "1" and upload.params["timeout"] == "600"
    job = logged_in.jobs[out.strip()]
    assert job["image_id"] == image_id and job["name"] == "demo:latest"


def test_submit_uploads_exact_bytes_with_length_and_key(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar)
    rc = cli.main(["submit", str(tar), "--name", "my job", "--output", "none", "--priority", "3", "--user-priority", "-2"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    [upload] = logged_in.uploads
    assert upload.body == _sent(tar)
    assert upload.headers["Content-Length"] == str(tar.stat().st_size)
    assert "Transfer-Encoding" not in upload.headers
    uuid.UUID(upload.headers["Idempotency-Key"])
    assert upload.params == {"name": "my job", "output": "none", "priority": "3", "user_priority": "-2"}
    assert out.strip() in logged_in.jobs
    assert "uploading" in err  # the final line of a non-TTY progress report


def test_submit_retries_a_dropped_upload_with_the_same_key(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar)
    logged_in.drop_uploads = 1
    rc = cli.main(["submit", str(tar), "--idempotency-key", "k-42"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    first, second = logged_in.uploads
    assert not first.complete and second.complete
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == "k-42"
    assert second.body == _sent(tar)
    assert "retrying" in err
    assert len(logged_in.jobs) == 1 and out.strip() in logged_in.jobs


def test_submit_gives_up_after_retries_and_names_the_key(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar, layer_size=1000)
    logged_in.drop_uploads = jobs.UPLOAD_ATTEMPTS
    assert cli.main(["submit", str(tar)]) == 3
    err = capsys.readouterr().err
    key = logged_in.uploads[0].headers["Idempotency-Key"]
    assert len(logged_in.uploads) == jobs.UPLOAD_ATTEMPTS
    assert {u.headers["Idempotency-Key"] for u in logged_in.uploads} == {key}
    assert f"--idempotency-key {key}" in err


def test_submit_sends_a_thin_archive_without_the_layers_a_worker_holds(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    diff_ids = make_layered_tar(tar, [300_000, 200_000, 5_000])
    logged_in.held_layers = 2
    assert cli.main(["submit", str(tar)]) == 0
    err = capsys.readouterr().err
    [upload] = logged_in.uploads
    assert upload.params["omitted_layers"] == ",".join(diff_ids[:2])
    assert upload.headers["Content-Length"] == str(len(upload.body)) and len(upload.body) < 40_000
    with tarfile.open(tar) as full, tarfile.open(fileobj=io.BytesIO(upload.body)) as thin:
        names = thin.getnames()
        # Every member but the two bottom layer.tar files, byte for byte, manifest unchanged;
        # the layer files last (the worker registers them as they come).
        layer_tars = [n for n in full.getnames() if n.endswith("/layer.tar")]
        assert names == [n for n in full.getnames() if n not in layer_tars] + layer_tars[2:]
        for name in ("manifest.json", layer_tars[2]):
            assert thin.extractfile(name).read() == full.extractfile(name).read()
    assert "holds 2 of the image's 3 layers" in err


def test_submit_sends_the_whole_archive_when_the_thin_one_is_refused(
    logged_in: Fake, tmp_path: Path
) -> None:
    tar = tmp_path / "img.tar"
    make_layered_tar(tar, [100_000, 5_000])
    logged_in.held_layers, logged_in.refuse_thin = 1, True
    assert cli.main(["submit", str(tar)]) == 0
    thin, whole = logged_in.uploads
    assert thin.params["omitted_layers"] and "omitted_layers" not in whole.params
    assert whole.body == _sent(tar)
    assert thin.headers["Idempotency-Key"] == whole.headers["Idempotency-Key"]


def test_submit_falls_back_to_upload_when_the_holder_lost_the_image(
    logged_in: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tar = tmp_path / "img.tar"
    image_id = make_image_tar(tar, layer_size=1000)
    # GET /images says a worker has it; the POST then finds none (it was just removed).
    monkeypatch.setattr(jobs, "holders", lambda api, path: ["gone"])
    assert cli.main(["submit", str(tar)]) == 0
    first, second = logged_in.uploads
    assert first.body == b"" and first.params["image"] == image_id
    assert second.body == _sent(tar)


@pytest.mark.parametrize(
    ("states", "rc"),
    [
        (["QUEUED", "STARTING", "RUNNING", "EXPORTING", "SUCCEEDED"], 0),
        (["QUEUED", "RUNNING", "FAILED"], 1),
        (["RUNNING", "TIMED_OUT"], 1),
    ],
)
def test_submit_wait_exit_code_follows_the_job(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str], states: list[str], rc: int
) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar, layer_size=1000)
    logged_in.scripts["00000000000000000001"] = list(states)
    assert cli.main(["submit", str(tar), "--wait"]) == rc
    err = capsys.readouterr().err
    for state in states:
        assert f": {state}" in err


def test_submit_wait_download(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar, layer_size=1000)
    logged_in.scripts["00000000000000000001"] = ["RUNNING", "SUCCEEDED"]
    data = os.urandom(300_000)
    orig_submit = Handler._submit

    def submit_with_output(self: Handler, fake: Fake, params: dict[str, str]) -> None:
        orig_submit(self, fake, params)
        for job in fake.jobs.values():
            fake.set_output(job, data)

    Handler._submit = submit_with_output  # type: ignore[method-assign]
    try:
        rc = cli.main(
            [
                "submit",
                str(tar),
                "--wait",
                "--download",
                str(tmp_path / "out.tar.zst"),
                "-o",
                "json",
            ]
        )
    finally:
        Handler._submit = orig_submit  # type: ignore[method-assign]
    out = capsys.readouterr().out
    assert rc == 0
    assert json.loads(out)["state"] == "SUCCEEDED"
    assert (tmp_path / "out.tar.zst").read_bytes() == data


def test_submit_json_output_parses(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar, layer_size=1000)
    assert cli.main(["submit", str(tar), "-o", "json"]) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["id"] in logged_in.jobs


def _fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tar: Path, image_id: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "docker-calls"
    script = bin_dir / "docker"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, shutil, sys\n"
        "args = sys.argv[1:]\n"
        "with open(os.environ['FAKE_DOCKER_CALLS'], 'a') as f:\n"
        "    f.write(json.dumps(args) + '\\n')\n"
        "if args[:2] == ['image', 'inspect']:\n"
        "    print(os.environ['FAKE_DOCKER_ID'])\n"
        "elif args[0] == 'save':\n"
        "    shutil.copy(os.environ['FAKE_DOCKER_TAR'], args[args.index('-o') + 1])\n"
        "else:\n"
        "    sys.exit('unexpected docker call')\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_DOCKER_CALLS", str(calls))
    monkeypatch.setenv("FAKE_DOCKER_ID", image_id)
    monkeypatch.setenv("FAKE_DOCKER_TAR", str(tar))
    return calls


def test_submit_image_skips_export_when_held(
    logged_in: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tar = tmp_path / "img.tar"
    image_id = make_image_tar(tar, layer_size=1000)
    calls = _fake_docker(tmp_path, monkeypatch, tar, image_id)
    logged_in.images[image_id] = ["gpu1"]
    assert cli.main(["submit", "--image", "demo:latest"]) == 0
    assert [json.loads(line)[0] for line in calls.read_text().splitlines()] == ["image"]
    assert logged_in.uploads[0].body == b""


def test_submit_image_exports_when_not_held(
    logged_in: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tar = tmp_path / "img.tar"
    image_id = make_image_tar(tar, layer_size=1000)
    calls = _fake_docker(tmp_path, monkeypatch, tar, image_id)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert cli.main(["submit", "--image", "demo:latest"]) == 0
    save = [json.loads(line) for line in calls.read_text().splitlines()][-1]
    assert save[0] == "save"
    assert logged_in.uploads[0].body == _sent(tar)
    assert not list(tmp_path.glob("pink-save-*"))  # the export is removed afterwards


# ------------------------------------------------------------------- what the job runs with


def _spec_of(upload) -> dict:
    return json.loads(upload.headers["Pink-Job-Spec"])


def test_submit_sends_command_env_datasets_and_resources_as_the_spec_header(
    logged_in: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar, layer_size=1000)
    monkeypatch.setenv("WANDB_API_KEY", "from-my-shell")
    monkeypatch.setenv("HF_TOKEN", "hf-from-shell")
    env_file = tmp_path / "train.env"
    env_file.write_text(
        "# training settings\n"
        "\n"
        "SEED=7\n"
        '  QUOTED="kept as written"\n'
        "EMPTY=\n"
        "HF_TOKEN\n"
        "LR=0.5\r\n"
    )
    argv = ["submit", str(tar), "--gpus", "1", "--env-file", str(env_file), "-e", "LR=0.1",
            "-e", "WANDB_API_KEY", "--env", "NOTE=a=b c", "--entrypoint", "python -u",
            "--workdir", "/work", "--data", "imagenet", "--data", "coco", "--cpus", "2.5",
            "--memory", "16g", "--shm-size", "1g",
            "--", "train.py", "--epochs", "3", "-e", "--", "unicode: é"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    [upload] = logged_in.uploads
    assert upload.headers["Pink-Job-Spec"].isascii()
    assert _spec_of(upload) == {
        "command": ["train.py", "--epochs", "3", "-e", "--", "unicode: é"],
        "entrypoint": ["python", "-u"],
        "env": {"SEED": "7", "QUOTED": '"kept as written"', "EMPTY": "", "HF_TOKEN": "hf-from-shell",
                "LR": "0.1", "WANDB_API_KEY": "from-my-shell", "NOTE": "a=b c"},
        "workdir": "/work",
        "data": ["imagenet", "coco"],
        "cpus": 2.5,
        "memory": "16g",
        "shm_size": "1g",
    }
    assert set(upload.params) == {"gpus", "name"}


def test_the_spec_header_goes_with_a_held_image_too_and_an_empty_entrypoint_clears(
    logged_in: Fake, tmp_path: Path
) -> None:
    tar = tmp_path / "img.tar"
    image_id = make_image_tar(tar, layer_size=1000)
    logged_in.images[image_id] = ["gpu1"]
    assert cli.main(["submit", str(tar), "--entrypoint", "", "--", "sh", "-c", "echo $SEED"]) == 0
    [upload] = logged_in.uploads
    assert upload.body == b"" and _spec_of(upload) == {"entrypoint": [], "command": ["sh", "-c", "echo $SEED"]}


def test_submit_without_spec_options_sends_no_spec_header(logged_in: Fake, tmp_path: Path) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar, layer_size=1000)
    assert cli.main(["submit", str(tar)]) == 0
    assert "Pink-Job-Spec" not in logged_in.uploads[0].headers


@pytest.mark.parametrize(("extra", "message"), [
    (["-e", "NOT_SET_ANYWHERE"], "-e: NOT_SET_ANYWHERE is not set in your environment"),
    (["-e", "=value"], "-e: '' is not a variable name"),
    (["-e", "MY VAR=1"], "-e: 'MY VAR' is not a variable name"),
    (["--env-file", "missing.env"], "cannot read --env-file missing.env"),
    (["--entrypoint", "python 'unclosed"], "--entrypoint \"python 'unclosed\": No closing quotation"),
    (["--cpus", "0"], "'0' is not a number > 0"),
    (["--cpus", "lots"], "'lots' is not a number > 0"),
    (["-e", "BIG=" + "x" * (32 << 10)], "the server takes at most 32768"),
    (["--"], "take a command after --, and it needs one"),
])
def test_bad_spec_options_are_usage_errors_before_anything_is_sent(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar, layer_size=1000)
    assert cli.main(["submit", str(tar), *extra]) == 2
    assert message in capsys.readouterr().err
    assert logged_in.requests == []


def test_an_env_file_line_without_a_name_is_a_usage_error(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    make_image_tar(tar, layer_size=1000)
    (tmp_path / "bad.env").write_text("A=1\n=oops\n")
    assert cli.main(["submit", str(tar), "--env-file", "bad.env"]) == 2
    assert "bad.env, line 2: '' is not a variable name" in capsys.readouterr().err


def test_only_submit_and_resubmit_take_a_command(logged_in: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ls", "--", "x"]) == 2
    assert "only `pink submit` and `pink resubmit` take a command" in capsys.readouterr().err
