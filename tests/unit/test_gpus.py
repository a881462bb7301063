"""GPU discovery: nvidia-smi parsing and the worker.gpus setting."""

from __future__ import annotations

import logging
import subprocess

import pytest

from pink.errors import ConfigError
from gpu_worker.gpus import NVIDIA_SMI_COMMAND, Gpu, discover_gpus, parse_nvidia_smi

# Output shapes as nvidia-smi prints them for
# `--query-gpu=index,uuid,name,memory.total --format=csv,noheader` (", " separators, a
# trailing newline, memory with a " MiB" unit). Names and memory sizes are those these
# models report; UUIDs follow nvidia-smi's GPU-8-4-4-4-12 hex layout.
H100_X8 = """\
0, GPU-4b2e9c1a-7f3d-2a6b-91c4-0d8e5f7a3b21, NVIDIA H100 80GB HBM3, 81559 MiB
1, GPU-9a1f3e7c-5b2d-8e40-a6f1-3c9d7b2e4f08, NVIDIA H100 80GB HBM3, 81559 MiB
2, GPU-e07c4d2b-1a9f-6c35-b8e2-7f4a0d1c9e63, NVIDIA H100 80GB HBM3, 81559 MiB
3, GPU-2d6f8a0e-3c1b-4f97-8d5a-e9b3c7f1a024, NVIDIA H100 80GB HBM3, 81559 MiB
4, GPU-c3b1e8f4-9d7a-0e26-5f1c-4a8b2d6e0f97, NVIDIA H100 80GB HBM3, 81559 MiB
5, GPU-71f0a9d3-6e4c-b2d8-0c9f-5e3a1b7d8c42, NVIDIA H100 80GB HBM3, 81559 MiB
6, GPU-5e9d2c7b-0f8a-3b61-d4e7-a2c6f9b0e185, NVIDIA H100 80GB HBM3, 81559 MiB
7, GPU-a8c4f2e1-d3b9-7a05-e6c2-19f7d0a4b3c6, NVIDIA H100 80GB HBM3, 81559 MiB
"""

A100_40GB_X4 = """\
0, GPU-be299b90-0ff5-e1b4-db53-28465b6f874b, NVIDIA A100-SXM4-40GB, 40960 MiB
1, GPU-3f6a2d81-c4e7-95b0-2a1d-8e7c3f9b6d05, NVIDIA A100-SXM4-40GB, 40960 MiB
2, GPU-d0b7e4c9-8a3f-1c62-f5e9-04a6b2c8d7e1, NVIDIA A100-SXM4-40GB, 40960 MiB
3, GPU-6c1e9f3a-2b8d-4e07-9c3b-f1d5a8e2c640, NVIDIA A100-SXM4-40GB, 40960 MiB
"""

RTX_4090 = "0, GPU-0e5d8b3f-41c7-9a2e-6f0b-d8c3e1a7b594, NVIDIA GeForce RTX 4090, 24564 MiB\n"

# The same A100 box queried with --format=csv,noheader,nounits.
A100_NOUNITS = """\
0, GPU-be299b90-0ff5-e1b4-db53-28465b6f874b, NVIDIA A100-SXM4-40GB, 40960
1, GPU-3f6a2d81-c4e7-95b0-2a1d-8e7c3f9b6d05, NVIDIA A100-SXM4-40GB, 40960
"""

# What nvidia-smi prints (on stdout, exit status 9) when the kernel module is not loaded.
DRIVER_FAILURE = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n\n"
)
# Driver loaded but no device visible (exit status 6).
NO_DEVICES = "No devices were found\n"


class FakeRunner:
    """Stands in for subprocess.run and records how it was called."""

    def __init__(self, stdout: str = "", returncode: int = 0, stderr: str = "",
                 exc: BaseException | None = None) -> None:
        self.stdout, self.returncode, self.stderr, self.exc = stdout, returncode, stderr, exc
        self.calls: list[tuple[list[str], dict]] = []

    def __call__(self, args, **kwargs):
        self.calls.append((list(args), kwargs))
        if self.exc is not None:
            raise self.exc
        return subprocess.CompletedProcess(args, self.returncode, self.stdout, self.stderr)


# ---------------------------------------------------------------- parse_nvidia_smi


def test_parse_eight_h100():
    gpus = parse_nvidia_smi(H100_X8)
    assert [g.index for g in gpus] == list(range(8))
    assert all(g.name == "NVIDIA H100 80GB HBM3" and g.memory_mib == 81559 for g in gpus)
    assert gpus[0] == Gpu(0, "GPU-4b2e9c1a-7f3d-2a6b-91c4-0d8e5f7a3b21", "NVIDIA H100 80GB HBM3", 81559)
    assert len({g.uuid for g in gpus}) == 8


def test_parse_a100_40gb():
    gpus = parse_nvidia_smi(A100_40GB_X4)
    assert len(gpus) == 4
    assert gpus[3] == Gpu(3, "GPU-6c1e9f3a-2b8d-4e07-9c3b-f1d5a8e2c640", "NVIDIA A100-SXM4-40GB", 40960)


def test_parse_geforce_4090():
    assert parse_nvidia_smi(RTX_4090) == [
        Gpu(0, "GPU-0e5d8b3f-41c7-9a2e-6f0b-d8c3e1a7b594", "NVIDIA GeForce RTX 4090", 24564)
    ]


def test_parse_nounits_matches_units():
    assert parse_nvidia_smi(A100_NOUNITS) == parse_nvidia_smi(A100_40GB_X4)[:2]


def test_parse_tolerates_crlf_blank_lines_and_sorts_by_index():
    text = "\r\n".join(reversed(A100_40GB_X4.splitlines())) + "\r\n\r\n"
    assert parse_nvidia_smi(text) == parse_nvidia_smi(A100_40GB_X4)


