"""Environments the DQN plays: `play` (any family), `protocol` (how a game is played: presets, text and
JSON forms), `atari` (ale-py's native vector env under a protocol), `minatar` (MinAtar's binary planes)
and `classic` (gymnasium's vector-observation tasks)."""
