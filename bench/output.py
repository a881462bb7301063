"""Output modes: what a small result costs on a large image (issue #13).

An image of ``--size`` in 6 layers (busybox and 5 layers of incompressible data) whose job
writes ``WRITTEN`` incompressible bytes to /out, held by the worker; each rep runs it once with
each output mode, in turn: ``full`` (the container's filesystem, the baseline), ``changes``
(what the job wrote, from ``docker diff`` and the engine's archive API) and ``path:/out`` (an
empty volume at /out). Measured: the container's exit (docker's FinishedAt, recorded as the
job's finished_at) to SUCCEEDED, and the archive's size. Targets: ``changes`` ≤ 0.1× the time
of ``full``; its archive within 2× of what the job wrote.
"""

from __future__ import annotations

from . import harness as h
from .harness import Row
from .images import Blob, cached_image

MODES = ("full", "changes", "path:/out")
LAYERS = 5


def written(s: h.Session) -> int:
    """What the job writes: 10 MiB (1 MiB in smoke runs)."""
    return (1 if s.args.smoke else 10) << 20


def run_one(s: h.Session, img, mode: str) -> dict:
    _, proc = s.cli("submit", str(img.path), "-q", "--output", mode, "--name", f"output-{mode}", "--timeout", "900")
    job = s.wait_job(proc.stdout.strip())
    at = {hh["state"]: hh["at"] for hh in job["history"]}
    return {"mode": mode, "state": job["state"], "reason": job.get("reason", ""),
            "exit_to_end_s": at.get("SUCCEEDED", float("nan")) - (job.get("finished_at") or float("nan")),
            "output_bytes": job["output_bytes"], "entries": job.get("output_entries", [])}


def run(s: h.Session) -> None:
    a = s.args
    size = written(s)
    script = f"mkdir -p /out && head -c {size} /dev/urandom > /out/result.bin"
    layers = ["busybox", *(Blob(f"pink-bench-output-{i}", a.size // LAYERS, f"layer{i}/blob") for i in range(LAYERS))]
    img = cached_image(s.work / "images", "output", layers, ["/bin/sh", "-c", script], "pinkbench-output:1")
    s.log(f"output: a {h.human_size(img.size)} image in {len(layers)} layers whose job writes "
          f"{h.human_size(size)}; {', '.join(MODES)} x {a.reps}")
    s.ensure_held(img)
    runs = {mode: [] for mode in MODES}
    for rep in range(a.reps):
        for result in h.alternate(rep, *(lambda m=m: run_one(s, img, m) for m in MODES)):
            runs[result["mode"]].append(result)
    s.raw["output"] = runs
    bad = [r for rs in runs.values() for r in rs if r["state"] != "SUCCEEDED"]
    if bad:
        s.notes.append(f"output: {len(bad)} jobs did not succeed: {bad}")
    took = {m: h.median(r["exit_to_end_s"] for r in runs[m]) for m in MODES}
    kept = {m: h.median(r["output_bytes"] for r in runs[m]) for m in MODES}
    what = f"{h.human_size(img.size)} image, {len(layers)} layers, job writes {h.human_size(size)}"
    for mode in ("changes", "path:/out"):
        ratio = took[mode] / took["full"] if took["full"] else float("nan")
        s.rows.append(Row(
            "output", f"{what}: container exit → SUCCEEDED, s (median): `{mode}` vs `full`",
            f"{took[mode]:.2f}", f"{took['full']:.2f}", f"{ratio:.3f}×",
            "≤ 0.1×" if mode == "changes" else "-", h.verdict(ratio <= 0.1) if mode == "changes" else "-"))
    for mode in ("changes", "path:/out"):
        ratio = kept[mode] / size
        s.rows.append(Row(
            "output", f"{what}: archive size, `{mode}` (baseline: `full`; ratio: ÷ what the job wrote)",
            h.human_size(kept[mode]), h.human_size(kept["full"]), f"{ratio:.2f}×",
            "≤ 2×" if mode == "changes" else "-", h.verdict(ratio <= 2) if mode == "changes" else "-"))
