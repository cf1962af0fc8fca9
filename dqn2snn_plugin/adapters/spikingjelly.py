"""SpikingJelly adapter: our normalisation as `ann2snn` recipes, and SpikingJelly's neurons.

`RobustNormRecipe` (rate coding, the paper) and `BinaryCodingRecipe` (T-bit codes on SpikingJelly's
`FewSpikeNode`) plug into SpikingJelly's fixed converter template:

    from spikingjelly.activation_based import ann2snn, functional
    from dqn2snn_plugin.adapters.spikingjelly import BinaryCodingRecipe, RobustNormRecipe
    snn = ann2snn.Converter(recipe=RobustNormRecipe(states, percentile=99.9)).convert(q_network)
    binary = ann2snn.Converter(recipe=BinaryCodingRecipe(states, bits=8)).convert(q_network)

Both reuse `RateCodingRecipe`'s graph surgery (ReLU -> scaler, neuron, scaler(lambda)) and replace
only its calibration: SpikingJelly ranks each batch and blends the results with momentum, so the
first batch dominates; we rank the whole calibration set at once (`normalization.layer_scales`).
"""

from __future__ import annotations

import copy
import weakref

import torch
from spikingjelly.activation_based import base, neuron
from spikingjelly.activation_based.ann2snn import RateCodingRecipe
from spikingjelly.activation_based.ann2snn.modules import VoltageHook
from spikingjelly.activation_based.ann2snn.recipes.base import replace_submodule
from spikingjelly.activation_based.ann2snn.recipes.rate_coding import ChannelVoltageHook
from spikingjelly.activation_based.neuron.few_spike import FewSpikeNode, FewSpikeTable
from torch import fx, nn

from dqn2snn_plugin import binary_coding
from dqn2snn_plugin.normalization import LayerScales, Rank, check_network, check_percentile, layer_scales
from dqn2snn_plugin.coding import check_T
from dqn2snn_plugin.engine.rate import if_scan


class RobustNormRecipe(RateCodingRecipe):
    """Rate-coding conversion with exact global percentile scales (the paper's data-based normalisation).

    Args:
        calibration: float observations as the network takes them ([N, ...] tensor, or a list of
            batches); ignored when `scales` is given.
        percentile: p in (0, 100] or "max"; see `dqn2snn_plugin.normalization` for what is ranked.
        rank: "nonzero" values only (default, as the SNN toolbox the paper follows) or "all" post-ReLU
            values, zeros included (as SpikingJelly's own hook).
        channel_wise: one scale per output channel instead of one per layer.
        half_threshold: membranes start (and reset between decisions) at threshold / 2.
        scales: precomputed `LayerScales` (then no calibration pass is run).
    """

    def __init__(
        self,
        calibration: torch.Tensor | list[torch.Tensor] | None = None,
        percentile: float | str = 99.9,
        *,
        rank: Rank = "nonzero",
        channel_wise: bool = False,
        half_threshold: bool = False,
        scales: LayerScales | None = None,
    ) -> None:
        p = check_percentile(percentile)
        super().__init__(
            dataloader=() if calibration is None else [calibration],
            mode="max" if p == 100.0 else f"{p}%",
            channel_wise=channel_wise,
            half_threshold=half_threshold and channel_wise,
            neuron_factory=(lambda _: neuron.HalfThresholdIFNode()) if half_threshold and not channel_wise else None,
        )
        if calibration is None and scales is None:
            raise ValueError("RobustNormRecipe needs calibration observations or precomputed scales")
        self.percentile, self.rank, self.scales = percentile, rank, scales
        self._ann: nn.Sequential | None = None

    def before_trace(self, converter, ann: nn.Module) -> nn.Module:
        check_network(ann)
        self._ann = ann
        return super().before_trace(converter, ann)

    def calibrate(self, converter, fx_model: fx.GraphModule) -> fx.GraphModule:
        """Compute exact scales on the whole set and hand them to the hooks the parent recipe reads."""
        dtype = next(self._ann.parameters()).dtype
        if self.scales is None:
            data = self.dataloader[0]
            data = torch.cat(list(data)) if isinstance(data, (list, tuple)) else torch.as_tensor(data)
            self.scales = layer_scales(
                self._ann, data.to(converter.device, dtype), self.percentile, rank=self.rank, channel_wise=self.channel_wise,
            )
        hooks = [m for m in fx_model.modules() if isinstance(m, (VoltageHook, ChannelVoltageHook))]
        if len(hooks) != len(self.scales.hidden):
            raise ValueError(f"{len(hooks)} ReLU layers in the graph but {len(self.scales.hidden)} scales")
        for hook, scale in zip(hooks, self.scales.hidden):
            # in the network's precision, as the scalers the parent recipe derives from it
            hook.scale = scale.to(converter.device, dtype).clone()
        return fx_model


