"""Fixtures shared by several test files."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _netns_refusal() -> str | None:
    """Why this machine cannot build namespaces (None if it can): tried for real, then removed."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    probe = f"frtest{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        return f"`ip netns add` refused: {done.stderr.strip() or done.returncode} (needs root)"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=20)
    return None


@pytest.fixture(scope="session")
def netns():
    """Skips, with the reason printed, where network namespaces cannot be made (emulated-cluster tests)."""
    reason = _netns_refusal()
    if reason is not None:
        print(f"skipping emulated-cluster tests: {reason}")
        pytest.skip(reason)
