"""Adapters to outside frameworks, installed as `dqn2snn_plugin.adapters` (one module per framework):

- `sb3`: read Stable-Baselines3 / sb3-contrib DQN and QR-DQN checkpoints safely.
- `spikingjelly`: our conversion recipes for SpikingJelly's `ann2snn.Converter` (rate coding on IF neurons,
  binary coding on its FewSpikeNode).
- `snntorch`: the same spiking networks built from snnTorch neurons (and `BinaryFewSpikes`, a few-spikes
  neuron for binary coding).
- `ray`: benchmark cells as Ray tasks, on this machine or a cluster.
"""
