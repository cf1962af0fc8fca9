"""Shared test fixtures: the read-only checkpoints in ../shared/fixtures and a few real Atari frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dqn2snn_plugin.checkpoint import DQNCheckpoint

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
ATARI_DIR = FIXTURES / "atari-dqn"
BREAKOUT_ZIP = ATARI_DIR / "dqn-BreakoutNoFrameskip-v4.zip"
ZOO_CLASSIC = FIXTURES / "sb3-zoo" / "classic"
QNET_FILES = sorted(ATARI_DIR.glob("*.qnet.pt"))
ALL_CHECKPOINTS = [BREAKOUT_ZIP, *sorted(ZOO_CLASSIC.glob("*.zip")), *QNET_FILES]


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
    return _require(ATARI_DIR / request.param)


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
