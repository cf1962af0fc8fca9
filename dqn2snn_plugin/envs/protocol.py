"""How a game is played: the environment protocol as one named, documented, serialisable setting.

A DQN only plays well through the preprocessing it was trained with. A Pong DQN trained on
`PongDeterministic-v4` (frame skip 4 without max-pool, no no-op starts, first frame copied into the
stack) scores -2.8 through the paper's protocol instead of +16.8 through its own: the protocol is a
setting of an evaluation, not a constant. `AtariProtocol` names every choice that changes what the
network sees; `MinAtarProtocol` records MinAtar's own two settings.

Presets (`PRESETS`), and where each value comes from:
- `paper`: Tan, Patel & Kozma's evaluation, the plugin's behaviour before protocols existed:
  `<Game>NoFrameskip-v4`, frame skip 4 with a max-pool over the last two frames, up to 30 no-op
  starts, FIRE on reset (ale-py's native one-frame press), no sticky actions, zero-filled 4-frame
  stack, whole games (all lives), at most 18,000 agent steps.
- `sb3`: RL-Zoo's Atari setup, `AtariWrapper` defaults in stable_baselines3/common/atari_wrappers.py
  (2.9.2: noop_max=30, frame_skip=4 via MaxAndSkipEnv, i.e. max-pool of the last two frames,
  terminal_on_life_loss=True, FireResetEnv when the game has FIRE: a FIRE step then an action-2
  step, action_repeat_probability=0) plus `VecFrameStack(4)`, which zero-fills at every reset.
- `cleanrl`: cleanrl/dqn_atari.py's `make_env`: SB3's NoopResetEnv(30), MaxAndSkipEnv(4),
  EpisodicLifeEnv and FireResetEnv, then a 4-frame stack that fills with copies of the first frame
  (gym's `FrameStack`, and gymnasium's `FrameStackObservation` default padding_type="reset").
  CleanRL resizes the RGB frame before graying it; ALE's own gray frame resized differs by a few
  grey levels per pixel, which this protocol does not reproduce.
- `ale-v5`: `ALE/<Game>-v5` with Machado et al. (2018)'s recommendations: sticky actions with
  probability 0.25 (ale-py's v5 default) instead of no-op starts, full action set (18 actions; the
  registered v5 ids default to the minimal set: add `action_set=minimal` for those), no FIRE reset
  and no life-loss signal (no game-specific knowledge), frame skip 4 with max-pool, zero-filled stack,
  27,000 agent steps (ale-py's v5 cap of 108,000 emulator frames).
- `minatar`: MinAtar's package defaults (minatar/environment.py: sticky_action_prob=0.1,
  difficulty_ramping=True) for the `MinAtar/<Game>-v1` ids (minimal action set).

Three forms, one object: Python (`AtariProtocol(...)`, `PRESETS["sb3"]`, `dataclasses.replace`), the
one-flag CLI text `parse_protocol("paper,max_pool=false,noop_max=0,fire_reset=off,stack_fill=copy")`
(`str(protocol)` writes it back, naming only what differs from the preset), and plain JSON for
result files (`to_json` / `protocol_from_json`). Every field is checked when the object is made, so
a protocol that exists is valid; `check_protocol` refuses anything else (ConfigError, one line).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Literal

from dqn2snn_plugin.errors import ConfigError

FireReset = Literal["off", "ale", "sb3"]
StackFill = Literal["zero", "copy"]
ActionSet = Literal["minimal", "full"]
EnvVersion = Literal["v4", "v5"]

# preset name -> the family of games it plays (the presets themselves: PRESETS, below the classes)
PRESET_FAMILIES = {"paper": "atari", "sb3": "atari", "cleanrl": "atari", "ale-v5": "atari", "minatar": "minatar"}
_CHOICES: dict[str, tuple[str, ...]] = {
    "fire_reset": ("off", "ale", "sb3"),
    "stack_fill": ("zero", "copy"),
    "action_set": ("minimal", "full"),
    "env_version": ("v4", "v5"),
}
# the CLI's plain booleans for fire_reset: false -> off, true -> ale-py's native press
_FIRE_ALIASES = {"false": "off", "no": "off", "0": "off", "true": "ale", "yes": "ale", "1": "ale"}


class _Settings:
    """What both protocols share: checked when made, the CLI text form and the JSON form."""

    family = ""

    def __post_init__(self) -> None:
        _check_fields(self)

    def __str__(self) -> str:
        return _to_text(self)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (every field, plus "family"), read back by `protocol_from_json`."""
        return {"family": self.family, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class AtariProtocol(_Settings):
    """Every setting of an Atari evaluation that changes what the network sees (see the module doc).

    frame_skip: emulator frames per agent step (the action is repeated).
    max_pool: the observed frame is the pixel-wise max of the last two skipped frames (else the last).
    noop_max: each game starts with a random 0..noop_max emulator frames of NOOP (0: deterministic).
    fire_reset: after a reset (and after a life loss when terminal_on_life_loss) in games with FIRE:
        "off"; "ale" (ale-py's native press: one FIRE frame); "sb3" (FireResetEnv: one FIRE step,
        then one step of action 2).
    sticky_actions: probability that the emulator repeats the previous action instead (ALE's
        repeat_action_probability).
    stack_fill: what fills the 4-frame stack before an episode's first frame: "zero" (SB3's
        VecFrameStack) or "copy" of the first frame (gym FrameStack, CleanRL).
    terminal_on_life_loss: SB3's EpisodicLifeEnv as the agent saw it in training: at a life loss the
        stack restarts, one NOOP step (and the FIRE sequence) follow, but the score still counts the
        whole game.
    action_set: "minimal" (the game's own actions) or "full" (all 18).
    env_version: which registered ids name the games: "v4" `<Game>NoFrameskip-v4`, "v5" `ALE/<Game>-v5`.
    max_steps: an episode is cut after this many agent steps.
    """

    preset: str = "paper"
    frame_skip: int = 4
    max_pool: bool = True
    noop_max: int = 30
    fire_reset: FireReset = "ale"
    sticky_actions: float = 0.0
    stack_fill: StackFill = "zero"
    terminal_on_life_loss: bool = False
    action_set: ActionSet = "minimal"
    env_version: EnvVersion = "v4"
    max_steps: int = 18_000

    family = "atari"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.frame_skip <= 64:
            raise ConfigError(f"protocol frame_skip must lie in 1..64, got {self.frame_skip}")
        if not 0 <= self.noop_max <= 1000:
            raise ConfigError(f"protocol noop_max must lie in 0..1000, got {self.noop_max}")


@dataclass(frozen=True)
class MinAtarProtocol(_Settings):
    """MinAtar's own settings (minatar.Environment): sticky-action probability, difficulty ramping
    (the game speeds up as it goes on), and the agent-step cap per episode."""

    preset: str = "minatar"
    sticky_actions: float = 0.1
    difficulty_ramping: bool = True
    max_steps: int = 18_000

    family = "minatar"


def _check_fields(protocol: Protocol) -> None:
    """Types and choices of every field (ConfigError naming the field), before any range check."""
    if PRESET_FAMILIES.get(protocol.preset) != protocol.family:
        names = [name for name, family in PRESET_FAMILIES.items() if family == protocol.family]
        raise ConfigError(f"{type(protocol).__name__} preset must be one of {', '.join(names)}, got {protocol.preset!r}")
    for field in fields(protocol):
        value = getattr(protocol, field.name)
        if field.name in _CHOICES:
            if value not in _CHOICES[field.name]:
                raise ConfigError(f"protocol {field.name} must be one of {', '.join(_CHOICES[field.name])}, "
                                  f"got {value!r}")
        elif field.type == "bool" and not isinstance(value, bool):
            raise ConfigError(f"protocol {field.name} must be true or false, got {value!r}")
        elif field.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"protocol {field.name} must be a whole number, got {value!r}")
        elif field.type == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"protocol {field.name} must be a number, got {value!r}")
    if protocol.max_steps < 1:
        raise ConfigError(f"protocol max_steps must be at least 1, got {protocol.max_steps}")
    if not 0.0 <= protocol.sticky_actions < 1.0:
        raise ConfigError(f"protocol sticky_actions must lie in [0, 1), got {protocol.sticky_actions}")


