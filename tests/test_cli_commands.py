"""The new subcommands: every bad input is refused with one clear line (status 2) before any work."""

from __future__ import annotations

import json

import nir
import pytest
import torch

from dqn2snn_plugin import from_nir
from dqn2snn_plugin.cli import build_parser, main
from conftest import ATARI_FIXTURES

QNET = str(ATARI_FIXTURES / "BreakoutNoFrameskip-v4.qnet.pt")
TINY = ["--episodes", "1", "--max-steps", "30", "--n-envs", "1", "--calibration-frames", "300"]


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any game is played: bad input must be refused before."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    for module in ("dqn2snn_plugin.experiments.evaluation", "dqn2snn_plugin.calibration"):
        monkeypatch.setattr(f"{module}.play", refuse)


def _error(capsys, argv: list[str]) -> str:
    try:
        status = main(argv)
    except SystemExit as exit_info:  # argparse's usage errors
        status = exit_info.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("dqn2snn: error: ") and err.count("\n") == 1
    return err


@pytest.mark.parametrize("command", ["evaluate", "sweep", "convert", "benchmark"])
@pytest.mark.parametrize("bad, message", [
    (["--T", "0"], "argument --T: must be at least 1, got 0"),
    (["--T", "-3"], "argument --T: must be at least 1, got -3"),
    (["--T", "eight"], "argument --T: expected a whole number, got 'eight'"),
    (["--T", "100000"], "T = 100000 time steps per decision is beyond any use"),
    (["--seed", "-1"], "argument --seed: seed must be a whole number from 0 to 1,073,741,824, got -1"),
    (["--seed", str(2**40)], "argument --seed: seed must be a whole number from 0"),
    (["--calibration-frames", "0"], "argument --calibration-frames: must be at least 1"),
    (["--n-envs", "-2"], "argument --n-envs: must be at least 1"),
    (["--percentile", "abc"], "percentile"),
    (["--percentile", "150"], "percentile must be in (0, 100]"),
    (["--percentile", "0"], "percentile must be in (0, 100]"),
])
def test_out_of_range_options_are_refused(command, bad, message, capsys, tmp_path, no_work):
    assert message in _error(capsys, [command, QNET, *bad, "-o", str(tmp_path / "out")])


@pytest.mark.parametrize("command", ["evaluate", "sweep", "convert"])
def test_unknown_game_is_refused(command, capsys, tmp_path, no_work):
    err = _error(capsys, [command, QNET, "--env-id", "NoSuchGameNoFrameskip-v4", "-o", str(tmp_path / "o")])
    assert "unknown environment id 'NoSuchGameNoFrameskip-v4'" in err


@pytest.mark.parametrize("command", ["evaluate", "sweep", "convert"])
def test_action_count_mismatch_is_refused(command, capsys, tmp_path, no_work):
    err = _error(capsys, [command, QNET, "--env-id", "PongNoFrameskip-v4", "-o", str(tmp_path / "o")])
    assert "the checkpoint has 4 actions but PongNoFrameskip-v4 has 6" in err


@pytest.mark.parametrize("command", ["evaluate", "sweep", "convert", "benchmark"])
def test_unwritable_output_is_refused(command, capsys, tmp_path, no_work):
    (tmp_path / "file").write_text("")
    output = tmp_path / "file" / ("r.json" if command == "evaluate" else "out")
    assert f"{tmp_path / 'file'} is a file" in _error(
        capsys, [command, QNET, "-o", str(output)])


def test_results_of_an_older_incompatible_run_are_refused(capsys, tmp_path, no_work):
    (tmp_path / "config.json").write_text(json.dumps({"format": "dqn2snn-sweep-v0", "episodes": 3}))
    err = _error(capsys, ["sweep", QNET, "-o", str(tmp_path)])
    assert err == (f"dqn2snn: error: {tmp_path} holds a sweep (format dqn2snn-sweep-v0), not a sweep (format "
                   "dqn2snn-sweep-v1): use another output folder, or delete that one to start over\n")