def step_neuron(initial_membrane: float) -> nn.Module:
    """A single-step IF layer (threshold 1, subtractive reset) whose membrane starts, and resets between
    decisions (`functional.reset_net`), at `initial_membrane` (0 or 0.5)."""
    return neuron.HalfThresholdIFNode() if initial_membrane == 0.5 else neuron.IFNode(v_reset=None)


def binary_few_spike_node(bits: int, initial_membrane: float) -> FewSpikeNode:
    """SpikingJelly's few-spikes neuron sending T-bit codes (`binary_coding.few_spike_table`).

    Its gate is in least-significant-bit units, so its full scale is 2**T - 1: set as `v_threshold`,
    the value `RateCodingRecipe` reads to scale the ReLU input by v_threshold / lambda.
    """
    node = FewSpikeNode(FewSpikeTable(*binary_coding.few_spike_table(bits, initial_membrane)))
    node.v_threshold = float(2**bits - 1)
    return node


class DecisionBias(nn.Module, base.StepModule):
    """A synaptic layer's bias, entering once per decision.

    Single-step mode adds it; multi-step mode adds it at the first of the K steps only: a
    `FewSpikeNode` sums its K inputs, so a bias at every step would count K times.
    """

    def __init__(self, bias: torch.Tensor, step_mode: str = "s") -> None:
        super().__init__()
        self.register_buffer("bias", bias.detach().clone())
        self.step_mode = step_mode

    def _shaped(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.view(-1, *([1] * (x.ndim - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return x + self._shaped(x)
        first = x[:1] + self._shaped(x[0])
        return torch.cat([first, x[1:]])


class BinaryCodingRecipe(RobustNormRecipe):
    """Binary spike coding (`convert(..., coding="binary")`) as a SpikingJelly conversion recipe.

    Each ReLU becomes scaler((2**bits - 1) / lambda) -> `FewSpikeNode` (binary table, rounding start
    folded into its thresholds) -> scaler(lambda); the output layer stays analog, and each bias
    becomes a `DecisionBias`. How to run the converted graph:

    - single-step mode (default): `graph(x)` on prepared observations [B, ...] is the Q-value
      readout, each FewSpikeNode sending its whole code at once.
    - multi-step mode (`functional.set_step_mode(graph, "m")`): every layer runs its K = bits steps
      explicitly. Feed x_seq [K, B, ...] with the observation at step 0 and zeros after (a
      FewSpikeNode integrates the sum of its K inputs); `graph(x_seq)` [K, B, n_actions] holds the
      output layer's current at each step and `.sum(0)` is the Q-value readout.

    Args:
        calibration: float observations as the network takes them; ignored when `scales` is given.
        bits: T, bits per activation (and steps per layer).
        percentile, rank, channel_wise, scales: as for `RobustNormRecipe` (99.99 and channel-wise
            scales measured best for binary coding).
        initial_membrane: the rounding start in least-significant bits (0.5: round to nearest level,
            0: truncate).
    """

    def __init__(
        self,
        calibration: torch.Tensor | list[torch.Tensor] | None = None,
        bits: int = 8,
        percentile: float | str = 99.99,
        *,
        rank: Rank = "nonzero",
        channel_wise: bool = True,
        initial_membrane: float = 0.5,
        scales: LayerScales | None = None,
    ) -> None:
        super().__init__(calibration, percentile, rank=rank, channel_wise=channel_wise, scales=scales)
        self.bits = binary_coding.check_bits(check_T(bits))
        self.neuron_factory = lambda _: binary_few_spike_node(self.bits, initial_membrane)

    def after_trace(self, converter, fx_model: fx.GraphModule) -> fx.GraphModule:
        """Move each Conv2d / Linear bias into a `DecisionBias` after it (on copies: the ANN stays as is)."""
        fx_model = super().after_trace(converter, fx_model)
        modules = dict(fx_model.named_modules())
        for node in list(fx_model.graph.nodes):
            layer = modules.get(node.target) if node.op == "call_module" else None
            if not isinstance(layer, (nn.Conv2d, nn.Linear)) or layer.bias is None:
                continue
            unbiased = copy.deepcopy(layer)
            unbiased.bias = None
            replace_submodule(fx_model, node.target, unbiased)
            target = f"{node.target.replace('.', '_')}_bias"
            fx_model.add_submodule(target, DecisionBias(layer.bias))
            with fx_model.graph.inserting_after(node):
                bias_node = fx_model.graph.call_module(target, args=(node,))
            node.replace_all_uses_with(bias_node, delete_user_cb=lambda user: user is not bias_node)
        fx_model.graph.lint()
        fx_model.recompile()
        return fx_model


class SpikingJellyBackend:
    """Runs SpikingJelly's neurons: IF (soft reset) in multi-step mode with explicit initial membranes
    for rate coding, `FewSpikeNode` for binary coding.

    Args:
        kernel: "auto" runs SpikingJelly's own neurons on GPU (its multi-step IF kernel, Triton when
            `SJ_IF_CUDA_IMPLEMENTATION=triton`; `FewSpikeNode` for binary codes) and our inference
            scans on CPU (`engine.rate.if_scan`, `binary_coding.fire`: the same equations without the
            copies kept for training, 2-4x faster); "spikingjelly" always uses SpikingJelly's
            neurons; "scan" always ours. Spikes are identical (tests check it).
    """

    name = "spikingjelly"

    def __init__(self, kernel: str = "auto") -> None:
        if kernel not in ("auto", "spikingjelly", "scan"):
            raise ValueError(f"kernel must be 'auto', 'spikingjelly' or 'scan', got {kernel!r}")
        self.kernel = kernel
        self._starts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per node: its rounding start

    def make_neuron(self, initial_membrane: float) -> nn.Module:
        node = step_neuron(initial_membrane)
        node.step_mode = "m"
        return node

    def make_binary_neuron(self, bits: int, initial_membrane: float) -> nn.Module:
        return binary_few_spike_node(bits, initial_membrane)

    def neurons_of(self, converted: nn.Module) -> list[nn.Module]:
        """The spiking layers of a converted graph, in execution order (IF layers switched to multi-step
        mode; FewSpikeNodes stay single-step, so that calling the graph still gives the Q-values)."""
        found = [m for m in converted.modules() if isinstance(m, (neuron.IFNode, neuron.HalfThresholdIFNode, FewSpikeNode))]
        for node in found:
            if not isinstance(node, FewSpikeNode):
                node.step_mode = "m"
        return found

    def _scan(self, x: torch.Tensor) -> bool:
        return self.kernel == "scan" or self.kernel == "auto" and x.device.type == "cpu"

    def run(self, node: nn.Module, current: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._scan(current):
            spikes, v_final = if_scan(current, v, float(node.v_threshold))
            node.v = v_final
            return spikes, v_final
        node.v = v.clone()
        spikes = node(current)
        return spikes, node.v

    def scan_threshold(self, node: nn.Module, current: torch.Tensor) -> float | None:
        """The threshold where `run(node, current, v)` is `if_scan(current, v, threshold)` (the CPU scan), so
        that the simulation may fuse it with the count and the next synapses (`node.v` is then not
        written); else None."""
        return float(node.v_threshold) if self._scan(current) else None

    def binary_start(self, node: FewSpikeNode, v: torch.Tensor) -> float | None:
        """The rounding start where `fire_binary(node, v)` is `binary_coding.fire(v, node.K, start)`
        (the CPU scan), so that the simulation may fuse it with the next synapses; else None.
        Read from the node's tables once, then kept until they change (it runs once per layer and call)."""
        if not self._scan(v):
            return None
        key = (node.h.data_ptr(), node.h._version, node.theta.data_ptr(), node.theta._version)
        cached = self._starts.get(node)
        if cached is None or cached[0] != key:
            cached = self._starts[node] = (key, float(node.h[0]) - float(node.theta[0]))
        return cached[1]

    def fire_binary(self, node: FewSpikeNode, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Send gate `v` (least-significant-bit units, [B, ...]) as node.K spikes: spikes [K, B, ...] and
        the residual membrane (rounding start included, as `binary_coding.fire`)."""
        start = float(node.h[0]) - float(node.theta[0])
        if self._scan(v):
            return binary_coding.fire(v, node.K, start)
        # multi-step mode integrates the sum of its K inputs: the gate at step 0, then nothing
        sequence = torch.cat([v[None], v.new_zeros(node.K - 1, *v.shape)])
        spikes = node.multi_step_forward(sequence).ne(0).to(v.dtype)  # weighted spikes d_t * S_t -> S_t
        sent = torch.tensordot(node.h.to(v), spikes, dims=1)
        return spikes, v + start - sent