def test_parse_empty_output_is_no_gpus():
    assert parse_nvidia_smi("") == []
    assert parse_nvidia_smi("\n  \n") == []


def test_parse_name_with_comma_is_kept_whole():
    gpus = parse_nvidia_smi("0, GPU-1111aaaa-2222-3333-4444-555566667777, Odd, Name, 1024 MiB\n")
    assert gpus[0].name == "Odd, Name" and gpus[0].memory_mib == 1024


@pytest.mark.parametrize(
    "line",
    [
        DRIVER_FAILURE.strip(),
        NO_DEVICES.strip(),
        "index, uuid, name, memory.total [MiB]",  # someone dropped "noheader"
        "0, GPU-be299b90-0ff5-e1b4-db53-28465b6f874b, NVIDIA A100-SXM4-40GB",  # a column short
        "0, GPU-be299b90-0ff5-e1b4-db53-28465b6f874b, NVIDIA A100-SXM4-40GB, [N/A]",
        "0, GPU-be299b90-0ff5-e1b4-db53-28465b6f874b, NVIDIA A100-SXM4-40GB, 40 GiB",
        "x, GPU-be299b90-0ff5-e1b4-db53-28465b6f874b, NVIDIA A100-SXM4-40GB, 40960 MiB",
        "0, be299b90-0ff5-e1b4-db53-28465b6f874b, NVIDIA A100-SXM4-40GB, 40960 MiB",
        "0, GPU-be299b90-0ff5-e1b4-db53-28465b6f874b, , 40960 MiB",
    ],
)
def test_parse_malformed_line_raises_with_the_line(line):
    text = RTX_4090 + line + "\n"
    with pytest.raises(ValueError) as err:
        parse_nvidia_smi(text)
    assert line in str(err.value)


def test_parse_duplicate_index_raises():
    with pytest.raises(ValueError, match="listed twice"):
        parse_nvidia_smi(RTX_4090 + RTX_4090)


# ---------------------------------------------------------------- discover_gpus


def test_auto_runs_the_documented_query_with_a_timeout():
    runner = FakeRunner(H100_X8)
    gpus = discover_gpus("auto", runner=runner)
    assert len(gpus) == 8
    [(args, kwargs)] = runner.calls
    assert args == list(NVIDIA_SMI_COMMAND)
    assert args[1] == "--query-gpu=index,uuid,name,memory.total"
    assert kwargs["timeout"] > 0 and kwargs["text"] is True and kwargs["capture_output"] is True


def test_auto_is_the_default_and_case_insensitive():
    assert discover_gpus(runner=FakeRunner(RTX_4090)) == parse_nvidia_smi(RTX_4090)
    assert discover_gpus(" AUTO ", runner=FakeRunner(RTX_4090)) == parse_nvidia_smi(RTX_4090)


@pytest.mark.parametrize(
    "runner, why",
    [
        (FakeRunner(exc=FileNotFoundError(2, "No such file or directory", "nvidia-smi")), "not installed"),
        (FakeRunner(DRIVER_FAILURE, returncode=9), "couldn't communicate with the NVIDIA driver"),
        (FakeRunner(NO_DEVICES, returncode=6), "No devices were found"),
        (FakeRunner(exc=subprocess.TimeoutExpired(list(NVIDIA_SMI_COMMAND), 30)), "did not answer"),
        (FakeRunner(exc=PermissionError(13, "Permission denied")), "could not be run"),
    ],
    ids=["absent", "driver-failure", "no-devices", "timeout", "not-executable"],
)
def test_auto_degrades_to_cpu_only_with_one_warning(runner, why, caplog):
    caplog.set_level(logging.DEBUG, logger="gpu_worker.gpus")
    assert discover_gpus("auto", runner=runner) == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert why in warnings[0].getMessage()
    assert "CPU-only" in warnings[0].getMessage()


def test_auto_does_not_hide_unreadable_output():
    with pytest.raises(ValueError):
        discover_gpus("auto", runner=FakeRunner("garbage\n"))


def test_none_never_runs_nvidia_smi():
    runner = FakeRunner(H100_X8)
    assert discover_gpus("none", runner=runner) == []
    assert discover_gpus("None", runner=runner) == []
    assert runner.calls == []


def test_explicit_indices_select_those_gpus():
    gpus = discover_gpus("0,2", runner=FakeRunner(A100_40GB_X4))
    assert [g.index for g in gpus] == [0, 2]
    assert gpus[1].uuid == "GPU-d0b7e4c9-8a3f-1c62-f5e9-04a6b2c8d7e1"
    assert [g.index for g in discover_gpus(" 7 , 3 ", runner=FakeRunner(H100_X8))] == [3, 7]


def test_explicit_index_not_present_is_a_config_error():
    with pytest.raises(ConfigError, match=r"no GPU 4 \(present: 0,1,2,3\)"):
        discover_gpus("0,4", runner=FakeRunner(A100_40GB_X4))


def test_explicit_indices_when_nvidia_smi_fails_is_a_config_error():
    # The operator named GPUs: running CPU-only would silently break that promise.
    with pytest.raises(ConfigError, match="couldn't communicate"):
        discover_gpus("0", runner=FakeRunner(DRIVER_FAILURE, returncode=9))


@pytest.mark.parametrize("setting", ["", "0,,1", "gpu0", "-1", "0;1", "1,1"])
def test_bad_setting_is_a_config_error(setting):
    runner = FakeRunner(H100_X8)
    with pytest.raises(ConfigError, match="worker.gpus"):
        discover_gpus(setting, runner=runner)
    assert runner.calls == []
