"""Train (and evaluate) SB3 DQNs on the five MinAtar games: the package's small, fast-to-play fixtures.

Network: the MinAtar paper's (Young & Tian 2019, arXiv:1903.03176): conv 16 filters 3x3 stride 1, no
padding, on the 10x10xC planes, ReLU, flatten, fully connected 128, ReLU, linear output. The conv and
the fc128 form `MinAtarExtractor` (an SB3 features extractor, nn.Sequential-shaped); `net_arch=[]`, so
SB3's q_net adds only the linear output (`q_net.features_extractor.net.{0,3}` and `q_net.q_net.0`).

Environments: `minatar.gym.register_envs()`, ids `MinAtar/<Game>-v1` (minimal action set). The gym env
returns (10, 10, C) bool planes; its defaults are sticky actions with probability 0.1 and difficulty
ramping on (the paper's settings), kept here and recorded in train_log.json. `ChannelFirstPlanes` hands
SB3 (C, 10, 10) uint8 planes in Box(0, 1): uint8 keeps the replay buffer 4x smaller than float32, and the
bound 1 (not 255) makes SB3's `is_image_space` false, so SB3 does not divide by 255 (it only casts to
float: the network sees exactly 0.0 / 1.0).

Hyperparameters start from the paper's DQN (replay 100k, batch 32, lr 2.5e-4, target update 1000,
gamma 0.99, epsilon 1 -> 0.1 over the first 100k steps, learning starts 5000), trimmed to a one-core
budget: fewer steps and one gradient step every 4 agent steps (the paper: 5M frames, every step), and
SB3's Adam instead of the paper's centred RMSprop.

Each game's checkpoint is saved as soon as it finishes, as OUT/dqn-MinAtar-<Game>-v1.zip, without the
replay buffer, without Adam's moments and with the target network tied to the online one (torch.save
writes a shared storage once), so the zip holds one copy of the weights and still loads with DQN.load.

The committed fixtures (seed 0; the shared CPU gave this job 320-690 steps/s, so three games got 250k):

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/train_minatar.py train --games Asterix Breakout --total-timesteps 500000
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/train_minatar.py train --games Freeway SpaceInvaders Seaquest --total-timesteps 250000
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/train_minatar.py evaluate

Both write their records into OUT/train_log.json (per game: "training", "evaluation").
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import gymnasium as gym
import minatar.gym
import numpy as np
import scipy.stats
import torch
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")


@dataclass
class Args:
    """Every option of both commands, declared once; argparse is built from these fields."""

    command: str = field(default="train", metadata={"help": "train: train the games in turn; evaluate: score saved checkpoints"})
    games: list[str] = field(default_factory=lambda: list(GAMES), metadata={"help": "MinAtar games, in order"})
    out: str = field(default="dqn2snn_plugin/data/minatar", metadata={"help": "folder of the checkpoints and train_log.json"})
    seed: int = field(default=0, metadata={"help": "seed of torch, numpy, the env (training) and the evaluation env (seed + 1)"})
    sticky_action_prob: float = field(default=0.1, metadata={"help": "probability the env repeats the last action (MinAtar default)"})
    difficulty_ramping: bool = field(default=True, metadata={"help": "the games speed up over an episode (MinAtar default)"})
    total_timesteps: int = field(default=500_000, metadata={"help": "agent steps per game"})
    train_freq: int = field(default=4, metadata={"help": "agent steps per gradient step (paper: 1)"})
    buffer_size: int = field(default=100_000, metadata={"help": "replay buffer size (paper)"})
    batch_size: int = field(default=32, metadata={"help": "minibatch size (paper)"})
    learning_rate: float = field(default=2.5e-4, metadata={"help": "Adam step size (paper's value, for its RMSprop)"})
    target_update_interval: int = field(default=1000, metadata={"help": "agent steps between target-network copies (paper)"})
    gamma: float = field(default=0.99, metadata={"help": "discount (paper)"})
    exploration_initial_eps: float = field(default=1.0, metadata={"help": "epsilon at the start (paper)"})
    exploration_final_eps: float = field(default=0.1, metadata={"help": "epsilon after the decay (paper)"})
    exploration_steps: int = field(default=100_000, metadata={"help": "agent steps of the linear epsilon decay (paper)"})
    learning_starts: int = field(default=5000, metadata={"help": "agent steps of random play before learning (paper)"})
    log_interval: int = field(default=200, metadata={"help": "training episodes between SB3's progress tables"})
    eval_episodes: int = field(default=100, metadata={"help": "whole episodes per evaluation"})
    eval_eps: list[float] = field(default_factory=lambda: [0.05, 0.0], metadata={"help": "epsilons of the evaluations"})
    eval_max_steps: int = field(default=10_000, metadata={"help": "steps after which an evaluation episode is cut and counted as cut (MinAtar v1 has no time limit; a greedy Seaquest agent can live forever)"})


def parse_args() -> Args:
    """Build the argparse parser from the fields of `Args` (type, default and help from each field)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for item in dataclasses.fields(Args):
        default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        if item.name == "command":
            parser.add_argument("command", choices=("train", "evaluate"), help=item.metadata["help"])
            continue
        flag = "--" + item.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=item.metadata["help"])
        elif isinstance(default, list):
            parser.add_argument(flag, nargs="+", type=type(default[0]), default=default, help=item.metadata["help"])
        else:
            parser.add_argument(flag, type=type(default), default=default, help=item.metadata["help"])
    return Args(**vars(parser.parse_args()))


