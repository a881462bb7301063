"""The job page shows a run's GPU samples (utilisation, peak memory) when the job has them.

This host has no GPU, so no job here can be sampled: the test runs a real CPU job, then writes
the three fields into its record as a GPU worker's end of run does (gpu_worker/gpustats.py,
whose sampling tests/unit/test_metrics_unit.py checks against recorded NVML readings)."""

from __future__ import annotations

import dataclasses

from tests.helpers import TERMINAL, submit, wait_state

from pink import config as pink_config
from pink.store import Store


def test_the_job_page_shows_gpu_use_when_the_job_has_it(new_page, ui_cluster, images):
    api = ui_cluster.api("dana")
    r = submit(api, images["writer"], name="gpu-metrics", timeout=60)
    assert r.status_code == 201, r.text
    job_id = r.json()["job"]["id"]
    assert wait_state(api, job_id, TERMINAL)["state"] == "SUCCEEDED"
    page = new_page("dana")
    page.goto(f"{ui_cluster.url}/jobs/{job_id}")
    page.wait_for_selector("#job-state .badge[data-state=SUCCEEDED]")
    assert page.locator("dd.job-gpu-util").count() == 0  # a CPU job: no GPU rows

    store = Store(pink_config.load(str(ui_cluster.config_path), env={}).etcd)
    try:
        job = dataclasses.replace(store.get_job(job_id), gpu_util_mean=87.5, gpu_util_max=100.0,
                                  gpu_mem_peak_bytes=79456894976)
        store.etcd.call(lambda client: client.put(store.job_key(job_id), job.to_json()))
    finally:
        store.etcd.close()
    page.reload()
    page.wait_for_selector("dd.job-gpu-util")
    assert page.locator("dd.job-gpu-util").inner_text() == "mean 87.5%, max 100%"
    assert page.locator("dd.job-gpu-mem").inner_text() == "74.0 GiB"
