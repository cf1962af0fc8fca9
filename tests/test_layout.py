"""The package as a newcomer meets it: importable from a plain checkout, no process-wide side effects."""

from __future__ import annotations

import os

import pytest
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_adapters_import_from_a_plain_checkout_without_the_installed_package():
    """`-S` skips site-packages' editable-install finder: only the checkout's own folders are seen."""
    code = ("import sys; sys.path.insert(0, '.'); import dqn2snn_plugin.adapters.sb3, dqn2snn_plugin.adapters.hub; "
            "print(dqn2snn_plugin.adapters.sb3.__file__)")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True)
    # -S also hides torch: the import gets as far as torch, never to a missing dqn2snn_plugin.adapters
    assert "No module named 'dqn2snn_plugin" not in out.stderr, out.stderr
    assert out.returncode == 0 or "No module named 'torch'" in out.stderr or "No module named 'numpy'" in out.stderr


def test_the_adapters_folder_at_the_top_is_the_package_s_own():
    top = ROOT / "adapters"
    assert top.resolve() == (ROOT / "dqn2snn_plugin" / "adapters").resolve()


@pytest.mark.slow
def test_importing_the_spikingjelly_adapter_leaves_the_environment_alone():
    code = ("import os; before = dict(os.environ); import dqn2snn_plugin.adapters.spikingjelly; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_one_cache_directory_for_frames_and_the_native_library(monkeypatch, tmp_path):
    from dqn2snn_plugin import calibration
    from dqn2snn_plugin._native import fused_scan
    from dqn2snn_plugin.io import cache

    monkeypatch.setenv("DQN2SNN_CACHE", str(tmp_path))
    assert calibration.default_cache_dir() == fused_scan.cache_dir() == cache.cache_dir() == tmp_path
