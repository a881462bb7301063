"""etcd: what one job costs the cluster database over its whole life, submit -> SUCCEEDED.

``--etcd-jobs`` jobs on a held image (output full), one after another. Write transactions,
keys put or deleted and their bytes come from etcd's own history (a watch from the revision
before the first job); WAL bytes and fsyncs and unary requests by method from etcd's metrics,
less the idle cluster's background rate over ``--etcd-idle`` seconds measured just before.
There is no baseline and no target: the numbers are recorded to see them change.
"""

from __future__ import annotations

import base64
import json
import re
import time

import requests

from . import harness as h
from .harness import Row


def etcd_metrics(client_url: str) -> dict[str, float]:
    text = requests.get(f"{client_url}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def etcd_summary(client_url: str) -> dict[str, float]:
    """Counters that say what clients asked of etcd."""
    m = etcd_metrics(client_url)
    out = {"writes (raft proposals)": m.get("etcd_server_proposals_committed_total", 0),
           "WAL bytes": m.get("etcd_disk_wal_write_bytes_total", 0),
           "WAL fsyncs": m.get("etcd_disk_wal_fsync_duration_seconds_count", 0)}
    for key, value in m.items():
        if key.startswith("grpc_server_handled_total{") and 'grpc_type="unary"' in key:
            method = re.search(r'grpc_method="(\w+)"', key).group(1)
            out[f"rpc {method}"] = out.get(f"rpc {method}", 0) + value
        elif key.startswith("grpc_server_msg_received_total{") and 'grpc_type="bidi_stream"' in key:
            method = re.search(r'grpc_method="(\w+)"', key).group(1)
            out[f"stream msg {method}"] = out.get(f"stream msg {method}", 0) + value
    return out


def etcd_revision(url: str) -> int:
    r = requests.post(f"{url}/v3/kv/range", json={"key": "AA=="}, timeout=5)
    return int(r.json()["header"]["revision"])


def etcd_writes(url: str, prefix: bytes, rev0: int, rev1: int) -> dict:
    """Every put/delete under ``prefix`` between two revisions, from etcd's history (a watch
    from rev0)."""
    end = bytearray(prefix)
    end[-1] += 1
    body = {"create_request": {"key": base64.b64encode(prefix).decode(),
                               "range_end": base64.b64encode(bytes(end)).decode(),
                               "start_revision": rev0 + 1}}
    revisions, events, nbytes = set(), 0, 0
    by_kind: dict[str, dict[str, int]] = {}
    with requests.post(f"{url}/v3/watch", json=body, stream=True, timeout=10) as r:
        for line in r.iter_lines():
            msg = json.loads(line).get("result", {})
            done = False
            for ev in msg.get("events", []):
                kv = ev["kv"]
                rev = int(kv.get("mod_revision", 0))
                if rev > rev1:
                    done = True
                    continue
                key = base64.b64decode(kv["key"])
                value = base64.b64decode(kv.get("value", ""))
                revisions.add(rev)
                events += 1
                nbytes += len(key) + len(value)
                kind = key[len(prefix):].decode().strip("/").split("/")[0]
                entry = by_kind.setdefault(kind, {"events": 0, "bytes": 0})
                entry["events"] += 1
                entry["bytes"] += len(key) + len(value)
            if done or (msg.get("header") and int(msg["header"].get("revision", 0)) >= rev1
                        and revisions and max(revisions) >= rev1 - 1):
                break
    return {"revisions": len(revisions), "events": events, "bytes": nbytes, "by_kind": by_kind}


def run(s: h.Session) -> None:
    a = s.args
    k = a.etcd_jobs
    assert s.cluster is not None and s.cluster.etcd is not None
    url = s.cluster.etcd.members[0].client_url
    s.ensure_held(s.img_d)
    s.log(f"etcd: idle {a.etcd_idle:.0f} s, then {k} jobs (output full) one after another")
    time.sleep(2)  # what the benchmarks before left behind settles
    m0, t0 = etcd_summary(url), time.monotonic()
    time.sleep(a.etcd_idle)
    m1, t1 = etcd_summary(url), time.monotonic()
    idle = {key: (m1.get(key, 0) - m0.get(key, 0)) / (t1 - t0) for key in m1}
    rev0 = etcd_revision(url)
    m2, t2 = etcd_summary(url), time.monotonic()
    ids = []
    for i in range(k):
        r = s.api.post("/api/v1/jobs", params={"image": s.img_d.image_id, "timeout": 300, "name": f"e{i}"},
                       data=b"", headers={"Content-Length": "0"})
        r.raise_for_status()
        ids.append(r.json()["job"]["id"])
        # Wait on the worker's files, not the API, so the wait itself reads nothing from etcd.
        # A job that makes no archive is not fatal: its state goes to the notes.
        archive = s.worker.outbox / f"{ids[-1]}.tar.zst"
        deadline = time.monotonic() + 120
        while not archive.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    time.sleep(2.0)  # the terminal transition follows the archive's rename
    m3, t3 = etcd_summary(url), time.monotonic()
    rev1 = etcd_revision(url)
    writes = etcd_writes(url, s.cluster.etcd_prefix.encode(), rev0, rev1)
    states = [s.job(j)["state"] for j in ids]
    per_job = {key: (m3.get(key, 0) - m2.get(key, 0) - idle.get(key, 0) * (t3 - t2)) / k
               for key in m3}
    # The benchmark's own reads: two revision probes (Range).
    per_job["rpc Range"] = per_job.get("rpc Range", 0) - 2 / k
    s.raw["etcd"] = {"jobs": k, "idle_per_s": idle, "per_job": per_job, "writes": writes,
                     "states": states, "window_s": t3 - t2}
    if any(state != "SUCCEEDED" for state in states):
        s.notes.append(f"etcd: job states {states}")
    rpcs = {key[4:]: max(v, 0.0) for key, v in per_job.items() if key.startswith("rpc ") and abs(v) >= 0.05}
    s.rows.append(Row(
        "etcd", f"per job (submit → SUCCEEDED, output full, {k} jobs): write transactions / keys put+deleted / "
                "bytes written (keys+values) / WAL bytes / WAL fsyncs",
        f"{writes['revisions'] / k:.1f} / {writes['events'] / k:.1f} / {writes['bytes'] / k / 1000:.1f} kB / "
        f"{per_job.get('WAL bytes', 0) / 1000:.1f} kB / {per_job.get('WAL fsyncs', 0):.1f}"))
    s.rows.append(Row(
        "etcd", "per job: requests (unary RPCs, idle background subtracted)",
        f"{sum(rpcs.values()):.1f}: " + ", ".join(f"{key} {v:.1f}" for key, v in sorted(rpcs.items())),
        f"idle cluster: {sum(v for key, v in idle.items() if key.startswith('rpc ')):.1f} RPC/s"))
    s.notes.append("etcd writes per job by key kind: " + ", ".join(
        f"{kind} {v['events'] / k:.1f} ({v['bytes'] / k / 1000:.1f} kB)"
        for kind, v in sorted(writes["by_kind"].items())))