class ChannelFirstPlanes(gym.ObservationWrapper):
    """MinAtar's (10, 10, C) bool planes as (C, 10, 10) uint8 in Box(0, 1): not an SB3 image space, so no /255."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        height, width, channels = env.observation_space.shape
        self.observation_space = spaces.Box(0, 1, (channels, height, width), np.uint8)
        assert not is_image_space(self.observation_space), "SB3 would divide these planes by 255"

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(observation.transpose(2, 0, 1), dtype=np.uint8)


class MinAtarExtractor(BaseFeaturesExtractor):
    """The paper's body: conv 16x3x3 stride 1 (no padding), ReLU, flatten, fc 128, ReLU."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 128) -> None:
        super().__init__(observation_space, features_dim)
        channels, height, width = observation_space.shape
        self.net = nn.Sequential(
            nn.Conv2d(channels, 16, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * (height - 2) * (width - 2), features_dim),
            nn.ReLU(),
        )

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations)


def env_id(game: str) -> str:
    return f"MinAtar/{game}-v1"


def make_env(game: str, args: Args) -> gym.Env:
    """The gym env with the recorded settings, channel-first (no time limit: MinAtar v1 registers none)."""
    env = gym.make(env_id(game), sticky_action_prob=args.sticky_action_prob, difficulty_ramping=args.difficulty_ramping)
    return ChannelFirstPlanes(env)


def checkpoint_path(game: str, args: Args) -> Path:
    return Path(args.out) / f"dqn-{env_id(game).replace('/', '-')}.zip"


def env_settings(game: str, args: Args) -> dict[str, Any]:
    """What the plugin needs to play the agent exactly as trained."""
    return {
        "env_id": env_id(game),
        "registration": "minatar.gym.register_envs()",
        "make_kwargs": {"sticky_action_prob": args.sticky_action_prob, "difficulty_ramping": args.difficulty_ramping},
        "observation": "gym env's (10, 10, C) bool planes transposed to (C, 10, 10) uint8, values 0/1, not divided",
        "time_limit": None,
    }


def versions() -> dict[str, str]:
    return {name: version(name) for name in ("stable-baselines3", "minatar", "torch", "gymnasium", "numpy")}


def update_log(args: Args, game: str, key: str, record: dict[str, Any]) -> None:
    """Set train_log.json's games[game][key] under a file lock (training and evaluation may overlap)."""
    path = Path(args.out) / "train_log.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        text = handle.read()
        log = json.loads(text) if text else {"script": "benchmarks/train_minatar.py", "games": {}}
        log["games"].setdefault(game, {})[key] = record
        handle.seek(0)
        handle.truncate()
        json.dump(log, handle, indent=2)
        handle.write("\n")


def hyperparameters(args: Args) -> dict[str, Any]:
    return {
        "total_timesteps": args.total_timesteps,
        "train_freq": args.train_freq,
        "gradient_steps": 1,
        "buffer_size": args.buffer_size,
        "batch_size": args.batch_size,
        "optimizer": "Adam (SB3 default)",
        "learning_rate": args.learning_rate,
        "loss": "smooth L1 (SB3 default)",
        "max_grad_norm": 10,
        "target_update_interval": args.target_update_interval,
        "gamma": args.gamma,
        "exploration_initial_eps": args.exploration_initial_eps,
        "exploration_final_eps": args.exploration_final_eps,
        "exploration_steps": args.exploration_steps,
        "learning_starts": args.learning_starts,
        "network": "conv 16x3x3 s1 valid, ReLU, flatten, fc 128, ReLU, linear (Young & Tian 2019)",
    }


