"""The fused C loops against the Python loops they replace: bit-identical spikes and membranes."""

import warnings

import pytest
import torch

from dqn2snn_plugin import binary_coding, fused_scan, spiking

needs_compiler = pytest.mark.skipif(fused_scan.compiler() is None, reason="no C compiler on this machine")


@pytest.fixture
def python_loops():
    """Runs a function with the fused path switched off (the reference)."""

    def run(fn, *args):
        with fused_scan.switched_off():
            return fn(*args)

    return run


def awkward_currents(shape, dtype) -> torch.Tensor:
    """Random currents with values that hit the threshold exactly, negatives and saturating steps."""
    g = torch.Generator().manual_seed(1)
    current = torch.randn(shape, generator=g, dtype=dtype) * 0.7
    current.view(-1)[::7] = 0.25  # 4 steps of 0.25 land exactly on the threshold
    current.view(-1)[::11] = 1.5
    return current


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("constant", [False, True], ids=["time-varying", "constant"])
def test_fused_if_scan_equals_the_python_loop(python_loops, dtype, constant):
    shape = (9, 3, 5000)  # more neurons than one C block
    current = awkward_currents(shape, dtype)
    if constant:
        current = current[0].expand(shape)
    v0 = torch.rand(shape[1:], dtype=dtype) - 0.2
    fused = fused_scan.if_scan(current, v0, 1.0)
    assert fused is not None
    reference = python_loops(spiking.if_scan, current, v0)
    assert fused[0].sum() > 0 and torch.equal(fused[0], reference[0]) and torch.equal(fused[1], reference[1])
    assert torch.equal(v0, v0.clone()), "the initial membrane must not be modified"


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [1, 4, 8, 24])
def test_fused_fire_and_integrate_equal_the_python_loops(python_loops, dtype, bits):
    g = torch.Generator().manual_seed(bits)
    v = (torch.rand(2, 4100, generator=g, dtype=dtype) * 1.2 - 0.1) * (2**bits - 1)
    v.view(-1)[::5] = v.view(-1)[::5].round()  # exact integers sit on the thresholds
    spikes, residual = fused_scan.fire(v, bits)
    reference = python_loops(binary_coding.fire, v, bits)
    assert torch.equal(spikes, reference[0]) and torch.equal(residual, reference[1])
    current = awkward_currents((bits, 3, 700), dtype)
    assert torch.equal(fused_scan.integrate(current), python_loops(binary_coding.integrate, current))


def test_unsupported_tensors_take_the_python_path():
    half = torch.ones(4, 2, dtype=torch.float16)
    assert fused_scan.if_scan(half, torch.zeros(2, dtype=torch.float16), 1.0) is None
    with torch.enable_grad():
        learnt = torch.ones(4, 2, requires_grad=True)
        assert fused_scan.if_scan(learnt, torch.zeros(2), 1.0) is None
        spikes, _ = spiking.if_scan(learnt * 0.5, torch.zeros(2))  # still works, through autograd's path
    assert spikes[:, 0].tolist() == [0, 1, 0, 1]


@needs_compiler
def test_the_library_is_built_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DQN2SNN_CACHE", str(tmp_path))
    first = fused_scan.build(fused_scan.cache_dir())
    assert first.parent == tmp_path and first.exists()
    stamp = first.stat().st_mtime_ns
    assert fused_scan.build(fused_scan.cache_dir()) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary files left behind


def test_without_a_compiler_it_warns_once_and_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("DQN2SNN_CACHE", str(tmp_path))
    monkeypatch.setattr(fused_scan, "compiler", lambda: None)
    fused_scan.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no C compiler"):
            assert fused_scan.library() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a second call must not warn again
            spikes, v = spiking.if_scan(torch.full((4, 1), 0.5), torch.zeros(1))
        assert spikes.flatten().tolist() == [0, 1, 0, 1] and float(v) == 0.0
        monkeypatch.setenv("DQN2SNN_FUSED_SCAN", "0")
        fused_scan.library.cache_clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # switched off on purpose: silent
            assert fused_scan.library() is None
    finally:
        fused_scan.library.cache_clear()


@needs_compiler
def test_a_binary_breakout_snn_decides_the_same_with_the_fused_loops(atari_observations, python_loops):
    from _fixtures import atari_checkpoint

    from dqn2snn_plugin import convert

    snn = convert(atari_checkpoint(), atari_observations, coding="binary", T=8)
    fused = snn.readouts(atari_observations, 8)["membrane"], [s.clone() for s in snn.last_stats.spikes]
    reference = python_loops(snn.readouts, atari_observations, 8)["membrane"], snn.last_stats.spikes
    assert torch.equal(fused[0], reference[0])
    assert all(torch.equal(a, b) for a, b in zip(fused[1], reference[1]))