def test_a_sweep_into_a_benchmark_folder_says_so_in_one_sentence(capsys, tmp_path, no_work):
    _benchmark_folder(tmp_path / "b")
    err = _error(capsys, ["sweep", QNET, "-o", str(tmp_path / "b")])
    assert f"{tmp_path / 'b'} holds a benchmark, not a sweep: use another output folder" in err


def test_other_bad_settings_are_refused(capsys, tmp_path, no_work):
    assert "argument --episodes: must be at least 1" in _error(capsys, ["evaluate", QNET, "--episodes", "0"])
    assert "argument --max-steps: must be at least 1" in _error(capsys, ["evaluate", QNET, "--max-steps", "0"])
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


@pytest.mark.slow
def test_convert_saves_a_reloadable_snn(capsys, tmp_path, atari_observations):
    from dqn2snn_plugin.io.store import load_snn

    assert main(["convert", QNET, "--T", "8", "--calibration-frames", "300", "-o", str(tmp_path)]) == 0
    scales = json.loads((tmp_path / "scales.json").read_text())
    assert len(scales["hidden"]) == 4 and scales["percentile"] == 99.9
    snn, dqn = load_snn(tmp_path / "snn.pt")
    assert snn.T == 8 and snn(atari_observations).shape == (6, dqn.n_actions)
    graph = nir.read(tmp_path / "snn.nir")  # the same SNN as a NIR graph, with where it came from
    assert graph.metadata["provenance"]["env_id"] == "BreakoutNoFrameskip-v4"
    assert torch.equal(from_nir(graph)(atari_observations), snn(atari_observations))
    shares = capsys.readouterr().out.split("states above each spiking layer's scale")[1]
    assert "2% of the most extreme left out" in shares and shares.count("layer ") == 4


def test_benchmark_writes_the_table(capsys, tmp_path):
    assert main(["benchmark", QNET, "--T", "4", *TINY, "-o", str(tmp_path)]) == 0
    md = (tmp_path / "benchmark.md").read_text()
    assert md.startswith("| game | coding | T | p | scales | DQN score | SNN score |")
    assert "| Breakout | rate | 4 | 99.9 | per layer |" in md
    assert (tmp_path / "benchmark.csv").read_text().count("\n") == 2
    assert (tmp_path / "cells.jsonl").read_text().count("\n") == 1


