"""Written with the code at 0ed19b0: saved SNNs and their readouts, for test_store's backward-compatibility test."""
import torch
from torch import nn
from dqn2snn_plugin import convert
from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.improve.tuning import calibrate_biases
from dqn2snn_plugin.io.store import save_snn

torch.manual_seed(0)
net = nn.Sequential(nn.Linear(6, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
ckpt = DQNCheckpoint(net, 4, (6,), "MlpPolicy", "DQN", None, None, "<test>")
gen = torch.Generator().manual_seed(1)
states = torch.randn(200, 6, generator=gen)
probe = torch.randn(32, 6, generator=gen)
out = {"probe": probe}
rate = convert(ckpt, states, T=12)
calibrate_biases(rate, ckpt, states, 12)
binary = convert(ckpt, states, T=6, coding="binary", channel_wise=True, percentile=99.99)
snntorch = convert(ckpt, states, T=10, backend="snntorch", initial_membrane="half", readout="spikes")
for name, snn in [("rate_tuned", rate), ("binary", binary), ("snntorch_half", snntorch)]:
    save_snn(snn, ckpt, f"tests/data/old_snn_{name}.pt")
    out[name] = snn.readouts(probe)
torch.save(out, "tests/data/old_snn_readouts.pt")
