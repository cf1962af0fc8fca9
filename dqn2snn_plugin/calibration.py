"""Calibration (and test) observations: states the DQN visits in its own epsilon = 0.05 play.

The paper calibrates the layer scales on up to 15,000 frames of the agent's own play. Collecting them
takes a while, so `collect_observations` caches the frames on disk, keyed by everything that decides
them (network weights, game, protocol, frame count, seed, epsilon, number of envs).

The states are played under an environment protocol (`dqn2snn_plugin.envs.protocol`, default the
paper's for Atari, MinAtar's own for MinAtar): calibrate under the protocol the agent was trained
with, or its first layer's scale is set by states it never saw. A user's own vector env
(`env_factory`) plays with whatever wrappers it has; its frames are not cached (a factory has no key).

Calibration and test states must come from separate episodes: `calibration_and_test_observations`
plays the two sets from disjoint env seeds and independent exploration, i.e. different episodes.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np

from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.envs.play import EnvFactory, check_action_count, check_observation_shape, play, resolve_protocol
from dqn2snn_plugin.envs.protocol import PRESETS, Protocol
from dqn2snn_plugin.errors import CalibrationError, ConfigError, ObservationError, ResultsError
from dqn2snn_plugin.io.cache import cache_dir as default_cache_dir
from dqn2snn_plugin.io.results import write_file
from dqn2snn_plugin.observations import observation_batch

# Seed offset of the test set: env seeds (seed + i) of the two runs never overlap below this many envs.
TEST_SEED_OFFSET = 1_000_003
_CACHE_FORMAT = "obs-v1"


def _cache_key(checkpoint: DQNCheckpoint, **settings: object) -> str:
    """Hash of the network's weights plus the settings that decide which frames are collected."""
    digest = hashlib.sha256(_CACHE_FORMAT.encode())
    for name, tensor in checkpoint.q_network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(repr(sorted(settings.items())).encode())
    return digest.hexdigest()[:24]


def _save_atomically(path: Path, array: np.ndarray) -> None:
    """Write `array` as .npy through the one atomic writer: readers see either no file or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.save would append .npy to a path
            np.save(handle, array)

    write_file(path, save)


def _load_cached(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached frames, or None (with a warning naming the file) when the file is damaged: then
    they are collected again and the file is replaced."""
    try:
        frames = np.load(path, allow_pickle=False)
        if frames.shape == shape:
            observation_batch(frames, shape[1:])  # a poisoned file (NaN, fractional pixels) is named here
            return frames
        reason = f"holds shape {frames.shape}, expected {shape}"
    except (OSError, ValueError, EOFError, ObservationError) as exc:
        reason = f"cannot be read ({exc})"
    warnings.warn(f"calibration cache {path} {reason}: collecting the frames again", stacklevel=3)
    return None


def _play_frames(
    checkpoint: DQNCheckpoint, n_frames: int, epsilon: float, seed: int, n_envs: int, progress: bool,
    protocol: Protocol | None, env_factory: EnvFactory | None,
) -> np.ndarray:
    """The first `n_frames` states the DQN visits playing its game with epsilon-greedy exploration
    (in the env's dtype: uint8 for Atari, float32 for gymnasium's vector tasks, bool for MinAtar)."""
    frames: np.ndarray | None = None
    filled = 0

    def record(obs: np.ndarray, greedy: np.ndarray, taken: np.ndarray) -> bool:
        nonlocal filled, frames
        if frames is None:
            frames = np.empty((n_frames, *checkpoint.observation_shape), dtype=obs.dtype)
        take = min(len(obs), n_frames - filled)
        frames[filled : filled + take] = obs[:take]
        filled += take
        return filled >= n_frames

    play(checkpoint.act, checkpoint.env_id, None, n_envs=n_envs, epsilon=epsilon, seed=seed, on_step=record,
         progress=progress, protocol=protocol, env_factory=env_factory,
         observation_shape=tuple(checkpoint.observation_shape))
    return frames


def collect_observations(
    checkpoint: DQNCheckpoint,
    n_frames: int = 15_000,
    *,
    epsilon: float = 0.05,
    seed: int = 0,
    n_envs: int = 8,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = False,
    protocol: Protocol | str | None = None,
    env_factory: EnvFactory | None = None,
) -> np.ndarray:
    """`[n_frames, *observation_shape]` (uint8 for Atari): states visited while the DQN plays `checkpoint.env_id`.

    The DQN plays whole games (`n_envs` in parallel, env i seeded with seed + i) with epsilon-greedy
    exploration, under `protocol` (see the module doc) or in the user's `env_factory(n)` vector env;
    every state it acts on is recorded, in step order, until `n_frames` are collected. The result is
    cached under `cache_dir` (default `dqn2snn_plugin.io.cache.cache_dir()`) and reused when the
    weights, game, protocol, `n_frames`, `seed`, `epsilon` and `n_envs` are the same; `use_cache=False`
    neither reads nor writes the cache. Different seeds give different episodes.
    """
    if n_frames < 1:
        raise ConfigError(f"n_frames must be at least 1, got {n_frames}")
    if env_factory is not None:
        if protocol is not None:
            raise ConfigError("pass either env_factory or protocol: a protocol only sets up the envs the plugin makes")
        return _play_frames(checkpoint, n_frames, epsilon, seed, n_envs, progress, None, env_factory)
    if checkpoint.env_id is None:
        raise CalibrationError(
            "the checkpoint does not name its environment (env_id is None): pass calibration "
            "observations yourself, an env_factory, or load the checkpoint with its env id"
        )
    protocol = resolve_protocol(checkpoint.env_id, protocol)
    check_action_count(checkpoint.env_id, checkpoint.n_actions, protocol)
    check_observation_shape(checkpoint.env_id, checkpoint.observation_shape, protocol)
    settings = {"env_id": checkpoint.env_id, "n_frames": n_frames, "seed": seed, "epsilon": epsilon, "n_envs": n_envs}
    if protocol not in (None, PRESETS["paper"]):
        settings["protocol"] = protocol.to_json()  # the paper's protocol keeps the keys of earlier caches
    key = _cache_key(checkpoint, **settings)
    path = Path(cache_dir or default_cache_dir()) / f"{checkpoint.env_id.replace('/', '_')}-{key}.npy"
    if use_cache and path.is_file():
        cached = _load_cached(path, (n_frames, *checkpoint.observation_shape))
        if cached is not None:
            return cached
    frames = _play_frames(checkpoint, n_frames, epsilon, seed, n_envs, progress, protocol, None)
    if use_cache:
        try:
            _save_atomically(path, frames)
        except (OSError, ResultsError) as exc:  # a full disk or an unwritable cache: the frames are still good
            warnings.warn(f"calibration cache {path} not written ({exc}): continuing without it", stacklevel=2)
    return frames


def calibration_and_test_observations(
    checkpoint: DQNCheckpoint, n_calibration: int = 15_000, n_test: int = 1_000, *, seed: int = 0, **options: object
) -> tuple[np.ndarray, np.ndarray]:
    """Calibration and test states from separate episodes of the DQN's own play.

    The calibration set is `collect_observations(checkpoint, n_calibration, seed=seed, ...)`; the test
    set uses `seed + TEST_SEED_OFFSET`, so its episodes start from other env seeds and explore with
    another random stream. `options` go to both calls (epsilon, n_envs, cache_dir, ...).
    """
    calibration = collect_observations(checkpoint, n_calibration, seed=seed, **options)
    test = collect_observations(checkpoint, n_test, seed=seed + TEST_SEED_OFFSET, **options)
    return calibration, test