@pytest.mark.slow
def test_tune_with_distillation_saves_the_chosen_snn(capsys, tmp_path, atari_observations):
    from dqn2snn_plugin.io.store import load_snn

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
    """... and into the folder of an earlier rate conversion, leaves no snn.nir of it beside its snn.pt."""
    from dqn2snn_plugin.io.store import load_snn

    for name in ("snn.pt", "scales.json", "snn.nir"):  # an earlier conversion's folder
        (tmp_path / name).write_text("earlier")
    argv = ["convert", QNET, "--coding", "binary", "--percentile", "99.99", "--channel-wise"]  # T: 8 bits unless given
    assert main([*argv, "--calibration-frames", "300", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scales.json", "snn.pt"]
    snn, _ = load_snn(tmp_path / "snn.pt")
    assert (snn.coding, snn.T, snn.initial_membrane, snn.scales.channel_wise) == ("binary", 8, 0.5, True)
    assert snn(atari_observations).shape == (6, 4)
    assert not (tmp_path / "snn.nir").exists() and "no snn.nir: binary coding has no NIR form" in capsys.readouterr().out


@pytest.mark.slow
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


def test_evaluate_onto_an_existing_folder_is_refused_before_playing(capsys, tmp_path, no_work):
    err = _error(capsys, ["evaluate", QNET, "-o", str(tmp_path)])
    assert "is a folder: pass a file path such as" in err


@pytest.mark.parametrize("argv", [["tune", QNET, "--readout", "spikes"], ["convert", QNET, "--episodes", "3"],
                                  ["convert", QNET, "--max-steps", "9"], ["tune", QNET, "--episodes", "2"]])
def test_options_a_command_would_ignore_are_not_accepted(capsys, tmp_path, argv, no_work):
    assert "unrecognized arguments" in _error(capsys, [*argv, "-o", str(tmp_path / "o")])


@pytest.mark.parametrize("command", ["sweep", "convert", "tune", "benchmark", "demo"])
def test_no_output_folder_is_left_when_the_checkpoint_is_refused(capsys, tmp_path, command):
    bad = tmp_path / "notes.zip"
    bad.write_text("not a checkpoint")
    out = tmp_path / "new" / "out"
    argv = [command, "--checkpoint", str(bad)] if command == "demo" else [command, str(bad)]
    assert "not a readable zip" in _error(capsys, [*argv, "-o", str(out)])
    assert not (tmp_path / "new").exists()


def test_demo_options_are_checked_by_their_flag_names(capsys, no_work):
    assert "argument --test-frames: must be at least 1, got 0" in _error(capsys, ["demo", "--test-frames", "0"])
    assert "at most 24 bits" in _error(capsys, ["demo", "--bits", "30"])
    assert "argument --rate-T: must be at least 1" in _error(capsys, ["demo", "--rate-T", "-4"])


def test_help_names_the_papers_step_cap_and_version_is_printed(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 300; the paper's is 18,000)" in text
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("dqn2snn ")


def test_inspect_refuses_an_env_id_with_another_action_count(capsys):
    err = _error(capsys, ["inspect", QNET, "--env-id", "PongNoFrameskip-v4"])
    assert "the checkpoint has 4 actions but PongNoFrameskip-v4 has 6" in err


def test_ctrl_c_says_nothing_is_lost(capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("dqn2snn_plugin.checkpoint.load_dqn", interrupted)
    assert main(["inspect", QNET]) == 130
    assert capsys.readouterr().err == ("dqn2snn: interrupted: nothing is lost (results are written whole or not "
                                       "at all; a sweep resumes where it stopped)\n")


# ---------------------------------------------------------------- issue 24: every bad input is one line


EMPTY_LIST = "expected a comma-separated list, got ','"
EMPTY_NUMBERS = "expected comma-separated whole numbers, got ','"


@pytest.mark.parametrize("argv, message", [
    *[([command, QNET, "--percentile", ","], f"argument --percentile: {EMPTY_LIST}")
      for command in ("sweep", "benchmark")],
    *[([command, QNET, "--percentile", ","], "percentile must be a number in (0, 100] or 'max', got ','")
      for command in ("evaluate", "convert")],
    (["benchmark", QNET, "--coding", ","], f"argument --coding: {EMPTY_LIST}"),
    *[([command, QNET, "--T", ","], f"argument --T: {EMPTY_NUMBERS}") for command in ("sweep", "tune", "benchmark")],
    *[([command, QNET, "--env-id", ""], "argument --env-id: must not be empty")
      for command in ("inspect", "evaluate", "sweep", "convert", "tune")],
    (["demo", "--env-id", " "], "argument --env-id: must not be empty"),
])
def test_empty_lists_and_ids_are_refused_not_replaced_by_defaults(argv, message, capsys, tmp_path, no_work):
    assert message in _error(capsys, [*argv, *(["-o", str(tmp_path / "o")] if argv[0] != "inspect" else [])])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("flag", ["--cpus-per-cell", "--gpus-per-cell"])
def test_ray_resources_must_be_finite(flag, value, capsys, tmp_path, no_work):
    err = _error(capsys, ["benchmark", QNET, "--ray", f"{flag}={value}", "-o", str(tmp_path / "o")])
    assert f"argument {flag}: expected a finite number, got '{value}'" in err


@pytest.mark.parametrize("command", ["benchmark", "evaluate", "sweep", "convert", "tune"])
def test_every_command_asks_for_the_env_id_it_takes(command, capsys, tmp_path, no_work):
    unnamed = tmp_path / "model.qnet.pt"
    unnamed.write_bytes((ATARI_FIXTURES / "BreakoutNoFrameskip-v4.qnet.pt").read_bytes())
    err = _error(capsys, [command, str(unnamed), "-o", str(tmp_path / "o")])
    assert "does not name its game: pass --env-id" in err
    parser = build_parser()
    assert parser.parse_args([command, str(unnamed), "-o", "o", "--env-id", "PongNoFrameskip-v4"]).env_id \
        == "PongNoFrameskip-v4"


def _benchmark_folder(directory, record: dict | None = None):
    """A benchmark folder holding the cell `benchmark QNET --T 4 TINY` would compute, as `record` has it."""
    from dqn2snn_plugin.experiments import grid
    from dqn2snn_plugin.experiments.evaluation import load_checked
    from dqn2snn_plugin.experiments.records import weights_digest
    from dqn2snn_plugin.experiments.settings import RunSettings

    directory.mkdir()
    settings = RunSettings(episodes=1, max_steps=30, n_envs=1, calibration_frames=300)
    (directory / "config.json").write_text(json.dumps(grid.shared_config(settings)))
    key = {"kind": "cell", "checkpoint_sha": weights_digest(load_checked(QNET)), "coding": "rate", "T": 4,
           "percentile": 99.9, "channel_wise": False}
    (directory / "cells.jsonl").write_text(json.dumps({**key, **(record or {})}) + "\n")


@pytest.mark.parametrize("damage", [{"env_id": None}, {}], ids=["env_id null", "no snn"])
def test_a_damaged_benchmark_record_is_one_line(damage, capsys, tmp_path, no_work):
    _benchmark_folder(tmp_path / "b", {"env_id": "BreakoutNoFrameskip-v4", **damage})
    err = _error(capsys, ["benchmark", QNET, "--T", "4", *TINY, "-o", str(tmp_path / "b")])
    assert "cells.jsonl: a record lacks" in err and "delete that line" in err


@pytest.mark.parametrize("command", ["sweep", "benchmark"])
@pytest.mark.parametrize("name", ["config.json", "cells.jsonl"])
def test_a_results_file_that_is_a_folder_is_one_line(command, name, capsys, tmp_path, no_work):
    (tmp_path / "o" / name).mkdir(parents=True)
    err = _error(capsys, [command, QNET, "--T", "4", *TINY, "-o", str(tmp_path / "o")])
    assert f"{name} is not a file (a folder?)" in err


def test_demo_takes_no_readout_it_would_ignore(capsys, tmp_path, no_work):
    assert "unrecognized arguments: --readout" in _error(capsys, ["demo", "--readout", "spikes"])


# ---------------------------------------------------------------- hostile input: every command, one line, no work

ALL_COMMANDS = ["evaluate", "sweep", "convert", "benchmark", "tune", "demo"]


def _argv(command: str, *options: str, out: str) -> list[str]:
    checkpoint = ["--checkpoint", QNET] if command == "demo" else [QNET]
    return [command, *checkpoint, *options, "-o", out]


@pytest.mark.parametrize("command", ALL_COMMANDS)
@pytest.mark.parametrize("cache", ["a file", "below a file", "/proc/dqn2snn-cache"])
def test_a_cache_folder_that_cannot_be_written_is_refused_before_any_work(command, cache, capsys, tmp_path,
                                                                          monkeypatch, no_work):
    (tmp_path / "file").write_text("")
    path = {"a file": tmp_path / "file", "below a file": tmp_path / "file" / "cache"}.get(cache, cache)
    monkeypatch.setenv("DQN2SNN_CACHE", str(path))
    err = _error(capsys, _argv(command, out=str(tmp_path / "out")))
    assert f"DQN2SNN_CACHE={path}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_calibration_frames_beyond_the_memory_are_refused_before_any_work(command, capsys, tmp_path, no_work):
    err = _error(capsys, _argv(command, "--calibration-frames", "1000000000", out=str(tmp_path / "out")))
    assert "--calibration-frames 1,000,000,000" in err and "TiB of memory" in err and "use at most" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_parallel_games_beyond_the_memory_are_refused_before_any_work(command, capsys, tmp_path, no_work):
    err = _error(capsys, _argv(command, "--n-envs", "100000000", out=str(tmp_path / "out")))
    assert "--n-envs 100,000,000 needs about 163.7 TiB of memory (about 1.7 MiB per game)" in err


@pytest.mark.parametrize("command", ["sweep", "demo"])
def test_test_frames_beyond_the_memory_are_refused_before_any_work(command, capsys, tmp_path, no_work):
    err = _error(capsys, _argv(command, "--test-frames", "1000000000000", out=str(tmp_path / "out")))
    assert "--test-frames 1,000,000,000,000 need about" in err


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_an_impossible_output_folder_is_refused_before_any_work(command, capsys, tmp_path, no_work):
    out = "/proc/dqn2snn-out/r.json" if command == "evaluate" else "/proc/dqn2snn-out"
    assert "no folder can be written there" in _error(capsys, _argv(command, out=out))


@pytest.mark.parametrize("command", ["sweep", "benchmark"])
def test_a_results_folder_in_use_by_another_run_is_refused_naming_it(command, capsys, tmp_path, no_work):
    import os
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; "
                               "from dqn2snn_plugin.io.results import CellLog; "
                               f"log = CellLog(Path({str(tmp_path)!r}), {{}}); print(flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        holder.stdout.readline()
        err = _error(capsys, [command, QNET, "--T", "4", *TINY, "-o", str(tmp_path)])
    finally:
        holder.communicate("")
    assert f"{tmp_path} is in use by another dqn2snn run (pid {holder.pid} on " in err


@pytest.mark.slow
def test_an_output_the_disk_cannot_hold_loses_nothing(tmp_path):
    """`convert` under a file-size limit (a full disk): one line naming the file, no half-written file,
    the earlier conversion's folder as it was; the calibration cache that did not fit is a warning."""
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    out.mkdir()
    (out / "snn.pt").write_text("earlier")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20)); "
            "from dqn2snn_plugin.cli import main; "
            f"sys.exit(main(['convert', {QNET!r}, '--calibration-frames', '50', '-o', {str(out)!r}]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.getcwd(), "DQN2SNN_CACHE": str(tmp_path / "cache"),
                              "PYTHONWARNINGS": "ignore::DeprecationWarning"})
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("dqn2snn: error: ")]
    assert errors == [line for line in run.stderr.splitlines() if "rror" in line or "Traceback" in line]
    assert len(errors) == 1 and "snn.pt: the write failed" in errors[0], run.stderr
    assert "dqn2snn: warning: calibration cache" in run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["snn.pt"] and (out / "snn.pt").read_text() == "earlier"


def test_evaluate_prints_its_result_when_the_file_cannot_be_written(capsys, tmp_path):
    (tmp_path / "full.json").symlink_to("/dev/full")  # written where it points: a device that is always full
    assert main(["evaluate", QNET, "--T", "4", *TINY, "-o", str(tmp_path / "full.json")]) == 2
    out, err = capsys.readouterr()
    error = err.splitlines()[-1]  # after the games' progress bars
    assert err.count("dqn2snn: error: ") == 1 and error.startswith("dqn2snn: error: cannot write ")
    assert "No space left on device" in error and error.endswith("the result is printed above as JSON")
    result = json.loads(out[out.index("\n{") + 1:])
    assert result["T"] == 4 and result["env_id"] == "BreakoutNoFrameskip-v4"
    assert (tmp_path / "full.json").is_symlink()
