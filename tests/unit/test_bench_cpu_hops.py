"""The bench's pure helpers for the CPU-per-GiB work: the table of CPU by hop, and the Debian
mirror the realistic image is debootstrapped from."""

from __future__ import annotations

from bench.harness import PINK_HOPS, cpu_rows
from bench.realimage import FALLBACK_MIRROR, apt_mirror

GIB = 2**30


def _pink(client: float, nginx: float, web: float, sshd: float, rest: float = 0.0) -> dict[str, float]:
    return {"client": client, "nginx": nginx, "web": web, "worker sshd": sshd,
            "worker daemon": rest, "engine": 0.0, "etcd": 0.0}


def test_one_row_per_hop_and_a_total_with_the_images_side_by_side():
    sizes = {"blob": GIB, "debian": 2 * GIB}
    pink = {"blob": [_pink(1, 1, 2, 2), _pink(3, 1, 2, 2), _pink(2, 1, 2, 2)],
            "debian": [_pink(2, 2, 4, 4, rest=0.2)]}
    base = {"blob": [{"client": 2, "sshd": 3}], "debian": [{"client": 4, "sshd": 6}]}
    rows = cpu_rows("upload", sizes, pink, base, 1.15)
    assert [r.metric.split("), ")[1] for r in rows[:4]] == [what for _, what, _ in PINK_HOPS]
    assert all("1.0 GiB blob · 2.0 GiB debian" in r.metric and "|" not in r.metric for r in rows)
    client, nginx, web, sshd, total, rest = rows
    assert (client.pink, client.baseline) == ("2.00 · 1.00", "2.00 · 2.00")  # medians per GiB
    assert (nginx.pink, nginx.baseline) == ("1.00 · 1.00", "-")
    assert (sshd.pink, sshd.baseline) == ("2.00 · 2.00", "3.00 · 3.00")
    assert total.pink == "7.00 · 6.00" and total.baseline == "5.00 · 5.00 `ssh`"  # the rest apart
    assert (total.ratio, total.target, total.met) == ("1.40× · 1.20×", "≤ 1.15×", "**no**")
    assert rest.pink == "0.00 · 0.10"  # the worker daemon, its engine and etcd together
    assert cpu_rows("upload", {"blob": GIB}, {"blob": [_pink(1, 1, 1, 1)]},
                    {"blob": [{"client": 2, "sshd": 2}]}, 1.15)[-2].met == "yes"


def test_apt_mirror_reads_deb822_and_one_line_sources_skipping_security(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    assert apt_mirror(tmp_path) == FALLBACK_MIRROR
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb http://security.debian.org/debian-security bookworm-security main\n"
        "deb [arch=amd64] http://one-line.example/debian/ bookworm main\n")
    assert apt_mirror(tmp_path) == "http://one-line.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb822.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian-security\n")
    assert apt_mirror(tmp_path) == "http://deb822.example/debian"
