#!/usr/bin/env bash
# Every GPU figure of docs/BENCHMARKS.md "Performance", in one run on a CUDA machine. Run from the repository root with
# requirements.txt installed:
#
#   bash scripts/gpu_check.sh [OUT_DIR]        (default out/gpu_check; everything it measures is written there)
#
# 1. `python -m core perf --device cuda --suites none`: its CUDA section is ResNet-50 at 224 px, bf16 autocast, batch
#    32: CPT step ÷ plain step (and the δ form's), the anchored step ÷ a plain step on as many images, peak memory
#    (torch.cuda.max_memory_allocated) of both, evaluation and evaluation streamed from disk ÷ a bare loop.
# 2. scripts/gpu_resnet50.py setup: a biased ResNet-50 at 224 px trained here from scratch on the shipped photos
#    (bf16, about a minute), the photo suite's 16 counterexamples and reference images, a 10 000-image evaluation.
# 3. On it, each under scripts/gpu_resnet50.py peak (wall clock and peak GPU memory of the whole command): a default
#    repair, a repair with automatic strength (GPU_CHECK_AUTO=0 skips it, the longest step), and the evaluation alone.
#    Each run folder's metrics.json has the tuning alone (seconds) beside the whole command.
# 4. With GPU_CHECK_STANDARD=1, the measurements of 2026-11-30: the standard suite's ResNet-18 (trained on one CPU
#    thread first, about 3 minutes, unless its cache is carried) and MobileNet repairs, auto and a 10 000-image
#    evaluation on both backends (local, and a local Ray instance whose tasks ask for the GPU).
# 5. With GPU_CHECK_SCALE=1, `python -m core perf --scale` on this machine's CPUs (Ray with 2 CPUs vs local).
# Estimated on an H100: perf 2–3 min, setup 1–2 min, default repair 1–2 min, auto 3–6 min. Wall-clock seconds of each
# step go to $OUT/times.tsv, the commands' own outputs beside it, and summary.txt gathers the figures. A step that
# fails is recorded and the next still runs. GPU_CHECK_SMOKE=1 runs every step on the CPU, small (ResNet-50 at 64 px
# on 64 photos, 200 evaluation rows, a few steps): it checks the script itself; its figures mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [[ ${GPU_CHECK_SMOKE:-0} == 1 ]]; then
  DEV=cpu; STEPS=(--max-steps 3 --min-steps 1); PERF=(--repeats 1 --steps 1 --eval-images 64 --gpu-size 64)
  ROWS=200; R50=(--size 64 --epochs 1 --train-limit 64 --device cpu)
else
  DEV=cuda; STEPS=(); PERF=(); ROWS=10000; R50=(--device cuda)
fi
python3 - "$DEV" <<'EOF' | tee "$OUT/summary.txt"
import platform
import sys

import torch

if sys.argv[1] == "cuda":
    assert torch.cuda.is_available(), "no CUDA GPU on this machine: nothing to measure"
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
else:
    print(f"SMOKE RUN on the CPU (figures mean nothing): torch {torch.__version__}")
print(f"Python {platform.python_version()}, {torch.get_num_threads()} torch threads")
EOF
printf 'step\tseconds\n' > "$OUT/times.tsv"
FAILED=()
timed() {  # timed NAME COMMAND...: run it, log its output, record its wall-clock seconds
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  echo "== $name: $*"
  if ! "$@" > "$OUT/$name.log" 2>&1; then  # recorded, and the next steps still run (one call on a lent GPU)
    echo "step $name FAILED; the end of $OUT/$name.log:" | tee -a "$OUT/summary.txt" >&2
    tail -30 "$OUT/$name.log" | tee -a "$OUT/summary.txt" >&2
    FAILED+=("$name")
    return 0
  fi
  awk -v n="$name" -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%s\t%.2f\n", n, b - a }' | tee -a "$OUT/times.tsv"
}

# 1. perf, CUDA section (ResNet-50 @ 224 px, bf16, batch 32) beside the CPU one, no CPU suites
timed perf python3 -m core perf --device "$DEV" --suites none "${PERF[@]}" --out "$OUT/perf.json"

