"""Upload: an image tarball of ``--size`` (one incompressible layer) from the CLI to the worker.

PINK: ``pink submit`` -> nginx (TLS) -> gunicorn -> SSH -> the worker's inbox, MB/s. Baseline:
``ssh worker 'cat > f'`` to a plain sshd on the same host. Target: ≥ 0.9× the baseline's
rate. Also the web server's peak RSS during those uploads and during one more of
``--rss-size`` (target < 150 MB: memory must not grow with the image).

The runs are the end-to-end benchmark's (:func:`bench.e2e.shared_runs`), whose first step is
the upload, on each image of ``--image``; CPU seconds per GiB by hop, one row each (target:
all hops together ≤ 1.15× ``ssh``'s).
"""

from __future__ import annotations

from . import e2e
from . import harness as h
from .harness import MB, Row
from .images import Blob, cached_image


def run(s: h.Session) -> None:
    runs = e2e.shared_runs(s)
    for key, pair in runs.items():
        pinks, hands = pair["pink"], pair["by_hand"]
        img = s.e2e_images[key]
        pu, bu = h.median(r["upload_s"] for r in pinks), h.median(r["upload_s"] for r in hands)
        ratio = bu / pu
        s.rows.append(Row(
            "upload",
            f"{h.human_size(img.size)} {key} image: CLI → nginx → gunicorn → SSH → inbox, MB/s (median)",
            f"{img.size / pu / MB:.0f} ({pu:.2f} s)",
            f"{img.size / bu / MB:.0f} ({bu:.2f} s) `ssh 'cat > f'`, {s.ssh_cipher}",
            f"{ratio:.2f}×", "≥ 0.9×", h.verdict(ratio >= 0.9)))
        rss = max(p["rss"] for p in pinks)
        s.rows.append(Row("upload", f"web server peak RSS, {h.human_size(img.size)} {key} upload",
                          f"{rss / MB:.0f} MB", target="< 150 MB", met=h.verdict(rss < 150 * MB)))
    s.rows.extend(h.cpu_rows("upload", {k: s.e2e_images[k].size for k in runs},
                             {k: [p["cpu"] for p in r["pink"]] for k, r in runs.items()},
                             {k: [b["cpu"] for b in r["by_hand"]] for k, r in runs.items()}, 1.15))
    s.notes.append("upload CPU by hop: the web server's includes the `ssh` client it runs; the "
                   "worker sshd's the gate and `scp -t` writing the file. Ciphers: the by-hand "
                   f"`ssh 'cat > f'` runs OpenSSH's default ({s.ssh_cipher}); PINK's web->worker hop "
                   f"`web.ssh_ciphers` ({s.pink_cipher}); the CLI->nginx hop TLS.")
    if s.args.rss_size:
        peak_rss(s, s.args.rss_size)


def peak_rss(s: h.Session, size: int) -> None:
    """A second, bigger upload for the web server's memory only. The worker daemon is
    stopped meanwhile (its lease, and so its place in the cluster, outlives it for
    lease_ttl_s) and the job cancelled before it comes back, so nobody spends a minute
    loading a 4 GiB image that no benchmark runs."""
    s.log(f"upload: web server peak RSS with a {h.human_size(size)} image")
    img = cached_image(s.work / "images", "rss", ["busybox", Blob("pink-bench-rss", size)],
                       ["true"], "pinkbench-rss:1")
    assert s.cluster is not None
    pids = s.web_pids()
    hwm_ok = h.reset_peak_rss(pids)
    s.cluster.stop_worker(0)
    try:
        with h.RssSampler(pids) as sampler:
            wall, proc = s.cli("submit", str(img.path), "-q", "--output", "none", "--name", "rss")
        rss = max(h.peak_rss(pids) if hwm_ok else 0, sampler.peak)
        job_id = proc.stdout.strip()
        state = s.api.post(f"/api/v1/jobs/{job_id}/cancel").json().get("job", {}).get("state")
        (s.worker.inbox / f"{job_id}.tar").unlink(missing_ok=True)
    finally:
        s.cluster.start_worker(0, timeout=120)
    s.raw["rss"] = {"size": size, "rss": rss, "upload_s": wall, "state": state}
    s.rows.append(Row("upload", f"web server peak RSS, {h.human_size(size)} upload "
                                f"({size / wall / MB:.0f} MB/s)",
                      f"{rss / MB:.0f} MB", target="< 150 MB", met=h.verdict(rss < 150 * MB)))
