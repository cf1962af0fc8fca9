# Sourced by the gpu_*.sh scripts: pick the Python and, on the device machine (no .venv there, no
# internet), install the wheels carried in .whl/ (spikingjelly, snntorch, ale-py, gymnasium,
# farama-notifications, stable-baselines3, loguru; cp312 manylinux x86_64; the machine has torch,
# triton, numpy, tqdm) into /tmp/site and copy this working tree's package (dqn2snn_plugin/, its
# adapters included) over them, so the code that runs is the tree's.
# Sets PY, RESULTS ($OUT, the device runner's return folder, else runs/gpu) and DQN2SNN_CACHE.
RESULTS=${OUT:-runs/gpu}
mkdir -p "$RESULTS"
if [ -x .venv/bin/python ]; then
    PY=${PY:-.venv/bin/python}
else
    PY=${PY:-python3}
    if [ -d .whl ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl || { echo "wheel install failed"; exit 1; }
        rm -rf /tmp/site/dqn2snn_plugin
        cp -r dqn2snn_plugin /tmp/site/ || exit 1
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
fi
export DQN2SNN_CACHE=${DQN2SNN_CACHE:-/tmp/d2s-cache}
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    (cd / && "$PY" - <<'PY'
import sys
from importlib.metadata import version
import torch
print("python", sys.version.split()[0])
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
for name in ("spikingjelly", "snntorch", "ale-py", "gymnasium"):
    print(name, version(name))
import dqn2snn_plugin.adapters.spikingjelly as a; print("dqn2snn_plugin from", a.__file__)
PY
    )
} 2>&1 | tee "$RESULTS/env.log"
