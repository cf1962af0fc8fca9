"""The test suite's one fixtures module: the read-only checkpoints in ../shared/fixtures (skipped
where absent), a few real Atari frames, small stand-in networks, and a private cache for every test.

Test files import the plain helpers (`atari_checkpoint`, `tiny_checkpoint`, `MarkerPayload`,
`ATARI_FIXTURES`) with `from conftest import ...`; the rest are pytest fixtures.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dqn2snn_plugin.checkpoint import DQNCheckpoint, load_dqn

# the shared fixtures sit beside the repository (`../shared`), here and in CI
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
ATARI_FIXTURES = FIXTURES / "atari-dqn"
BREAKOUT_ZIP = ATARI_FIXTURES / "dqn-BreakoutNoFrameskip-v4.zip"
ZOO_CLASSIC = FIXTURES / "sb3-zoo" / "classic"
QNET_FILES = sorted(ATARI_FIXTURES.glob("*.qnet.pt"))
ALL_CHECKPOINTS = [BREAKOUT_ZIP, *sorted(ZOO_CLASSIC.glob("*.zip")), *QNET_FILES]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test writes calibration frames and the compiled library into this session's temporary
    folder (shared by the session's tests, never the user's `~/.cache/dqn2snn`), without progress bars."""
    monkeypatch.setenv("DQN2SNN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared fixture not found: {path}")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The read-only `../shared/fixtures` folder."""
    return _require(FIXTURES)


@pytest.fixture(scope="session")
def breakout_zip() -> Path:
    """SB3 2.9.2 DQN CnnPolicy zip for BreakoutNoFrameskip-v4."""
    return _require(BREAKOUT_ZIP)


@pytest.fixture(params=["CartPole-v1", "LunarLander-v2"])
def zoo_zip(request: pytest.FixtureRequest) -> Path:
    """A 2021 RL-Zoo DQN zip saved by SB3 1.0rc0 (its pickles need the old `gym`)."""
    return _require(ZOO_CLASSIC / f"{request.param}.zip")


@pytest.fixture(params=[p.name for p in QNET_FILES] or ["missing.qnet.pt"])
def qnet_file(request: pytest.FixtureRequest) -> Path:
    """One of the six NatureCNN `QNetwork` state dicts `<EnvId>.qnet.pt`."""
    return _require(ATARI_FIXTURES / request.param)


@pytest.fixture(params=[str(p.relative_to(FIXTURES)) for p in ALL_CHECKPOINTS] or ["missing"])
def any_checkpoint(request: pytest.FixtureRequest) -> Path:
    """Every checkpoint in the shared fixtures, one at a time."""
    return _require(FIXTURES / request.param)


@pytest.fixture(scope="session")
def atari_observations() -> np.ndarray:
    """Six stacked Breakout observations `[6, 4, 84, 84]` (uint8) in SB3's layout, from random play.

    Made by ale-py's native `AtariVectorEnv` (84x84 gray, 4-frame stack, frame skip 4 with max-pool,
    no-op and fire resets: SB3's Atari preprocessing); SB3's own wrappers need OpenCV, which the
    project does not depend on.
    """
    from ale_py.vector_env import AtariVectorEnv

    env = AtariVectorEnv(game="breakout", num_envs=1)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    frames = []
    for step in range(60):
        obs, *_ = env.step(rng.integers(env.single_action_space.n, size=1))
        if step % 10 == 9:
            frames.append(obs[0])
    env.close()
    return np.stack(frames)


@pytest.fixture(scope="session")
def assert_close_q():
    """`assert_close_q(ours, theirs)`: Q-values equal to float tolerance relative to the Q scale."""
    return _assert_close_q


def _assert_close_q(ours, theirs) -> None:
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape
    scale = max(1.0, float(np.abs(theirs).max()))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * scale)


@pytest.fixture
def save_sb3(tmp_path: Path):
    """`save_sb3(algo_cls, name, policy="MlpPolicy", env="CartPole-v1", **kwargs)` -> (untrained model, zip path).

    Off-policy algorithms should get `buffer_size=1` among the kwargs so nothing large is allocated.
    """

    def save(algo_cls, name: str, policy="MlpPolicy", env="CartPole-v1", **kwargs):
        model = algo_cls(policy, env, seed=0, device="cpu", **kwargs)
        path = tmp_path / f"{name}.zip"
        model.save(path)
        return model, path

    return save


@pytest.fixture
def mlp_checkpoint() -> DQNCheckpoint:
    """A small random MLP "DQN" (6 inputs, two ReLU layers, 4 actions) for fast exact checks."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    return DQNCheckpoint(net, 4, (6,), "MlpPolicy", "DQN", None, None, "<test>")


@lru_cache(maxsize=None)
def atari_checkpoint(env_id: str = "BreakoutNoFrameskip-v4") -> DQNCheckpoint:
    """The shared fixture DQN for `env_id` (NatureCNN, raw uint8 input), loaded once per session."""
    return load_dqn(_require(ATARI_FIXTURES / f"{env_id}.qnet.pt"))


class MarkerPayload:
    """Unpickling this runs a shell command that creates a marker file (proof that code ran)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def tiny_checkpoint(weight: torch.Tensor, env_id: str | None = None) -> DQNCheckpoint:
    """A one-layer linear "DQN" on flat observations: Q = obs @ weight.T (handy for exact metric cases)."""
    n_actions, dim = weight.shape
    layer = nn.Linear(dim, n_actions, bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return DQNCheckpoint(
        q_network=nn.Sequential(layer), n_actions=n_actions, observation_shape=(dim,), policy="MlpPolicy",
        algorithm="DQN", sb3_version=None, env_id=env_id, source="<test>",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Plain `pytest` runs the quick suite: tests marked `slow` are deselected unless a `-m`
    expression chooses, or unless every collected test is slow (then deselecting would leave
    nothing: `pytest tests/test_ray.py` runs them instead of ending with pytest's exit code 5)."""
    if config.option.markexpr:
        return
    quick = [item for item in items if item.get_closest_marker("slow") is None]
    if quick and len(quick) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("slow")])
        items[:] = quick
