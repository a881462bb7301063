"""End to end: submit -> archive ready, for an image of ``--size`` with a trivial command.

PINK: ``pink submit`` via nginx (TLS) -> gunicorn -> SSH -> the worker, which loads the image,
runs it and exports the container's filesystem as a zstd archive, until the job is
SUCCEEDED. Baseline, the same steps by hand: ``ssh worker 'cat > f'``, ``docker load``,
``docker run``, ``docker export | zstd``. Target: PINK ≤ 1.0× the time by hand.

The runs (``--reps``, PINK and by hand alternating, and the images of ``--image`` taking
turns within each rep) are shared with the upload benchmark: each one's upload is its first
step. This module makes them once per session.
"""

from __future__ import annotations

import subprocess
import time
import uuid

from . import harness as h
from .harness import MB, Row
from .images import BuiltImage


def pink_e2e(s: h.Session, key: str, img: BuiltImage) -> dict:
    s.forget(img)
    pids = s.web_pids()
    hwm_ok = h.reset_peak_rss(pids)
    with h.RssSampler(pids) as sampler, h.CpuMeter(s.pink_trees()) as cpu:
        t0 = time.time()
        wall, proc = s.cli("submit", str(img.path), "-q", "--name", "e2e", "--timeout", "900")
    rss = max(h.peak_rss(pids) if hwm_ok else 0, sampler.peak)
    job_id = proc.stdout.strip()
    job = s.wait_job(job_id)
    if job["state"] != "SUCCEEDED":
        raise RuntimeError(f"e2e job {job_id} ended {job['state']}: {job.get('reason')}")
    at = {hh["state"]: hh["at"] for hh in job["history"]}
    s.last_e2e_job[key] = job
    return {
        "upload_s": wall, "e2e_s": at["SUCCEEDED"] - t0, "queued_s": at["QUEUED"] - t0,
        "running_s": at["RUNNING"] - t0, "exporting_s": at["EXPORTING"] - t0,
        "rss": rss, "job": job_id, "image_bytes": job["image_bytes"],
        "output_bytes": job["output_bytes"], "cpu": cpu.used,
    }


def by_hand_e2e(s: h.Session, img: BuiltImage) -> dict:
    s.forget(img)
    assert s.sshd is not None
    folder = s.work / "by-hand"
    folder.mkdir(exist_ok=True)
    dest, out = folder / "image.tar", folder / "out.tar.zst"
    name = f"pinkbench-hand-{uuid.uuid4().hex[:8]}"
    with h.CpuMeter({"sshd": s.sshd.pid}) as cpu:
        t0 = time.time()
        with open(img.path, "rb") as f:
            subprocess.run(s.sshd.ssh_argv(f"cat > {dest}"), stdin=f, check=True)
        t1 = time.time()
    s.worker.docker("load", "-q", "-i", str(dest), timeout=600)
    t2 = time.time()
    s.worker.docker("run", "--name", name, "--network", "none", img.image_id, timeout=600)
    t3 = time.time()
    subprocess.run(["bash", "-o", "pipefail", "-c",
                    f"docker -H {s.worker.docker_url} export {name} | zstd -1 -T0 -q > {out}"], check=True)
    t4 = time.time()
    s.worker.docker("rm", "-f", name, check=False)
    size = out.stat().st_size
    dest.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    return {"upload_s": t1 - t0, "e2e_s": t4 - t0, "load_s": t2 - t1, "run_s": t3 - t2,
            "export_s": t4 - t3, "output_bytes": size, "cpu": cpu.used}


def shared_runs(s: h.Session) -> dict[str, dict[str, list[dict]]]:
    """{image: {"pink": [...], "by_hand": [...]}}, one entry per rep; made on the first call."""
    if "upload_e2e" not in s.raw:
        images = s.e2e_images
        s.log(f"upload/e2e: {', '.join(f'{k} {h.human_size(i.size)}' for k, i in images.items())}, "
              f"{s.args.reps} reps, PINK and by hand alternating")
        runs: dict[str, dict[str, list[dict]]] = {k: {"pink": [], "by_hand": []} for k in images}
        for rep in range(s.args.reps):
            for key in (list(images) if rep % 2 == 0 else list(reversed(images))):
                img = images[key]
                p, b = h.alternate(rep, lambda: pink_e2e(s, key, img), lambda: by_hand_e2e(s, img))
                runs[key]["pink"].append(p)
                runs[key]["by_hand"].append(b)
                s.log(f"  rep {rep + 1} {key}: upload PINK {p['upload_s']:.2f}s / ssh cat {b['upload_s']:.2f}s; "
                      f"e2e PINK {p['e2e_s']:.2f}s / by hand {b['e2e_s']:.2f}s; web RSS {p['rss'] / MB:.0f} MB "
                      f"(load {h.load_average()})")
        s.raw["upload_e2e"] = runs
    return s.raw["upload_e2e"]


def run(s: h.Session) -> None:
    def med(rows: list[dict], key: str) -> float:
        return h.median(r[key] for r in rows)

    for key, runs in shared_runs(s).items():
        pinks, hands = runs["pink"], runs["by_hand"]
        pe, be = med(pinks, "e2e_s"), med(hands, "e2e_s")
        ratio = pe / be
        s.rows.append(Row(
            "e2e", f"{h.human_size(s.e2e_images[key].size)} {key} image ({len(s.e2e_images[key].diff_ids)} layers), "
                   "trivial command: submit → archive ready, s (median)",
            f"{pe:.2f}",
            f"{be:.2f} (ssh cat, docker load, docker run, docker export \\| zstd)",
            f"{ratio:.2f}×", "≤ 0.9×", h.verdict(ratio <= 0.9)))
        s.notes.append(
            f"e2e stages, {key} image (medians, seconds from the command): PINK upload done (QUEUED) "
            f"{med(pinks, 'queued_s'):.2f}, RUNNING {med(pinks, 'running_s'):.2f}, EXPORTING "
            f"{med(pinks, 'exporting_s'):.2f}, archive ready {pe:.2f}; by hand: ssh cat "
            f"{med(hands, 'upload_s'):.2f}, + docker load {med(hands, 'load_s'):.2f}, + docker run "
            f"{med(hands, 'run_s'):.2f}, + export\\|zstd {med(hands, 'export_s'):.2f}.")
