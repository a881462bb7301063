"""Jobs' inputs on real parts (etcd, dockerd, sshd + gate, gunicorn, nginx, worker daemons):
a folder of files, symlinks and hardlinks arrives intact and read-only at /in, the next job
with it sends nothing and goes to the worker that holds it, an unsafe tar leaves nothing on
the worker, and nobody but its uploader may use an input."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile
from pathlib import Path

import pytest

import pink_dev as dev
from tests.helpers import TERMINAL, wait_state

pytestmark = pytest.mark.integration

#: Every file (symlinks followed) with its sha256 as the job sees it, then what it was told,
#: whether it could write to /in, and the inodes of a file and a hardlink to it.
SCRIPT = ('cd /in && find . -type f -o -type l | while read -r f; do sha256sum "$f"; done; '
          'echo "input_dir=$PINK_INPUT_DIR"; '
          'if echo x 2>/dev/null >/in/probe || mkdir /in/new 2>/dev/null; '
          'then echo WRITABLE; else echo READ-ONLY; fi; '
          'ls -i data/d0/f0.bin hard/h0')


def make_folder(root: Path, files: int = 300) -> None:
    """``files`` files of random sizes in 10 folders, symlinks to some (and one to a folder's
    file through ..), hardlinks to others, and an empty folder."""
    rng = random.Random(12)
    for i in range(files):
        path = root / "data" / f"d{i % 10}" / f"f{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.choice((0, 1, 100, 5000, 20000))))
    (root / "links").mkdir()
    (root / "hard").mkdir()
    for i in range(0, files, 10):
        os.symlink(f"../data/d{i % 10}/f{i}.bin", root / "links" / f"l{i}")
        os.link(root / "data" / f"d{i % 10}" / f"f{i}.bin", root / "hard" / f"h{i}")
    os.symlink("links/l0", root / "top")  # a symlink to a symlink
    (root / "empty").mkdir()
    (root / "name with spaces.txt").write_text("spaces\n")


def tar_folder(root: Path, out: Path) -> str:
    """``root`` as the CLI sends a folder (sorted, pax, no owners); returns the input id."""

    def anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(root, arcname=".", filter=anonymous)
    return f"sha256:{hashlib.sha256(out.read_bytes()).hexdigest()}"


def expected_hashes(root: Path) -> dict[str, str]:
    return {f"./{p.relative_to(root)}": hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}  # is_file follows symlinks


def post_input(api, tar: Path, **params):
    with open(tar, "rb") as body:
        return api.post("/api/v1/inputs", params=params, data=body)


def submit_with_input(api, input_id: str, image_tar: Path | None = None, **params):
    spec = json.dumps({"command": ["/bin/sh", "-c", SCRIPT], "input": input_id})
    if image_tar is None:
        return api.post("/api/v1/jobs", params=params, data=b"", headers={"Pink-Job-Spec": spec})
    with open(image_tar, "rb") as body:
        return api.post("/api/v1/jobs", params=params, data=body, headers={"Pink-Job-Spec": spec})


def seen_by_the_job(api, job: dict) -> tuple[dict[str, str], list[str]]:
    """The hashes the job printed, and the rest of its log."""
    log = api.get(f"/api/v1/jobs/{job['id']}/logs").text.splitlines()
    hashes = {line[66:]: line[:64] for line in log if len(line) > 66 and line[64:66] == "  "}
    return hashes, [line for line in log if not (len(line) > 66 and line[64:66] == "  ")]


def test_a_folder_arrives_intact_and_read_only_and_the_next_job_sends_nothing(cluster, images, tmp_path):
    c = cluster(workers=2, nginx=True)  # nginx: a body over max_body_bytes must pass on /inputs
    alice, root = c.api("alice"), c.api("root")
    source = tmp_path / "input"
    make_folder(source)
    tar = tmp_path / "input.tar"
    input_id = tar_folder(source, tar)
    assert tar.stat().st_size > 1 << 20  # more than nginx lets any other request send
    first, second = (w.name for w in c.workers)
    assert alice.get(f"/api/v1/inputs/{input_id}").json() == {"input": input_id, "workers": []}

    # Land the input on the second worker, which placement would not choose by itself.
    assert root.post(f"/api/v1/workers/{first}/drain").status_code == 200
    r = post_input(alice, tar, sha256=input_id)
    assert r.status_code == 201, r.text
    assert r.json() == {"input": input_id, "worker": second, "bytes": tar.stat().st_size}
    assert root.post(f"/api/v1/workers/{first}/drain", params={"undo": "1"}).status_code == 200
    assert alice.get(f"/api/v1/inputs/{input_id}").json()["workers"] == [second]

    r = submit_with_input(alice, input_id, images["writer"])
    assert r.status_code == 201, r.text
    job = wait_state(alice, r.json()["job"]["id"], TERMINAL)
    assert job["state"] == "SUCCEEDED" and (job["worker"], job["input"]) == (second, input_id), job
    hashes, rest = seen_by_the_job(alice, job)
    assert hashes == expected_hashes(source)
    assert len(hashes) > 300  # the files, the hardlinks, the symlinks followed
    assert "input_dir=/in" in rest and "READ-ONLY" in rest, rest
    inode_a, inode_b = (line.split()[0] for line in rest[-2:])
    assert inode_a == inode_b, rest  # a hardlink stays one file
    worker = c.workers[1]
    assert not list(worker.inbox.glob("input-*"))  # extracted: the tar is gone
    assert (worker.config_path.parent / "inputs" / input_id[7:] / "hard" / "h0").is_file()

    # The next job with it sends no input and no image: placed on the holder all the same.
    image = job["image_id"]
    dev.wait_until(lambda: alice.get(f"/api/v1/images/{image}").json()["workers"], 30,
                   "the worker to report the loaded image")
    r = submit_with_input(alice, input_id, image=image)
    assert r.status_code == 201, r.text
    again = wait_state(alice, r.json()["job"]["id"], TERMINAL)
    assert again["state"] == "SUCCEEDED" and again["worker"] == second and again["image_bytes"] == 0, again
    assert seen_by_the_job(alice, again)[0] == hashes


def _tar(*members: tuple[str, str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, content in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(content)
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))  # type: ignore[arg-type]
    return buf.getvalue()


def test_an_unsafe_input_is_a_400_and_leaves_nothing_on_the_worker(cluster):
    c = cluster()
    alice = c.api("alice")
    worker = c.workers[0]
    for body, message in [
        (_tar(("ok.txt", "file", b"fine"), ("../../etc/cron.d/evil", "file", b"* * * * * root id")), "'..' component"),
        (_tar(("ok.txt", "file", b"fine"), ("passwd", "symlink", "/etc/passwd")), "absolute path"),
        (_tar(("ok.txt", "file", b"fine"), ("up", "symlink", "../../..")), "outside the archive"),
    ]:
        r = alice.post("/api/v1/inputs", data=body)
        assert r.status_code == 400 and message in r.json()["error"], r.text
        input_id = f"sha256:{hashlib.sha256(body).hexdigest()}"
        assert alice.get(f"/api/v1/inputs/{input_id}").json()["workers"] == []
    assert not list(worker.inbox.iterdir())
    assert not list((worker.config_path.parent / "inputs").iterdir())


def test_an_input_uploaded_by_one_user_cannot_be_used_by_another(cluster, images):
    c = cluster()
    alice, bob = c.api("alice"), c.api("bob")
    body = _tar(("secret.txt", "file", b"alice's data"))
    r = alice.post("/api/v1/inputs", data=body)
    assert r.status_code == 201, r.text
    input_id = r.json()["input"]
    assert alice.get(f"/api/v1/inputs/{input_id}").json()["workers"] == [c.workers[0].name]
    # Knowing the id is not enough: bob sees no holder, and his job with it is refused.
    assert bob.get(f"/api/v1/inputs/{input_id}").json()["workers"] == []
    r = submit_with_input(bob, input_id, images["writer"])
    assert r.status_code == 400 and "upload the input first" in r.json()["error"], r.text
    assert bob.get("/api/v1/jobs").json()["jobs"] == []
