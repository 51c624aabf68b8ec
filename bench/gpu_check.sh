#!/usr/bin/env bash
# GPU checks in one short script (issue 9): train each kind on CUDA, serve on the ONNX Runtime CUDA
# provider and on TorchScript CUDA, check parity with the CPU at 1e-4, and measure rows/s at 4,096 rows.
#   bash bench/gpu_check.sh [WORKDIR]        (needs a CUDA torch and onnxruntime-gpu in .venv)
# Exits non-zero on the first failure; prints one line per check.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${1:-$(mktemp -d)}
MODELS="$WORK/models"
export LATENTSERVE_THREADS=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$PY" -c "import torch, onnxruntime as o; assert torch.cuda.is_available(), 'torch sees no CUDA'; print('torch', torch.__version__, 'ort', o.__version__, o.get_available_providers())"
for kind in ae rae vae gan; do
  "$PY" -m latentserve train "$kind" --data digits --name "digits-$kind" --models "$MODELS" \
      --runs "$WORK/runs" --device cuda --epochs 5 --quiet
  echo "trained digits-$kind on cuda"
done
"$PY" - "$MODELS" <<'PY'
import sys, time
from pathlib import Path
import numpy as np
from sklearn.datasets import load_digits
from artifact.predictor import Predictor

models = Path(sys.argv[1])
x = np.resize(load_digits().data.astype(np.float32), (4096, 64))
for name in ("digits-ae", "digits-rae", "digits-vae", "digits-gan"):
    folder = models / name / "1"
    cpu = Predictor.open(folder, "onnx", "cpu")
    for runtime in ("onnx", "torchscript"):
        gpu = Predictor.open(folder, runtime, "cuda")
        assert gpu.provider in ("CUDAExecutionProvider", "torch-cuda"), gpu.provider
        a, b = cpu.anomaly_score(x).scores, gpu.anomaly_score(x).scores
        diff = float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(a))))
        assert diff <= 1e-4, f"{name} {runtime}: scores differ from the CPU's by {diff:.2g}"
        s = gpu.sample(n=256, seed=0) - cpu.sample(n=256, seed=0)
        assert float(np.max(np.abs(s))) <= 1e-3 * max(1.0, float(np.abs(cpu.sample(n=256, seed=0)).max()))
        rates = {}
        for who, p in (("cpu", cpu), ("gpu", gpu)):
            p.anomaly_score(x)
            start = time.perf_counter()
            for _ in range(5):
                p.anomaly_score(x)
            rates[who] = 5 * len(x) / (time.perf_counter() - start)
        print(f"{name} {runtime} cuda: parity {diff:.1e}; anomaly-score at 4096 rows: "
              f"{rates['gpu']:,.0f} rows/s on {gpu.provider} vs {rates['cpu']:,.0f} on CPU ({rates['gpu'] / rates['cpu']:.1f}x)")
PY
echo "gpu checks passed"
