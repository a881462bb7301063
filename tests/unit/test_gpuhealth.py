"""GPU health: parsing nvidia-smi's failure outputs and the kernel's Xid lines (fixtures in
tests/unit/data/gpuhealth, reconstructed from NVIDIA's documented formats: see its README),
and the checks that turn them into quarantines by index."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gpu_worker.gpuhealth import (DETAIL_COMMAND, LIST_COMMAND, GpuHealth, bus_key, parse_list, parse_query,
                                  parse_xids, problems)
from gpu_worker.gpus import Gpu

DATA = Path(__file__).parent / "data" / "gpuhealth"
B0, B1 = bus_key("00000000:3B:00.0"), bus_key("00000000:5E:00.0")
GPUS = [Gpu(0, "GPU-5f8e8c6e-1b4a-4c2e-9f3d-7a1b2c3d4e5f", "NVIDIA H100 80GB HBM3", 81559),
        Gpu(1, "GPU-a2c4e6f8-0b1d-4e3f-8a5c-6d7e8f9a0b1c", "NVIDIA H100 80GB HBM3", 81559)]


def fixture(name: str) -> str:
    return (DATA / name).read_text()


class FakeHost:
    """A runner answering as nvidia-smi and dmesg would, from fixture files set per command."""

    def __init__(self, listing="query_2gpus.csv", detail="q_healthy_h100.txt", dmesg=""):
        self.listing, self.detail, self.dmesg = listing, detail, dmesg
        self.list_rc = 0
        self.dmesg_rc = 0

    def __call__(self, argv, **kwargs):
        if tuple(argv) == LIST_COMMAND:
            return subprocess.CompletedProcess(argv, self.list_rc, fixture(self.listing), "")
        if tuple(argv) == DETAIL_COMMAND:
            return subprocess.CompletedProcess(argv, 0, fixture(self.detail), "")
        if argv == ["dmesg"]:
            if self.dmesg_rc:
                return subprocess.CompletedProcess(argv, 1, "", "dmesg: read kernel buffer failed: Operation not permitted")
            return subprocess.CompletedProcess(argv, 0, self.dmesg, "")
        raise AssertionError(f"unexpected command {argv}")


def test_bus_ids_in_every_spelling_match():
    assert bus_key("00000000:3B:00.0") == bus_key("0000:3B:00.0") == bus_key("PCI:0000:3b:00") == (0, 0x3B, 0)


def test_the_listing_of_a_host_with_a_lost_gpu():
    rows, lost = parse_list(fixture("query_lost.txt"))
    assert rows == {GPUS[1].uuid: (1, B1)}
    assert lost == {B0: "GPU is lost. Reboot the system to recover this GPU"}


def test_healthy_h100s_have_no_problems():
    sections = parse_query(fixture("q_healthy_h100.txt"))
    assert set(sections) == {B0, B1}
    assert sections[B0]["Remapped Rows"]["Pending"] == "No"
    assert [problems(s) for s in sections.values()] == [[], []]


def test_volatile_double_bit_errors_and_a_pending_retirement_on_a_v100():
    sections = parse_query(fixture("q_ecc_dbe_v100.txt"))
    assert problems(sections[B0]) == []  # aggregate single-bit errors only: fine
    assert problems(sections[B1]) == ["2 uncorrectable ECC error(s) since the driver loaded",
                                      "a page retirement is pending (reset the GPU)"]


def test_row_remapping_failure_and_pending_on_an_a100():
    sections = parse_query(fixture("q_row_remap_failure_a100.txt"))
    assert problems(sections[B0]) == ["row remapping failed (the GPU needs service)"]
    assert problems(sections[B1]) == ["a row remapping is pending (reset the GPU)"]


def test_sram_uncorrectable_errors_on_an_h100():
    sections = parse_query(fixture("q_sram_uncorrectable_h100.txt"))
    assert problems(sections[B0]) == []
    assert problems(sections[B1]) == ["1 uncorrectable ECC error(s) since the driver loaded"]


def test_xid_lines_of_the_kernel_log():
    xids = parse_xids(fixture("dmesg_xid.txt"))
    assert [(b, x) for b, x, _ in xids] == [(B1, 13), (B0, 48), (B0, 79)]
    assert xids[2][2].endswith("GPU has fallen off the bus.")


def test_check_quarantines_only_the_failing_gpu():
    host = FakeHost(detail="q_sram_uncorrectable_h100.txt")
    assert GpuHealth(GPUS, runner=host, xid_source="").check() == {
        1: "1 uncorrectable ECC error(s) since the driver loaded"}


def test_a_gpu_that_falls_off_the_bus_is_quarantined_by_its_own_index():
    host = FakeHost()
    health = GpuHealth(GPUS, runner=host, xid_source="")
    assert health.check() == {}
    host.listing, host.list_rc = "query_lost.txt", 15
    assert health.check() == {0: "GPU is lost (GPU is lost. Reboot the system to recover this GPU)"}
    host.listing, host.list_rc = "query_2gpus.csv", 0  # back after a reboot: released
    assert health.check() == {}


def test_a_gpu_missing_from_the_list_without_a_message():
    host = FakeHost()
    health = GpuHealth(GPUS, runner=host, xid_source="")
    health.check()
    only_one = "1, GPU-a2c4e6f8-0b1d-4e3f-8a5c-6d7e8f9a0b1c, 00000000:5E:00.0\n"
    health.runner = lambda argv, **kw: subprocess.CompletedProcess(argv, 0, only_one, "") \
        if tuple(argv) == LIST_COMMAND else host(argv, **kw)
    assert health.check() == {0: "missing from nvidia-smi's list of GPUs"}


def test_nvidia_smi_failing_quarantines_every_gpu():
    def broken(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 9, "NVIDIA-SMI has failed because it couldn't communicate "
                                                    "with the NVIDIA driver.\n", "")
    reasons = GpuHealth(GPUS, runner=broken, xid_source="").check()
    assert set(reasons) == {0, 1} and "couldn't communicate with the NVIDIA driver" in reasons[0]

    def hung(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, 30)
    assert GpuHealth(GPUS, runner=hung, xid_source="").check()[1] == "nvidia-smi failed: nvidia-smi did not answer within 30 s"


def test_xids_after_the_start_quarantine_for_a_while_and_old_ones_are_only_logged(caplog):
    lines = fixture("dmesg_xid.txt").splitlines(keepends=True)
    host = FakeHost(dmesg="".join(lines[:5]))  # up to the Xid 48 of GPU 0, before the start
    now = [1000.0]
    health = GpuHealth(GPUS, runner=host, xid_source="dmesg", xid_quarantine_s=600, clock=lambda: now[0])
    assert health.check() == {}
    assert "GPU 0 reported Xid 48 before this worker started" in caplog.text
    host.dmesg = "".join(lines)  # then Xid 79
    reasons = health.check()
    assert list(reasons) == [0] and reasons[0].startswith("Xid 79: pid='<unknown>'")
    now[0] += 599
    assert 0 in health.check()
    now[0] += 2
    assert health.check() == {}


def test_an_unreadable_kernel_log_is_said_once_and_the_rest_is_checked(caplog, tmp_path):
    host = FakeHost(detail="q_ecc_dbe_v100.txt")
    host.dmesg_rc = 1
    health = GpuHealth(GPUS, runner=host, xid_source="dmesg")
    assert set(health.check()) == {1}
    assert set(health.check()) == {1}
    assert caplog.text.count("Operation not permitted") == 1
    log_file = tmp_path / "kern.log"
    log_file.write_text("")
    from_file = GpuHealth(GPUS, runner=FakeHost(), xid_source=str(log_file))
    assert from_file.check() == {}
    log_file.write_text(fixture("dmesg_xid.txt"))
    assert list(from_file.check()) == [0]
    assert GpuHealth(GPUS, runner=FakeHost(), xid_source=str(tmp_path / "absent.log")).check() == {}


def test_no_gpus_runs_nothing():
    def never(argv, **kwargs):
        raise AssertionError("ran a command")
    assert GpuHealth([], runner=never).check() == {}