# 2.–3. ResNet-50 at 224 px: 16 counterexamples, a 10k-image evaluation; default repair, auto, evaluation alone
R=$OUT/work_r50
timed setup_r50 python3 scripts/gpu_resnet50.py setup "$R" --rows "$ROWS" "${R50[@]}"
RSET=(--model "$R/model_r50" --counterexamples "$R/photo/counterexamples" --eval "$R/eval10k" --reference "$R/reference")
timed repair_default_r50 python3 scripts/gpu_resnet50.py peak "$OUT/repair_default_r50.peak.json" -- repair \
  "${RSET[@]}" "${STEPS[@]}" --quiet --device "$DEV" --out "$OUT/repair_default_r50"
if [[ ${GPU_CHECK_AUTO:-1} == 1 ]]; then
  timed repair_auto_r50 python3 scripts/gpu_resnet50.py peak "$OUT/repair_auto_r50.peak.json" -- repair \
    "${RSET[@]}" "${STEPS[@]}" --strength auto --quiet --device "$DEV" --out "$OUT/repair_auto_r50"
fi
timed evaluate10k_r50 python3 scripts/gpu_resnet50.py peak "$OUT/evaluate10k_r50.peak.json" -- evaluate \
  --model "$R/model_r50" --data "$R/eval10k" --device "$DEV" --quiet --out "$OUT/evaluate10k_r50.json"

if [[ ${GPU_CHECK_STANDARD:-0} == 1 ]]; then
# 4. the standard suite's ResNet-18 part as files, plus a 10k-image evaluation set
WORK="$OUT/work"
timed suite python3 - "$WORK" "$ROWS" <<'EOF'
import sys
from pathlib import Path

import numpy as np

from core.bench.photo_suite import CLASS_NAMES
from core.bench.standard_suite import build_standard
from core.formats.datasets import load_dataset, load_pixels, write_manifest_dataset

work, rows = Path(sys.argv[1]), int(sys.argv[2])
if not (work / "eval10k" / "manifest.csv").exists():
    paths = build_standard("standard-resnet18", work)
    ev = load_dataset(paths["eval"], CLASS_NAMES)
    pixels = load_pixels(ev, [3, 32, 32]).transpose(0, 2, 3, 1)
    order = np.resize(np.arange(len(ev)), rows)  # the evaluation images, repeated to `rows` rows
    labels, attributes = ev.labels, ev.attributes
    names = [CLASS_NAMES[i] for i in labels[order]]
    write_manifest_dataset(work / "eval10k", pixels[order], names, [attributes[i] for i in order])
print(f"suite files in {work}")
EOF
S="$WORK"
SET=(--model "$S/model" --counterexamples "$S/counterexamples" --eval "$S/eval" --reference "$S/reference" --quiet)
timed repair_default python3 -m core repair "${SET[@]}" "${STEPS[@]}" --device "$DEV" --out "$OUT/repair_default"
for backend in local ray; do
  timed "repair_auto_$backend" python3 -m core repair "${SET[@]}" "${STEPS[@]}" --strength auto --device "$DEV" \
    --backend "$backend" --out "$OUT/repair_auto_$backend"
  timed "evaluate10k_$backend" python3 -m core evaluate --model "$S/model" --data "$S/eval10k" --device "$DEV" \
    --backend "$backend" --quiet --out "$OUT/evaluate10k_$backend.json"
done

# the standard suite's other part (MobileNet v3 small, digits): a default repair on the same device
timed suite_mobilenet python3 -c "import sys; from core.bench.standard_suite import build_standard; \
build_standard('standard-mobilenet', sys.argv[1])" "$OUT/work_mobilenet"
M="$OUT/work_mobilenet"
timed repair_default_mobilenet python3 -m core repair --model "$M/model" --counterexamples "$M/counterexamples" \
  --eval "$M/eval" --reference "$M/reference" --quiet "${STEPS[@]}" --device "$DEV" --out "$OUT/repair_default_mobilenet"

fi

python3 scripts/gpu_check_summary.py "$OUT" | tee -a "$OUT/summary.txt" || FAILED+=(summary)

if [[ ${GPU_CHECK_SCALE:-0} == 1 ]]; then
  timed scale python3 -m core perf --scale --suites none --repeats 1 --steps 1 --eval-images 64 --device cpu \
    --out "$OUT/scale.json"
  grep -A12 "## scale" "$OUT/scale.log" | tee -a "$OUT/summary.txt" || true
fi
tee -a "$OUT/summary.txt" < "$OUT/times.tsv"
if ((${#FAILED[@]})); then
  echo "failed steps: ${FAILED[*]}" | tee -a "$OUT/summary.txt" >&2
  exit 1
fi
