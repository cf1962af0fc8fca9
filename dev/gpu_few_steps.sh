#!/usr/bin/env bash
# Issue 6's table on a GPU: benchmarks/few_steps.py with --device cuda, the six fixture games as six
# parallel processes (one GPU, 16 CPU cores for the emulators), each capped in time; then one pass
# over all games that only rebuilds the table from the saved cells. Sized for one 10-minute device call.
#
# As the device command, from the repo root, with carry [".whl", ".fixtures"] (.fixtures: copies of
# ../shared/fixtures/atari-dqn/*.qnet.pt, which does not travel):
#     bash dev/gpu_few_steps.sh
# Returns in $OUT: env.log, preflight.log, few_steps.{md,csv}, few_steps_cells.tgz (every cell, every log),
# simulation_speed_gpu_blocks.{md,json}.
set -uo pipefail
cd "$(dirname "$0")/.."
source dev/device_setup.sh
WORK=/tmp/few_steps
GAMES=${GAMES:-Breakout Pong Boxing Atlantis RoadRunner BeamRider}
ARGS=(--fixtures .fixtures --device "${DEVICE:-cuda}" --threads 2 --out "$WORK" ${FEW_STEPS_ARGS:-})
mkdir -p "$WORK"
# preflight: every option once at toy sizes, so a broken run stops here instead of six times over
timeout 120 "$PY" benchmarks/few_steps.py --games Breakout --T 4 --calibration 300 --test 100 --fit 100 --epochs 1 \
    --snn-epochs 1 --episodes 2 --max-steps 30 --reference-T 8 --fixtures .fixtures --device "${DEVICE:-cuda}" \
    --threads 2 --out /tmp/preflight > "$RESULTS/preflight.log" 2>&1 || { tail -25 "$RESULTS/preflight.log"; exit 1; }
for game in $GAMES; do
    timeout "${GAME_LIMIT:-430}" "$PY" benchmarks/few_steps.py --games "$game" "${ARGS[@]}" \
        > "$WORK/$game.log" 2>&1 &
done
wait
for game in $GAMES; do echo "== $game"; grep -v "ep/s\|it/s" "$WORK/$game.log" | tail -8; done
timeout 90 "$PY" benchmarks/few_steps.py --games "$(echo $GAMES | tr ' ' ,)" "${ARGS[@]}" > "$WORK/table.log" 2>&1 \
    || echo "table pass failed rc=$? (see table.log)"
cp "$WORK"/few_steps.md "$WORK"/few_steps.csv "$RESULTS"/ 2>/dev/null
tar -czf "$RESULTS/few_steps_cells.tgz" -C "$WORK" .
cat "$RESULTS/few_steps.md" 2>/dev/null
# and the simulation speed with GPU-sized time blocks (SpikingJelly backend only, no naive loop); SPEED=0 skips it
[ "${SPEED:-1}" = 1 ] && timeout 60 "$PY" benchmarks/simulation_speed.py --device "${DEVICE:-cuda}" --threads 16 --repeats 5 --play-max-steps 0 \
    --backends spikingjelly --no-naive --checkpoint .fixtures/BreakoutNoFrameskip-v4.qnet.pt \
    --out "$RESULTS/simulation_speed_gpu_blocks" ${SPEED_ARGS:-} > "$WORK/speed.log" 2>&1 || echo "speed run failed rc=$?"
ls -la "$RESULTS"
