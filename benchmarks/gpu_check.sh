#!/usr/bin/env bash
# What the CPU suite cannot check, on one CUDA GPU, in under 15 minutes. Needs `pip install -e ".[verl]"`
# (verl[vllm]==0.9.1, vLLM 0.24.0) in the active environment; run from anywhere:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]
#
# 1. fake quantization on CUDA gives the CPU's bits (every format; fused rollout weights per packed slice);
# 2. noise on the device: CUDA weights, masters in pinned CPU memory, effective sigma through the GPU's
#    quantizer, bitwise restore; the per-step cost at Qwen2.5-1.5B's shapes (4 of its 28 layers, scaled);
# 3. a 2-step verl run of the tiny model (srdd train --preset smoke --engine verl --launch): the plugin in
#    verl's FSDP actor and vLLM workers, noise set after every weight sync, validation at the final step.
# Each stage stops the script on failure; OUT_DIR (default: a new temporary directory) keeps the run.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-$(mktemp -d)}"
python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device visible")'
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== 1/3 CUDA kernels against the CPU's bits"
timeout 150 python -m pytest -q -p no:cacheprovider tests/srdd/formats/test_cuda.py \
    "tests/rin_train/verl/test_plugin.py::test_fused_rollout_quantization_on_cuda_equals_the_cpu_bits"

echo "== 2/3 noise on the device"
timeout 150 python -m pytest -q -p no:cacheprovider \
    tests/rin_train/test_noise.py::test_noise_on_cuda_runs_on_the_device_and_restores_bitwise \
    "tests/rin_train/verl/test_plugin.py::test_rollout_noise_on_cuda_with_pinned_masters"
timeout 120 python benchmarks/rollout_noise_cost.py --device cuda --layers 4

echo "== 3/3 two verl steps of the tiny model -> $out/smoke"
timeout 420 python -m srdd train --preset smoke --engine verl --set grpo.steps=2 --set noise.num_stages=2 \
    --out "$out/smoke" --launch
python - "$out/smoke" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
info = json.loads((run / "run.json").read_text())
steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
noise = sorted((run / "verl" / "noise").glob("*.jsonl"))
print(f"run.json status {info['status']}; metrics steps {sorted({s['step'] for s in steps})}; "
      f"noise logs from {len(noise)} rollout worker(s)")
sys.exit(0 if info["status"] == "complete" and noise else f"verl run not complete: {info.get('reason')}")
PY
echo "gpu_check: all three stages passed"
