#!/usr/bin/env bash
# GPU figures for issue 11 in one short run (about 5 minutes on one GPU): latency ratios per width
# and the LIIF-EDSR-baseline fine-tune step (anysr bench --finetune-step), then grouped vs masked
# mixed-width path per batch shape.  Results go to $OUT (default ./gpu_results).
#   bash examples/gpu_check.sh
set -euo pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
python -c 'import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0))' | tee "$OUT/device.txt"
# run from the checkout: anysr_plugin.adapters is the top-level adapters/ (pyproject maps it; link it here)
[ -e anysr_plugin/adapters ] || ln -s ../adapters anysr_plugin/adapters
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python -m anysr_plugin bench --device cuda --model liif-edsr-baseline --lr-size 48x48 --batch 16 --scales 2 3 4 --repeats 50 \
    --finetune-step --step-repeats 10 --step-memory-steps 3 --json "$OUT/bench_cuda.json" 2>&1 | tee "$OUT/bench_cuda.md"
python examples/mixed_path_choice.py --device cuda --sizes 48 96 --batches 4 16 --repeats 20 --out "$OUT/mixed_path_choice" \
    2>&1 | tail -12
