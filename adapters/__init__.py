"""Adapters to outside frameworks, installed as `dqn2snn_plugin.adapters` (one module per framework):

- `sb3`: read Stable-Baselines3 / sb3-contrib DQN and QR-DQN checkpoints safely.
- `spikingjelly`: our conversion recipe for SpikingJelly's `ann2snn.Converter`.
- `snntorch`: the same spiking network built from snnTorch neurons.
- `ray`: benchmark cells as Ray tasks, on this machine or a cluster.
"""
