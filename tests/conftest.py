"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pink_dev.sampleimage import build_sample_image

from tests.helpers import LOGGED_SERVICES

#: Sample job images: busybox rootfs + a shell script (built locally, no registry).
SCRIPTS = {
    "writer": "echo hello; mkdir -p /out; echo result-42 > /out/result.txt",
    "fail": "echo about to fail; echo oops >&2; exit 3",
    "sleeper": "trap 'echo got TERM; exit 143' TERM; mkdir -p /out; echo working > /out/progress.txt; "
               "while true; do sleep 0.2; done",
    # Ends 143 on SIGTERM (the trap interrupts `wait`), so a stop by the engine shows.
    "counter": "trap 'exit 143' TERM; mkdir -p /out; echo started >> /out/starts; sleep 6 & wait; "
               "echo done > /out/result.txt",
}


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """name -> path of a `docker save` tarball of that sample image."""
    folder = tmp_path_factory.mktemp("images")
    out = {}
    for name, script in SCRIPTS.items():
        out[name] = folder / f"{name}.tar"
        build_sample_image(f"pink-test-{name}:latest", script, out[name])
    return out


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """A failing test's report ends with the log tails of the services it used (track_logs)."""
    report: pytest.TestReport = yield
    if report.when == "call" and report.failed:
        for service in [*item.stash.get(LOGGED_SERVICES, []), *item.session.stash.get(LOGGED_SERVICES, [])]:
            report.sections.append((f"log of {service.name} ({service.log_path})", service.log_tail(40)))
    return report


_LAYER_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add up the time of each test layer (the folder under tests/), fixtures included."""
    layer = report.nodeid.split("/")[1] if report.nodeid.startswith("tests/") else "other"
    _LAYER_SECONDS[layer] = _LAYER_SECONDS.get(layer, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's hook
    if _LAYER_SECONDS:
        terminalreporter.write_sep("-", "time per test layer")
        for layer, seconds in sorted(_LAYER_SECONDS.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{layer:<12} {seconds:7.1f} s")
