"""The new subcommands: every bad input is refused with one clear line (status 2) before any work."""

from __future__ import annotations

import json

import nir
import pytest
import torch

from dqn2snn_plugin import from_nir
from dqn2snn_plugin.cli import main
from _fixtures import ATARI_FIXTURES

QNET = str(ATARI_FIXTURES / "BreakoutNoFrameskip-v4.qnet.pt")
TINY = ["--episodes", "1", "--max-steps", "30", "--n-envs", "1", "--calibration-frames", "300"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DQN2SNN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any game is played: bad input must be refused before."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    for module in ("dqn2snn_plugin.evaluation", "dqn2snn_plugin.calibration"):
        monkeypatch.setattr(f"{module}.play", refuse)


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dqn2snn: error: ") and err.count("\n") == 1
    return err


@pytest.mark.parametrize("command", ["evaluate", "sweep", "convert", "benchmark"])
@pytest.mark.parametrize("bad, message", [
    (["--T", "0"], "T (time steps per decision) must be a positive integer"),
    (["--percentile", "150"], "percentile must be in (0, 100]"),
    (["--percentile", "0"], "percentile must be in (0, 100]"),
])
def test_out_of_range_options_are_refused(command, bad, message, capsys, tmp_path, no_work):
    assert message in _error(capsys, [command, QNET, *bad, "-o", str(tmp_path / "out")])


@pytest.mark.parametrize("command", ["evaluate", "sweep", "convert"])
def test_unknown_game_is_refused(command, capsys, tmp_path, no_work):
    err = _error(capsys, [command, QNET, "--env-id", "NoSuchGameNoFrameskip-v4", "-o", str(tmp_path / "o")])
    assert "unknown Atari environment id 'NoSuchGameNoFrameskip-v4'" in err


@pytest.mark.parametrize("command", ["evaluate", "sweep", "convert"])
def test_action_count_mismatch_is_refused(command, capsys, tmp_path, no_work):
    err = _error(capsys, [command, QNET, "--env-id", "PongNoFrameskip-v4", "-o", str(tmp_path / "o")])
    assert "the checkpoint has 4 actions but PongNoFrameskip-v4 has 6" in err


@pytest.mark.parametrize("command", ["evaluate", "sweep", "convert", "benchmark"])
def test_unwritable_output_is_refused(command, capsys, tmp_path, no_work):
    (tmp_path / "file").write_text("")
    output = tmp_path / "file" / ("r.json" if command == "evaluate" else "out")
    assert "cannot write results to" in _error(capsys, [command, QNET, "-o", str(output)])


def test_results_of_an_older_incompatible_run_are_refused(capsys, tmp_path, no_work):
    (tmp_path / "config.json").write_text(json.dumps({"format": "dqn2snn-sweep-v0", "episodes": 3}))
    err = _error(capsys, ["sweep", QNET, "-o", str(tmp_path)])
    assert "incompatible run" in err and "format" in err and "episodes" in err


def test_other_bad_settings_are_refused(capsys, tmp_path, no_work):
    assert "episodes must be at least 1" in _error(capsys, ["evaluate", QNET, "--episodes", "0"])
    assert "n-envs must be at least 1" in _error(capsys, ["evaluate", QNET, "--n-envs", "0"])
    assert "holds no checkpoint" in _error(capsys, ["benchmark", str(tmp_path), "-o", str(tmp_path / "o")])


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU exists here")
def test_cuda_without_gpu_is_refused(capsys, no_work):
    assert "no CUDA GPU is available" in _error(capsys, ["evaluate", QNET, "--device", "cuda"])


def test_evaluate_writes_json_and_prints_table(capsys, tmp_path):
    out = tmp_path / "r.json"
    assert main(["evaluate", QNET, "--T", "4", *TINY, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| DQN plays |" in printed and "| SNN plays |" in printed and "spikes per decision" in printed
    result = json.loads(out.read_text())
    assert result["T"] == 4 and result["percentile"] == 99.9 and result["env_id"] == "BreakoutNoFrameskip-v4"
    assert not list(tmp_path.glob("*.tmp"))


def test_convert_saves_a_reloadable_snn(capsys, tmp_path, atari_observations):
    from dqn2snn_plugin.store import load_snn

    assert main(["convert", QNET, "--T", "8", "--calibration-frames", "300", "-o", str(tmp_path)]) == 0
    scales = json.loads((tmp_path / "scales.json").read_text())
    assert len(scales["hidden"]) == 4 and scales["percentile"] == 99.9
    snn, dqn = load_snn(tmp_path / "snn.pt")
    assert snn.T == 8 and snn(atari_observations).shape == (6, dqn.n_actions)
    graph = nir.read(tmp_path / "snn.nir")  # the same SNN as a NIR graph, with where it came from
    assert graph.metadata["provenance"]["env_id"] == "BreakoutNoFrameskip-v4"
    assert torch.equal(from_nir(graph)(atari_observations), snn(atari_observations))


def test_benchmark_writes_the_table(capsys, tmp_path):
    assert main(["benchmark", QNET, "--T", "4", *TINY, "-o", str(tmp_path)]) == 0
    md = (tmp_path / "benchmark.md").read_text()
    assert md.startswith("| game | coding | T | p | scales | DQN score | SNN score |")
    assert "| Breakout | rate | 4 | 99.9 | per layer |" in md
    assert (tmp_path / "benchmark.csv").read_text().count("\n") == 2
    assert (tmp_path / "cells.jsonl").read_text().count("\n") == 1


def test_tune_with_distillation_saves_the_chosen_snn(capsys, tmp_path, atari_observations):
    from dqn2snn_plugin.store import load_snn

    argv = ["tune", QNET, "--T", "4", "--calibration-frames", "300", "--target-agreement", "1.0", "--distill"]
    assert main([*argv, "-o", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "tuning.json").read_text())
    assert report["T"] == 4 and report["target"] == 1.0
    assert any(option["distilled"] for option in report["options"])  # the distilled copy competed
    assert report["validation_agreement"] == max(option["agreement"] for option in report["options"])
    snn, _ = load_snn(tmp_path / "snn.pt")
    assert snn.T == 4 and snn(atari_observations).shape == (6, 4)
    assert "T=4: validation agreement" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["evaluate", "sweep", "convert", "benchmark", "tune"])
def test_binary_coding_with_too_many_bits_is_refused(command, capsys, tmp_path, no_work):
    err = _error(capsys, [command, QNET, "--coding", "binary", "--T", "32", "-o", str(tmp_path / "o")])
    assert "float32 resolves at most 24 bits, got T=32" in err


def test_convert_with_binary_coding_saves_a_binary_snn(capsys, tmp_path, atari_observations):
    from dqn2snn_plugin.store import load_snn

    argv = ["convert", QNET, "--coding", "binary", "--T", "8", "--percentile", "99.99", "--channel-wise"]
    assert main([*argv, "--calibration-frames", "300", "-o", str(tmp_path)]) == 0
    snn, _ = load_snn(tmp_path / "snn.pt")
    assert (snn.coding, snn.T, snn.initial_membrane, snn.scales.channel_wise) == ("binary", 8, 0.5, True)
    assert snn(atari_observations).shape == (6, 4)
    assert not (tmp_path / "snn.nir").exists() and "no snn.nir: binary spike coding" in capsys.readouterr().out


def test_tune_with_binary_coding_tries_percentiles_and_membranes_only(capsys, tmp_path):
    argv = ["tune", QNET, "--coding", "binary", "--T", "2,4", "--channel-wise", "--target-agreement", "1.0"]
    assert main([*argv, "--calibration-frames", "300", "-o", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "tuning.json").read_text())
    options = report["options"]
    assert len(options) == 8  # 4 percentiles x 2 initial membranes, no bias calibration
    assert all(o["coding"] == "binary" and o["channel_wise"] and not o["bias_calibration"] for o in options)


def test_evaluate_with_binary_coding_says_so(capsys, tmp_path):
    out = tmp_path / "r.json"
    assert main(["evaluate", QNET, "--coding", "binary", "--T", "4", "--channel-wise", *TINY, "-o", str(out)]) == 0
    assert "T=4 (binary coding: steps per layer" in capsys.readouterr().out
    settings = json.loads(out.read_text())["settings"]
    assert settings["coding"] == "binary" and settings["channel_wise"] is True
