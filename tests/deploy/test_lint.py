"""The Ansible code passes ansible-lint (production profile) and yamllint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.deploy

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TARGETS = ["site.yml", "playbooks", "roles", "inventory"]
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), NO_COLOR="1")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def test_yamllint_is_clean() -> None:
    result = _run(str(BIN / "yamllint"), "--strict", "-c", str(HERE / "yamllint.yml"), *TARGETS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_is_clean() -> None:
    result = _run(str(BIN / "ansible-lint"), "--offline", "--strict", "-c", str(HERE / "ansible-lint.yml"), *TARGETS)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
