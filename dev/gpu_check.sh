#!/usr/bin/env bash
# Issue 5 on a GPU: the simulation-speed benchmark with --device cuda on the packaged Breakout fixture
# (dqn2snn_plugin/data/BreakoutNoFrameskip-v4.qnet.pt), once with SpikingJelly's default CUDA IF kernel
# and once with its Triton kernel (SJ_IF_CUDA_IMPLEMENTATION=triton). On CUDA the spikingjelly backend
# runs SpikingJelly's own multi-step kernel (dqn2snn_plugin/adapters/spikingjelly.py, kernel="auto"). The states are
# collected by the DQN playing Breakout through ale-py (CPU); no env-play timing (--play-max-steps 0).
# About 90 s on one H100 (measured 2026-11-27; results in docs/notebook/2026-11-27-simulation-speed-gpu.md).
#
# As the device command, from the repo root, with carry [".whl"] (see dev/device_setup.sh):
#     bash dev/gpu_check.sh
# Writes to $OUT (the device runner's return folder; else runs/gpu), 7 files:
#     env.log, simulation_speed_{default,triton}.{md,json,log}
# One failing run does not stop the other. Local smoke test on CPU (tiny sizes):
#     GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 OUT=/tmp/gpucheck bash dev/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source dev/device_setup.sh
DEVICE=${GPU_CHECK_DEVICE:-cuda}
CKPT=dqn2snn_plugin/data/BreakoutNoFrameskip-v4.qnet.pt
QUICK=()
[ "${GPU_CHECK_QUICK:-0}" = 1 ] && QUICK=(--T 8 --batch 1 --repeats 1 --states 300 --threads 2
                                         --profile-T 8 --profile-batch 1)

# the default kernel: full grid, no env play (the ALE policy loop measures the CPU emulator, not the GPU)
timeout 240 "$PY" benchmarks/simulation_speed.py --device "$DEVICE" --threads 16 --repeats 5 \
    --play-max-steps 0 --profile --checkpoint "$CKPT" --out "$RESULTS/simulation_speed_default" "${QUICK[@]}" \
    2>&1 | tee "$RESULTS/simulation_speed_default.log" || echo "default-kernel run failed rc=$?"
# SpikingJelly's Triton IF kernel
SJ_IF_CUDA_IMPLEMENTATION=triton timeout 150 "$PY" benchmarks/simulation_speed.py --device "$DEVICE" \
    --threads 16 --repeats 5 --play-max-steps 0 --backends spikingjelly --no-naive --checkpoint "$CKPT" \
    --out "$RESULTS/simulation_speed_triton" "${QUICK[@]}" \
    2>&1 | tee "$RESULTS/simulation_speed_triton.log" || echo "triton-kernel run failed rc=$?"
ls -la "$RESULTS"