def train(game: str, args: Args) -> None:
    """Train one game and save its checkpoint (one copy of the weights, no optimizer state, no buffer)."""
    env = Monitor(make_env(game, args))
    model = DQN(
        "CnnPolicy",
        env,
        learning_rate=args.learning_rate,
        buffer_size=args.buffer_size,
        learning_starts=args.learning_starts,
        batch_size=args.batch_size,
        gamma=args.gamma,
        train_freq=args.train_freq,
        gradient_steps=1,
        target_update_interval=args.target_update_interval,
        exploration_fraction=args.exploration_steps / args.total_timesteps,
        exploration_initial_eps=args.exploration_initial_eps,
        exploration_final_eps=args.exploration_final_eps,
        max_grad_norm=10,
        policy_kwargs={"features_extractor_class": MinAtarExtractor, "net_arch": [], "normalize_images": False},
        seed=args.seed,
        verbose=1,
        device="cpu",
    )
    start = time.perf_counter()
    model.learn(args.total_timesteps, log_interval=args.log_interval, progress_bar=False)
    wall = time.perf_counter() - start
    policy = model.policy
    for target, online in zip(policy.q_net_target.parameters(), policy.q_net.parameters()):
        target.data = online.data
    policy.optimizer = policy.optimizer_class(policy.q_net.parameters(), lr=args.learning_rate, **policy.optimizer_kwargs)
    path = checkpoint_path(game, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    returns = list(env.get_episode_rewards())
    update_log(args, game, "training", {
        "steps": args.total_timesteps,
        "wall_s": round(wall, 1),
        "steps_per_s": round(args.total_timesteps / wall, 1),
        "machine": "1 core of a shared 2-core CPU (nice 10, OMP_NUM_THREADS=1, torch threads 1)",
        "episodes": len(returns),
        "last_100_training_returns_mean": float(np.mean(returns[-100:])) if returns else None,
        "seed": args.seed,
        "hyperparameters": hyperparameters(args),
        "env": env_settings(game, args),
        "checkpoint": path.name,
        "checkpoint_bytes": path.stat().st_size,
        "versions": versions(),
    })
    print(f"{game}: {args.total_timesteps} steps in {wall:.0f} s -> {path} ({path.stat().st_size} bytes)", flush=True)


def play(model: DQN, game: str, args: Args, epsilon: float) -> dict[str, Any]:
    """`eval_episodes` whole episodes, epsilon-greedy on the Q-values (ties: the first action), own seeds.

    One env per episode, stepped in lockstep so that one batched forward pass serves them all (the
    shared CPU makes per-step inference the cost); episode i's env is seeded seed + 1 + i (never the
    training env's seed) and the exploration draws come from their own generator (seed + 1 + eval_episodes),
    so every evaluation is reproducible.
    """
    envs = [make_env(game, args) for _ in range(args.eval_episodes)]
    observations = np.stack([env.reset(seed=args.seed + 1 + i)[0] for i, env in enumerate(envs)])
    rng = np.random.default_rng(args.seed + 1 + len(envs))
    returns = np.zeros(len(envs))
    lengths = np.zeros(len(envs), dtype=int)
    running = np.ones(len(envs), dtype=bool)
    ended = np.zeros(len(envs), dtype=bool)
    start = time.perf_counter()
    while running.any():
        live = np.flatnonzero(running)
        with torch.no_grad():
            greedy = model.policy.q_net(torch.as_tensor(observations[live], dtype=torch.float32)).argmax(1).numpy()
        explore = rng.random(len(live)) < epsilon
        actions = np.where(explore, rng.integers(envs[0].action_space.n, size=len(live)), greedy)
        for index, action in zip(live, actions):
            observations[index], reward, terminated, truncated, _ = envs[index].step(int(action))
            returns[index] += float(reward)
            lengths[index] += 1
            ended[index] = terminated
            running[index] = not (terminated or truncated or lengths[index] >= args.eval_max_steps)
    cut = int((~ended).sum())
    scores = returns
    half = scipy.stats.t.ppf(0.975, len(scores) - 1) * scores.std(ddof=1) / np.sqrt(len(scores))
    return {
        "epsilon": epsilon,
        "episodes": len(scores),
        "mean": round(float(scores.mean()), 3),
        "ci95": [round(float(scores.mean() - half), 3), round(float(scores.mean() + half), 3)],
        "ci_method": "Student t, 95 %, n - 1 degrees of freedom",
        "std": round(float(scores.std(ddof=1)), 3),
        "min": float(scores.min()),
        "max": float(scores.max()),
        "mean_length": round(float(lengths.mean()), 1),
        "eval_max_steps": args.eval_max_steps,
        "episodes_cut": cut,
        "env_seeds": f"seed + 1 + episode index ({args.seed + 1} .. {args.seed + len(envs)})",
        "exploration_seed": args.seed + 1 + len(envs),
        "wall_s": round(time.perf_counter() - start, 1),
    }


def evaluate(game: str, args: Args) -> None:
    """Load the saved zip with DQN.load (so the fixture itself is what gets scored) and play each epsilon."""
    path = checkpoint_path(game, args)
    model = DQN.load(path, device="cpu")
    results = [play(model, game, args, epsilon) for epsilon in args.eval_eps]
    update_log(args, game, "evaluation", {"checkpoint": path.name, "env": env_settings(game, args), "results": results})
    for result in results:
        print(f"{game} epsilon {result['epsilon']}: {result['mean']} (95 % CI {result['ci95']}, "
              f"{result['episodes']} episodes, {result['wall_s']} s)", flush=True)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    minatar.gym.register_envs()
    for game in args.games:
        (train if args.command == "train" else evaluate)(game, args)


if __name__ == "__main__":
    main()
