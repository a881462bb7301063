"""A stand-in ``nvidia-smi`` for GPU-less hosts: a worker started with it on its PATH sees GPUs.

It answers the three commands a worker runs (gpu_worker.gpus discovery, and the health checks
of gpu_worker.gpuhealth: the index/uuid/bus listing and ``-q -d ECC,PAGE_RETIREMENT,
ROW_REMAPPER``) from files in ``answers/`` next to it, healthy to begin with. A test turns a
GPU bad by overwriting ``answers/list`` or ``answers/detail`` (e.g. with the recorded failure
outputs in tests/unit/data/gpuhealth). Any other command is an error, as on a real host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

#: One healthy GPU's section of ``nvidia-smi -q -d ECC,PAGE_RETIREMENT,ROW_REMAPPER`` (H100 layout).
HEALTHY_SECTION = """GPU {bus}
    ECC Mode
        Current                           : Enabled
        Pending                           : Enabled
    ECC Errors
        Volatile
            SRAM Correctable              : 0
            SRAM Uncorrectable            : 0
            DRAM Correctable              : 0
            DRAM Uncorrectable            : 0
    Retired Pages
        Single Bit ECC                    : N/A
        Double Bit ECC                    : N/A
        Pending Page Blacklist            : N/A
    Remapped Rows
        Correctable Error                 : 0
        Uncorrectable Error               : 0
        Pending                           : No
        Remapping Failure Occurred        : No

"""


def bus_id(index: int) -> str:
    """The PCI bus id the stand-in gives GPU ``index`` (3B, 5E, 81, ... as on many servers)."""
    return f"00000000:{(0x3B + 0x23 * index) % 0x100:02X}:00.0"


def fake_nvidia_smi(folder: Path, gpus: Sequence[tuple[str, str, int]]) -> Path:
    """Write ``folder/nvidia-smi`` reporting ``gpus`` ((uuid, name, memory MiB) by index) and
    return ``folder`` (to put first on a PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    answers = folder / "answers"
    answers.mkdir(exist_ok=True)
    (answers / "discovery").write_text("".join(f"{i}, {u}, {n}, {m} MiB\n" for i, (u, n, m) in enumerate(gpus)))
    (answers / "list").write_text("".join(f"{i}, {u}, {bus_id(i)}\n" for i, (u, _n, _m) in enumerate(gpus)))
    (answers / "detail").write_text(
        f"\n==============NVSMI LOG==============\n\nAttached GPUs : {len(gpus)}\n"
        + "".join(HEALTHY_SECTION.format(bus=bus_id(i)) for i in range(len(gpus))))
    stub = folder / "nvidia-smi"
    stub.write_text(f"""#!/bin/sh
case "$*" in
  *index,uuid,name,memory.total*) exec cat '{answers}/discovery' ;;
  *index,uuid,pci.bus_id*) exec cat '{answers}/list' ;;
  "-q -d ECC,PAGE_RETIREMENT,ROW_REMAPPER") exec cat '{answers}/detail' ;;
esac
echo "fake nvidia-smi: unexpected arguments $*" >&2
exit 2
""")
    stub.chmod(0o755)
    return folder