Protocol = AtariProtocol | MinAtarProtocol

PRESETS: dict[str, Protocol] = {
    "paper": AtariProtocol(),
    "sb3": AtariProtocol(preset="sb3", fire_reset="sb3", terminal_on_life_loss=True),
    "cleanrl": AtariProtocol(preset="cleanrl", fire_reset="sb3", terminal_on_life_loss=True, stack_fill="copy"),
    "ale-v5": AtariProtocol(preset="ale-v5", noop_max=0, fire_reset="off", sticky_actions=0.25, action_set="full",
                            env_version="v5", max_steps=27_000),
    "minatar": MinAtarProtocol(),
}


def _field_names(protocol: Protocol) -> list[str]:
    return [field.name for field in fields(protocol) if field.name != "preset"]


def _parse_value(protocol: Protocol, name: str, text: str) -> object:
    """One `field=value` value, typed like the field (ConfigError naming the field and the value)."""
    kind = next(field.type for field in fields(protocol) if field.name == name)
    word = text.strip().lower()
    if name == "fire_reset":
        return _FIRE_ALIASES.get(word, word)
    if name in _CHOICES:
        return word
    try:
        if kind == "bool":
            return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}[word]
        return int(word) if kind == "int" else float(word)
    except (KeyError, ValueError):
        expected = {"bool": "true or false", "int": "a whole number", "float": "a number"}[kind]
        raise ConfigError(f"bad protocol value {name}={text!r}: expected {expected}") from None


