#!/usr/bin/env bash
# Issue 5 on a GPU: the simulation-speed benchmark with --device cuda, once with SpikingJelly's default
# CUDA IF kernel and once with its Triton kernel (SJ_IF_CUDA_IMPLEMENTATION=triton). On CUDA the
# spikingjelly backend runs SpikingJelly's own multi-step kernel (adapters/spikingjelly.py, kernel="auto").
# Prepared for a session that is lent a GPU; sized to finish in ~6 minutes on one H100.
#   bash benchmarks/gpu_check.sh   # writes $OUT (the device runner's return folder) or runs/gpu:
#                                  # simulation_speed_{default,triton}.{md,json}
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RESULTS=${OUT:-runs/gpu}
mkdir -p "$RESULTS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" - <<'PY'
import torch, spikingjelly
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
try:
    import triton; print("triton", triton.__version__)
except ImportError:
    print("triton: not installed (the triton run below will fail or fall back)")
PY
# the default kernel: full grid, no env play (the ALE policy loop measures the CPU emulator, not the GPU)
timeout 240 "$PY" benchmarks/simulation_speed.py --device cuda --threads 16 --repeats 5 \
    --play-max-steps 0 --profile --out "$RESULTS/simulation_speed_default"
# SpikingJelly's Triton IF kernel
SJ_IF_CUDA_IMPLEMENTATION=triton timeout 240 "$PY" benchmarks/simulation_speed.py --device cuda --threads 16 \
    --repeats 5 --play-max-steps 0 --backends spikingjelly --no-naive --out "$RESULTS/simulation_speed_triton"
