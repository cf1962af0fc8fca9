"""`dqn2snn inspect`: a readable summary of every fixture, and plugin errors as one line with status 2."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from dqn2snn_plugin.cli import main


def _q_network_weights(path: Path) -> dict[str, torch.Tensor]:
    """The online Q-network's saved tensors, read independently of the plugin."""
    if path.suffix == ".pt":
        return torch.load(path, weights_only=True)
    state = torch.load(io.BytesIO(zipfile.ZipFile(path).read("policy.pth")), weights_only=True)
    return {k: v for k, v in state.items() if k.startswith("q_net.")}


def test_inspect_summarises_every_fixture(any_checkpoint, capsys):
    assert main(["inspect", str(any_checkpoint)]) == 0
    out = capsys.readouterr().out
    weights = _q_network_weights(any_checkpoint)
    n_params = sum(v.numel() for v in weights.values())
    n_actions = next(v for k, v in reversed(weights.items()) if k.endswith("bias")).shape[0]
    env_id = any_checkpoint.name.removesuffix(".zip").removesuffix(".qnet.pt").removeprefix("dqn-")
    is_zip = any_checkpoint.suffix == ".zip"
    version = zipfile.ZipFile(any_checkpoint).read("_stable_baselines3_version").decode() if is_zip else "not recorded"
    assert "algorithm:     DQN" in out
    assert f"SB3 version:   {version}" in out
    assert f"env id:        {env_id}" in out
    assert f"actions:       {n_actions}" in out
    assert f"parameters:    {n_params:,}" in out
    layer_lines = [line for line in out.splitlines() if " -> " in line]
    n_weighted = sum(k.endswith(".weight") for k in weights)
    assert sum(("Linear" in line or "Conv2d" in line) for line in layer_lines) == n_weighted
    assert layer_lines[-1].split()[1] == "Linear" and layer_lines[-1].split()[4] == str(n_actions)


def test_inspect_cnn_shows_policy_observation_and_conv_shapes(breakout_zip, capsys):
    main(["inspect", str(breakout_zip), "--env-id", "Breakout-custom"])
    out = capsys.readouterr().out
    assert "policy:        CnnPolicy" in out and "observation:   4x84x84" in out
    assert "env id:        Breakout-custom" in out
    assert "Conv2d     4x84x84 -> 32x20x20    kernel 8, stride 4" in out


def test_inspect_error_is_one_line_with_status_2(tmp_path, capsys):
    bad = tmp_path / "broken.zip"
    bad.write_text("not a zip")
    assert main(["inspect", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"dqn2snn: error: {bad}: not a readable zip")
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1


def test_missing_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_console_script(fixtures_dir, tmp_path):
    script = Path(sys.executable).with_name("dqn2snn")
    cartpole = fixtures_dir / "sb3-zoo" / "classic" / "CartPole-v1.zip"
    ok = subprocess.run([script, "inspect", str(cartpole)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "env id:        CartPole-v1" in ok.stdout and "SB3 version:   1.0rc0" in ok.stdout
    missing = str(tmp_path / "nothing.zip")
    failed = subprocess.run([script, "inspect", missing], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2
    assert failed.stderr.startswith("dqn2snn: error:") and "Traceback" not in failed.stderr


@pytest.mark.slow
def test_a_closed_pipe_ends_quietly_without_a_traceback(any_checkpoint):
    """`dqn2snn inspect X | true`: the reader is gone before the first write (python starts in seconds,
    `true` in milliseconds); no BrokenPipeError traceback, and SIGPIPE's status as a shell reports it."""
    script = f"{sys.executable} -m dqn2snn_plugin.cli inspect {any_checkpoint} | true"
    out = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True, text=True)
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
    assert out.returncode == 141


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["inspect", "{checkpoint}"], ["--help"], ["--version"]])
def test_a_full_stdout_is_one_line_with_status_2(argv, breakout_zip):
    """`dqn2snn inspect X > /dev/full`: the output cannot be written; one line says so, no traceback."""
    with open("/dev/full", "w") as full:
        out = subprocess.run([sys.executable, "-m", "dqn2snn_plugin.cli",
                              *[a.format(checkpoint=breakout_zip) for a in argv]],
                             stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr == "dqn2snn: error: cannot write the output: No space left on device\n"


def test_the_default_T_values_are_the_codings_own():
    """cli.DEFAULT_T is written out (the parser loads no torch); it must say what the codings say."""
    from dqn2snn_plugin.cli import DEFAULT_T
    from dqn2snn_plugin.coding import BINARY, DELTA, RATE

    for coding in (RATE, BINARY, DELTA):
        assert DEFAULT_T["evaluate"][coding.name] == DEFAULT_T["convert"][coding.name] == [coding.default_T]
        assert DEFAULT_T["sweep"][coding.name] == list(coding.sweep_Ts)
        assert DEFAULT_T["tune"][coding.name] == list(coding.search_Ts)
    assert DEFAULT_T["benchmark"] == {"rate": [500], "binary": [BINARY.default_T], "delta": [DELTA.default_T]}  # rate: the paper's T
