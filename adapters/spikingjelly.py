"""SpikingJelly adapter: our normalisation as an `ann2snn` recipe, and SpikingJelly's IF neurons.

`RobustNormRecipe` plugs into SpikingJelly's fixed converter template:

    from spikingjelly.activation_based import ann2snn, functional
    from dqn2snn_plugin.adapters.spikingjelly import RobustNormRecipe
    snn = ann2snn.Converter(recipe=RobustNormRecipe(states, percentile=99.9)).convert(q_network)

It reuses `RateCodingRecipe`'s graph surgery (ReLU -> scaler(1/lambda), IFNode, scaler(lambda)) and
replaces only its calibration: SpikingJelly ranks each batch and blends the results with momentum, so
the first batch dominates; we rank the whole calibration set at once (`normalization.layer_scales`).
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # SpikingJelly's calibration bar is meaningless for our recipe

import torch  # noqa: E402
from spikingjelly.activation_based import neuron  # noqa: E402
from spikingjelly.activation_based.ann2snn import RateCodingRecipe  # noqa: E402
from spikingjelly.activation_based.ann2snn.modules import VoltageHook  # noqa: E402
from spikingjelly.activation_based.ann2snn.recipes.rate_coding import ChannelVoltageHook  # noqa: E402
from torch import fx, nn  # noqa: E402

from dqn2snn_plugin.normalization import LayerScales, Rank, check_network, check_percentile, layer_scales  # noqa: E402
from dqn2snn_plugin.spiking import if_scan  # noqa: E402


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
        if self.scales is None:
            data = self.dataloader[0]
            data = torch.cat(list(data)) if isinstance(data, (list, tuple)) else torch.as_tensor(data)
            self.scales = layer_scales(
                self._ann, data.float().to(converter.device), self.percentile,
                rank=self.rank, channel_wise=self.channel_wise,
            )
        hooks = [m for m in fx_model.modules() if isinstance(m, (VoltageHook, ChannelVoltageHook))]
        if len(hooks) != len(self.scales.hidden):
            raise ValueError(f"{len(hooks)} ReLU layers in the graph but {len(self.scales.hidden)} scales")
        for hook, scale in zip(hooks, self.scales.hidden):
            hook.scale = scale.to(converter.device).clone()
        return fx_model


class SpikingJellyBackend:
    """Runs SpikingJelly IF neurons (soft reset) in multi-step mode with explicit initial membranes.

    Args:
        kernel: "auto" runs SpikingJelly's own multi-step kernel on GPU (Triton when
            `SJ_IF_CUDA_IMPLEMENTATION=triton`) and our inference scan (`spiking.if_scan`, the same
            equations without the copies kept for training) on CPU; "spikingjelly" always uses
            SpikingJelly's kernel; "scan" always ours. Spikes are identical (a test checks it).
    """

    name = "spikingjelly"

    def __init__(self, kernel: str = "auto") -> None:
        if kernel not in ("auto", "spikingjelly", "scan"):
            raise ValueError(f"kernel must be 'auto', 'spikingjelly' or 'scan', got {kernel!r}")
        self.kernel = kernel

    def make_neuron(self, initial_membrane: float) -> nn.Module:
        if initial_membrane == 0.5:
            return neuron.HalfThresholdIFNode(step_mode="m")
        return neuron.IFNode(v_reset=None, step_mode="m")

    def neurons_of(self, converted: nn.Module) -> list[nn.Module]:
        """The IF layers of a converted graph, in execution order, switched to multi-step mode."""
        found = [m for m in converted.modules() if isinstance(m, (neuron.IFNode, neuron.HalfThresholdIFNode))]
        for node in found:
            node.step_mode = "m"
        return found

    def run(self, node: nn.Module, current: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kernel == "scan" or self.kernel == "auto" and current.device.type == "cpu":
            spikes, v_final = if_scan(current, v, float(node.v_threshold))
            node.v = v_final
            return spikes, v_final
        node.v = v.clone()
        spikes = node(current)
        return spikes, node.v