def parse_protocol(text: str) -> Protocol:
    """The CLI form `preset[,field=value...]`, e.g. "paper,max_pool=false,noop_max=0,stack_fill=copy".

    ConfigError (one line) for an unknown preset, an unknown field or a bad value."""
    preset, *overrides = [part.strip() for part in str(text).split(",")]
    if preset not in PRESETS:
        raise ConfigError(f"unknown protocol preset {preset!r}: expected one of {', '.join(PRESET_FAMILIES)}, "
                          "optionally followed by ,field=value overrides")
    base = PRESETS[preset]
    changes: dict[str, object] = {}
    for item in overrides:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in _field_names(base):
            raise ConfigError(f"unknown protocol field {item!r} for preset {preset!r}: expected field=value with a "
                              f"field among {', '.join(_field_names(base))}")
        changes[name] = _parse_value(base, name, value)
    return dataclasses.replace(base, **changes)


def _to_text(protocol: Protocol) -> str:
    """The CLI form of `protocol`: its preset and the fields that differ from it."""
    base = PRESETS[protocol.preset]
    parts = [protocol.preset]
    for name in _field_names(protocol):
        value = getattr(protocol, name)
        if value != getattr(base, name):
            parts.append(f"{name}={str(value).lower() if isinstance(value, bool) else value}")
    return ",".join(parts)


def protocol_from_json(data: dict[str, Any]) -> Protocol:
    """The protocol a result file recorded with `to_json` (ConfigError for anything else)."""
    if not isinstance(data, dict) or data.get("family") not in ("atari", "minatar"):
        raise ConfigError(f"not a recorded protocol (expected a dict with family 'atari' or 'minatar'): {data!r}")
    cls = AtariProtocol if data["family"] == "atari" else MinAtarProtocol
    known = {field.name for field in fields(cls)}
    unknown = sorted(set(data) - known - {"family"})
    if unknown:
        raise ConfigError(f"recorded protocol has unknown fields {unknown}: written by a newer plugin?")
    return cls(**{name: value for name, value in data.items() if name in known})


def check_protocol(protocol: Protocol | str | None, family: str) -> Protocol:
    """The protocol to play a `family` ("atari" or "minatar") game with; None: the family's default
    (`paper` for Atari, `minatar` for MinAtar); a string is parsed. ConfigError when it is not a
    protocol or belongs to the other family."""
    if protocol is None:
        return PRESETS["paper" if family == "atari" else "minatar"]
    if isinstance(protocol, str):
        protocol = parse_protocol(protocol)
    if not isinstance(protocol, (AtariProtocol, MinAtarProtocol)):
        raise ConfigError(f"protocol must be an AtariProtocol, a MinAtarProtocol or its text form, got "
                          f"{type(protocol).__name__}")
    if protocol.family != family:
        raise ConfigError(f"protocol {str(protocol)!r} is for {protocol.family} games, not {family} ones")
    return protocol
