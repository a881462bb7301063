"""The container of one job: what it is created with (DESIGN §2.3).

Used by the run of a claimed job (gpu_worker.runner) and by the containers made ahead for
the jobs next in the queue (gpu_worker.ahead): both create the same container.
"""

from __future__ import annotations

import os

import docker
import docker.types

from pink.config import WorkerConfig
from pink.model import Job

from .inputs import IN_DIR, InputError, Inputs
from .outputs import output_mounts

#: Where a job's datasets are mounted (read-only, one folder each).
DATA_DIR = "/data"
#: The capabilities a job keeps (all others are dropped), Docker's defaults less those batch
#: work does not need: NET_RAW, NET_BIND_SERVICE (jobs have no network), MKNOD (no devices),
#: SYS_CHROOT, SETPCAP, SETFCAP (no changing capabilities) and AUDIT_WRITE.
JOB_CAPABILITIES = (
    "CHOWN",         # chown files it made: package installs, tar and cp -a keep owners
    "DAC_OVERRIDE",  # root reads and writes files whatever their mode, as images expect of root
    "FOWNER",        # chmod and utime on files of other owners (tar, cp -p, pip)
    "FSETID",        # keep setuid/setgid bits when root changes a file (package installs)
    "SETUID",        # drop to another user (su, gosu, images that start as root and step down)
    "SETGID",        # the same for groups
    "KILL",          # signal its own processes that run as other users (a process supervisor)
)
#: Docker's json-file log of a job may grow to this many times worker.max_log_bytes before it
#: is rotated. Docker stores each line with ~70 bytes of JSON around it and its log follower
#: loses lines when the file rotates (6 MB of "y" lines kept 2.8 MB with a 100 MB file), so
#: the file must not rotate before the job printed max_log_bytes: this covers lines of 10
#: bytes or more on average. Two files are kept: at most 16 x max_log_bytes per container.
LOG_FILE_FACTOR = 8
#: The label of a container made ahead, before its job was claimed: the mod_revision of the
#: QUEUED job record it was made from (gpu_worker.ahead).
AHEAD_LABEL = "pink.ahead"


class SpecError(Exception):
    """The job cannot get a container here (a dataset or its input is missing): the reason."""


def host_cpus() -> int:
    return os.cpu_count() or 1


def host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def container_name(job_id: str) -> str:
    return f"pink-{job_id}"


def create_container(engine: docker.DockerClient, cfg: WorkerConfig, job: Job, runtime: str, inputs: Inputs,
                     ahead: bool = False):
    """Create (not start) the container of ``job``; a container made ``ahead`` of the job's
    claim is labelled with the record's revision. Raises :class:`SpecError`, and what docker
    raises (``ImageNotFound`` when the image is not loaded yet)."""
    labels = {"pink.job": job.id, "pink.user": job.user, "pink.worker": cfg.name}
    if ahead:
        labels[AHEAD_LABEL] = str(job.mod_revision)
    kwargs: dict = dict(
        name=container_name(job.id),
        labels=labels,
        environment={**job.env, **pink_env(job, cfg.name)},
        network_mode=cfg.network,
        privileged=False,
        security_opt=["no-new-privileges"],
        cap_drop=["ALL"],
        cap_add=list(JOB_CAPABILITIES),
        pids_limit=cfg.pids_limit,
        log_config=docker.types.LogConfig(type="json-file", config={
            "max-size": str(LOG_FILE_FACTOR * cfg.max_log_bytes), "max-file": "2"}),
        mounts=[docker.types.Mount(target=f"{DATA_DIR}/{name}", source=_dataset_path(cfg, name), type="bind",
                                   read_only=True) for name in job.datasets] + _input_mounts(job, inputs)
        + output_mounts(job.output, lambda: engine.images.get(job.image_id).attrs),
    )
    # None: the image's own. An empty entrypoint (not None) clears the image's.
    if job.command is not None:
        kwargs["command"] = list(job.command)
    if job.entrypoint is not None:
        kwargs["entrypoint"] = list(job.entrypoint)
    if job.workdir:
        kwargs["working_dir"] = job.workdir
    if job.cpus:
        kwargs["nano_cpus"] = int(job.cpus * 1e9)
    if job.memory_bytes:
        kwargs["mem_limit"] = kwargs["memswap_limit"] = job.memory_bytes  # no swap on top
    if job.shm_bytes:
        kwargs["shm_size"] = job.shm_bytes
    if job.gpu_indices:
        kwargs["device_requests"] = [docker.types.DeviceRequest(
            driver="nvidia", device_ids=[str(i) for i in job.gpu_indices], capabilities=[["gpu"]])]
        if runtime:
            kwargs["runtime"] = runtime
    # The low-level calls: containers.create() would inspect the new container too, and
    # nothing needs its details before it has started.
    api = engine.api
    host_keys = ("network_mode", "privileged", "security_opt", "cap_drop", "cap_add", "pids_limit", "log_config",
                 "mounts", "nano_cpus", "mem_limit", "memswap_limit", "shm_size", "device_requests", "runtime")
    host_config = api.create_host_config(**{k: kwargs.pop(k) for k in host_keys if k in kwargs})
    if job.gpu_indices:
        # The NVIDIA container toolkit does not support user namespaces: a GPU job keeps the
        # host's users on a worker whose engine remaps them (README, "Security model").
        host_config["UsernsMode"] = "host"
    created = api.create_container(job.image_id, host_config=host_config, **kwargs)
    return engine.containers.prepare_model({"Id": created["Id"], "Name": kwargs["name"],
                                            "Config": {"Labels": labels}})


def pink_env(job: Job, worker: str) -> dict[str, str]:
    """What every job is told (docs/jobs.md); limits of 0 (none) are told as the host's."""
    return {
        "PINK_JOB_ID": job.id,
        "PINK_JOB_NAME": job.name,
        "PINK_USER": job.user,
        "PINK_WORKER": worker,
        "PINK_GPUS": ",".join(map(str, job.gpu_indices)),
        "PINK_CPUS": f"{job.cpus or host_cpus():g}",
        "PINK_MEMORY_BYTES": str(job.memory_bytes or host_memory_bytes()),
        "PINK_DATA_DIR": DATA_DIR,
        "PINK_DATASETS": ",".join(job.datasets),
        "PINK_INPUT_DIR": IN_DIR,
        **({"PINK_ARRAY_ID": job.array_id, "PINK_ARRAY_INDEX": str(job.array_index),
            "PINK_ARRAY_SIZE": str(job.array_size)} if job.array_id else {}),
    }


def _dataset_path(cfg: WorkerConfig, name: str) -> str:
    path = cfg.datasets.get(name, "")
    if not os.path.isdir(path):
        raise SpecError(f"dataset {name} is not on worker {cfg.name} any more")
    return path


def _input_mounts(job: Job, inputs: Inputs) -> list[docker.types.Mount]:
    """The job's input, read-only at /in (extracted first if this is its first job here)."""
    if not job.input:
        return []
    try:
        folder = inputs.folder(job.input)
    except InputError as exc:
        raise SpecError(str(exc)) from None
    return [docker.types.Mount(target=IN_DIR, source=str(folder), type="bind", read_only=True)]


def ahead_revision(container) -> int | None:
    """The job revision a container was made ahead from; None for one made after the claim."""
    value = (container.labels or {}).get(AHEAD_LABEL)
    return int(value) if value and value.isdigit() else None
