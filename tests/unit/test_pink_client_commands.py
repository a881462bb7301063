"""The `pink` CLI against a small fake of the HTTP API (tests/unit/fakeapi.py): downloads, the
other commands, exit codes, TLS and progress output."""

from __future__ import annotations

import datetime
import hashlib
import io
import ipaddress
import json
import os
import socket
import ssl
import sys
import time
import tarfile
from pathlib import Path

import pytest

from pink_client import jobs
from pink_client import main as cli
from pink_client import output
from tests.unit.fakeapi import TOKEN, Fake, serve

pytestmark = pytest.mark.usefixtures("cli_env")


# -------------------------------------------------------------------------------- download


def test_download_resumes_a_partial_file_and_verifies(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = logged_in.add_job(state="SUCCEEDED")
    data = os.urandom(3 * (1 << 20) + 17)
    logged_in.set_output(job, data)
    dest = tmp_path / "result.tar.zst"
    have = (1 << 20) + 123
    (tmp_path / "result.tar.zst.part").write_bytes(data[:have])
    rc = cli.main(["download", job["id"], "-o", str(dest)])
    assert rc == 0, capsys.readouterr().err
    assert dest.read_bytes() == data
    assert not (tmp_path / "result.tar.zst.part").exists()
    ranges = [h.get("Range") for m, p, h in logged_in.requests if p.endswith("/output")]
    assert ranges == [f"bytes={have}-"]


def test_download_cut_off_twice_resumes_where_it_broke(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = logged_in.add_job(state="SUCCEEDED")
    data = os.urandom(5 * (1 << 20) + 3)
    logged_in.set_output(job, data)
    logged_in.drop_outputs = 2
    dest = tmp_path / "result.tar.zst"
    monkeypatch.setattr(jobs, "backoff", lambda attempt: 0)
    rc = cli.main(["download", job["id"], "-o", str(dest)])
    assert rc == 0, capsys.readouterr().err
    assert dest.read_bytes() == data
    ranges = [h.get("Range") for m, p, h in logged_in.requests if p.endswith("/output")]
    assert ranges[0] is None and len(ranges) == 3  # each try resumes after what it wrote
    starts = [int(r.removeprefix("bytes=").rstrip("-")) for r in ranges[1:]]
    assert 0 < starts[0] < starts[1] < len(data)
    assert "the download broke off" in capsys.readouterr().err


def test_download_restarts_when_the_server_ignores_range(logged_in: Fake, tmp_path: Path) -> None:
    job = logged_in.add_job(state="SUCCEEDED")
    data = os.urandom(200_000)
    logged_in.set_output(job, data)
    logged_in.range_supported = False
    (tmp_path / f"pink-{job['id']}.tar.zst.part").write_bytes(b"garbage that is not a prefix")
    assert cli.main(["download", job["id"]]) == 0
    assert (tmp_path / f"pink-{job['id']}.tar.zst").read_bytes() == data


def test_download_starts_afresh_when_a_stale_partial_does_not_match(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = logged_in.add_job(state="SUCCEEDED")
    data = os.urandom(100_000)
    logged_in.set_output(job, data)
    dest = tmp_path / "out.tar.zst"
    (tmp_path / "out.tar.zst.part").write_bytes(os.urandom(5000))  # left from another archive
    assert cli.main(["download", job["id"], "-o", str(dest)]) == 0
    assert dest.read_bytes() == data
    assert "afresh" in capsys.readouterr().err


def test_download_sha_mismatch_exits_5(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = logged_in.add_job(state="SUCCEEDED")
    logged_in.set_output(job, b"the real archive")
    job["output_sha256"] = hashlib.sha256(b"something else").hexdigest()
    dest = tmp_path / "out.tar.zst"
    assert cli.main(["download", job["id"], "-o", str(dest)]) == 5
    err = capsys.readouterr().err
    assert "corrupt" in err and "sha256" in err
    assert not dest.exists() and not (tmp_path / "out.tar.zst.part").exists()


# ----------------------------------------------------------------------- other commands


def test_ls_status_workers_tables_and_json(
    logged_in: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    queued = logged_in.add_job(
        name="train", gpus=2, queue_position=3, waiting_reason="waiting for 2 GPUs",
        estimated_start_at=time.time() + 1500,
    )
    logged_in.add_job(
        name="done",
        state="SUCCEEDED",
        started_at=1_700_000_010.0,
        finished_at=1_700_000_070.0,
        output_bytes=1_500_000,
    )
    assert cli.main(["ls"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == [
        "ID",
        "NAME",
        "STATE",
        "QUEUE",
        "STARTS",
        "BY",
        "WORKER",
        "GPUS",
        "AGE",
        "RUNTIME",
        "OUTPUT",
    ]
    assert "1m00s" in table and "1.5 MB" in table
    rows = {line.split()[1]: line.split() for line in table.splitlines()[1:]}
    assert rows["train"][3] == "3" and rows["done"][3] == "-"  # the queue position, of queued jobs only
    eta_clock = time.strftime("%H:%M", time.localtime(queued["estimated_start_at"]))
    assert rows["train"][4] in (f"~{eta_clock}", "~" + time.strftime("%a", time.localtime(queued["estimated_start_at"])))
    assert rows["done"][4] == "-"

    assert cli.main(["ls", "--state", "queued", "-o", "json"]) == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)] == [queued["id"]]

    assert cli.main(["status", queued["id"]]) == 0
    text = capsys.readouterr().out
    assert "queue position  3" in text and "waiting for 2 GPUs" in text and "history:" in text
    assert f"starts          by ~{eta_clock} at the latest (in 2" in text or "at the latest (in 2" in text
    assert "if the jobs ahead use their full time limits" in text
    logged_in.jobs[queued["id"]]["estimated_start_at"] = None
    assert cli.main(["status", queued["id"]]) == 0
    assert "starts          unknown (no estimate" in capsys.readouterr().out

    assert cli.main(["status", queued["id"], "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == queued["id"]

    assert cli.main(["workers"]) == 0
    out = capsys.readouterr().out
    assert "gpu1" in out and " 1/1 " in out  # free/total GPUs
    assert "IMAGE CACHE" in out and "3.2 GB" in out and "gpu1 GPU 1: admin root: fan noise" in out
    assert "SLOTS" in out and "3 (config 4)" in out  # an admin's live setting in force
    assert cli.main(["workers", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "gpu1"


def test_logs_plain_and_followed(logged_in: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    job = logged_in.add_job(state="SUCCEEDED")
    logged_in.log_text = b"line one\nline two\n"
    assert cli.main(["logs", job["id"]]) == 0
    assert capsys.readouterr().out == "line one\nline two\n"
    assert cli.main(["logs", "-f", job["id"]]) == 0
    assert capsys.readouterr().out == "line one\nline two\n"
    assert any("follow=1" in p for _, p, _ in logged_in.requests)


def test_logs_follow_resumes_a_stream_cut_before_the_job_ended(
    logged_in: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    job = logged_in.add_job(state="RUNNING")
    logged_in.log_text = b"line one\nline two\n"
    logged_in.follow_lines = 1  # each followed stream ends after one line, as a proxy timeout would
    # Read once before the log (has it started?), then after each stream that ends.
    logged_in.scripts[job["id"]] = ["RUNNING", "RUNNING", "SUCCEEDED"]
    assert cli.main(["logs", "-f", job["id"]]) == 0
    assert capsys.readouterr().out == "line one\nline two\n"
    offsets = [p for _, p, _ in logged_in.requests if "/logs" in p]
    assert "offset=0" in offsets[0] and "offset=9" in offsets[1]


def test_cancel_and_refusal_exits_5(logged_in: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    job = logged_in.add_job(state="RUNNING")
    assert cli.main(["cancel", job["id"]]) == 0
    assert "CANCELLED" in capsys.readouterr().out
    assert cli.main(["cancel", job["id"]]) == 5
    assert "already ended (CANCELLED)" in capsys.readouterr().err
    assert cli.main(["status", "ffffffffffffffffffff"]) == 5


def test_status_shows_what_the_job_runs_with(logged_in: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    job = logged_in.add_job(
        command=["python", "train.py", "--name", "two words"], entrypoint=[], workdir="/work",
        env={"SEED": "7", "API_KEY": "***"}, datasets=["imagenet", "coco"], cpus=2.5,
        memory_bytes=16 << 30, shm_bytes=0,
    )
    assert cli.main(["status", job["id"]]) == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    for expected in ("command python train.py --name 'two words'", "entrypoint none",
                     "workdir /work", "datasets imagenet (/data/imagenet), coco (/data/coco)",
                     "cpus 2.5", "memory 16.0 GiB", "shm size docker's default (64 MiB)",
                     "env API_KEY=***", "SEED=7"):
        assert expected in lines
    plain = logged_in.add_job(command=None, entrypoint=None, workdir="", env={}, datasets=[], cpus=0,
                              memory_bytes=0, shm_bytes=1 << 30)
    assert cli.main(["status", plain["id"]]) == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    for expected in ("command the image's", "entrypoint the image's", "workdir the image's",
                     "datasets none", "cpus no limit", "memory no limit", "shm size 1.0 GiB"):
        assert expected in lines
    assert not any(line.startswith("env") for line in lines)


def test_datasets_table_and_json(logged_in: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["datasets"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "no worker offers a dataset" in err
    logged_in.datasets = [{"name": "coco", "workers": ["gpu1", "gpu2"], "available": True},
                          {"name": "laion", "workers": ["gpu3"], "available": False}]
    assert cli.main(["datasets"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "NAME   AVAILABLE  WORKERS", "coco   yes        gpu1,gpu2", "laion  no         gpu3"]
    assert cli.main(["datasets", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == logged_in.datasets


# ------------------------------------------------------------------------------ exit codes


def test_exit_3_when_nothing_listens(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PINK_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("PINK_TOKEN", TOKEN)
    assert cli.main(["ls"]) == 3
    assert "cannot reach" in capsys.readouterr().err


def test_exit_4_when_not_logged_in_or_token_refused(
    server: Fake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["ls"]) == 4
    assert "pink login" in capsys.readouterr().err
    monkeypatch.setenv("PINK_URL", server.url)
    monkeypatch.setenv("PINK_TOKEN", "stale")
    assert cli.main(["ls"]) == 4
    assert "refused the credentials" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["submit", "x.tar", "--gpus", "many"],
        ["submit", "x.tar", "--timeout", "soon"],
        ["ls", "--state", "SLEEPING"],
        ["submit"],
        ["submit", "no-such-file.tar"],
    ],
)
def test_usage_errors_exit_2(
    logged_in: Fake, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert capsys.readouterr().err


def test_broken_compressed_or_foreign_archives_are_usage_errors(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gz = tmp_path / "img.tar.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 100)
    assert cli.main(["submit", str(gz)]) == 2
    assert "corrupt gzip data" in capsys.readouterr().err
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tf:
        info = tarfile.TarInfo("hello.txt")
        tf.addfile(info, io.BytesIO(b""))
    assert cli.main(["submit", str(plain)]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    assert logged_in.uploads == []


def test_parse_duration() -> None:
    assert [cli.parse_duration(t) for t in ("90", "90s", "30m", "2h", "1d")] == [
        90,
        90,
        1800,
        7200,
        86400,
    ]


# ------------------------------------------------------------------------------------ TLS


def make_tls(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A private CA and a server certificate for 127.0.0.1; returns the CA file and a context."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pink test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file = tmp_path / "server.crt"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = tmp_path / "server.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ca_file, ctx


def test_tls_verifies_with_the_given_ca_and_never_skips_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_file, ctx = make_tls(tmp_path)
    with serve(ctx) as fake:
        monkeypatch.setenv("PINK_URL", fake.url)
        monkeypatch.setenv("PINK_TOKEN", TOKEN)
        # System CAs do not know the private CA: a clear exit 3 that names --ca-cert.
        assert cli.main(["workers"]) == 3
        err = capsys.readouterr().err
        assert "TLS" in err and "--ca-cert" in err
        assert cli.main(["workers", "--ca-cert", str(ca_file)]) == 0
        assert "gpu1" in capsys.readouterr().out
        monkeypatch.setenv("PINK_CA_CERT", str(ca_file))
        assert cli.main(["workers", "-o", "json"]) == 0
        capsys.readouterr()
    assert cli.main(["workers", "--ca-cert", str(tmp_path / "missing.crt")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------- progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_tty_and_one_line_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    bar = output.Ui().progress("uploading", 10_000_000)
    assert bar.bar is not None
    bar.add(5_000_000)
    bar.add(5_000_000)
    bar.finish()
    text = tty.getvalue()
    assert text.startswith("\ruploading")
    assert "100%" in text and "10.0M/10.0M" in text and "B/s" in text and text.endswith("\n")
    assert output.Ui(fmt="json").progress("uploading", 10).bar is None
    assert output.Ui(quiet=True).progress("uploading", 10).bar is None

    # A failed attempt ends the bar's line; a resumed download counts from where it was.
    tty.truncate(0)
    tty.seek(0)
    resumed = output.Ui().progress("downloading", 1000, done=400)
    resumed.add(100)
    resumed.abort()
    assert tty.getvalue().endswith("\n") and "500/1.00k" in tty.getvalue()

    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    line = output.Ui().progress("downloading", 1000)
    assert line.bar is None
    line.add(1000)
    line.finish()
    assert "\r" not in plain.getvalue() and plain.getvalue().startswith("downloading 1.0 kB in ")
    quiet = output.Ui(quiet=True).progress("downloading", 1000)
    quiet.add(1000)
    quiet.finish()
    assert plain.getvalue().count("\n") == 1
