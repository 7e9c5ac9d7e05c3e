#!/usr/bin/env bash
# The GPU figures, in one run on a CUDA machine (issue #11). Not measured yet: no GPU was lent while this was
# written. Run from the repository root with requirements.txt installed and the standard suite's base models in
# .cache/ (or let them build, a few minutes on the GPU machine's CPUs):
#
#   bash scripts/gpu_check.sh [OUT_DIR]        (default out/gpu_check; everything it measures is written there)
#
# 1. `python -m core perf --device cuda`: its CUDA section is ResNet-50 at 224 px under bf16 autocast
#    (CPT step ÷ plain step, evaluation throughput, peak memory), beside the CPU section.
# 2. A default repair on the standard-architecture suite (ResNet-18 part) on the GPU, and automatic strength
#    on both backends (local, and a local Ray instance whose tasks ask for the GPU).
# 3. A 10 000-image evaluation (the suite's evaluation images repeated to 10 000 rows) on both backends.
# Wall-clock seconds of each step go to $OUT/times.tsv; the commands' own outputs beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python - <<'EOF' | tee "$OUT/gpu.txt"
import torch
assert torch.cuda.is_available(), "no CUDA GPU on this machine: nothing to measure"
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
printf 'step\tseconds\n' > "$OUT/times.tsv"
timed() {  # timed NAME COMMAND...: run it, log its output, record its wall-clock seconds
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  "$@" > "$OUT/$name.log" 2>&1 || { echo "step $name failed; see $OUT/$name.log" >&2; tail -20 "$OUT/$name.log" >&2; exit 1; }
  awk -v n="$name" -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%s\t%.2f\n", n, b - a }' >> "$OUT/times.tsv"
  tail -3 "$OUT/$name.log"
}

# 1. perf, CUDA section (ResNet-50 @ 224 px, bf16), no CPU suites
timed perf python -m core perf --device cuda --suites none --out "$OUT/perf.json"

# 2. the standard suite's ResNet-18 part as files, plus a 10k-image evaluation set
WORK="$OUT/work"
python - "$WORK" <<'EOF'
import sys
from pathlib import Path

import numpy as np

from core.bench.photo_suite import CLASS_NAMES
from core.bench.standard_suite import build_standard
from core.formats.datasets import load_dataset, load_pixels, write_manifest_dataset

work = Path(sys.argv[1])
if not (work / "eval10k" / "manifest.csv").exists():
    paths = build_standard("standard-resnet18", work)
    ev = load_dataset(paths["eval"], CLASS_NAMES)
    pixels = load_pixels(ev, [3, 32, 32]).transpose(0, 2, 3, 1)
    rows = np.resize(np.arange(len(ev)), 10_000)  # the evaluation images, repeated to 10 000 rows
    labels = [CLASS_NAMES[i] for i in ev.labels[rows]]
    write_manifest_dataset(work / "eval10k", pixels[rows], labels, [ev.attributes[i] for i in rows])
print(f"suite files in {work}")
EOF
S="$WORK"
timed repair_default python -m core tune --model "$S/model" --counterexamples "$S/counterexamples" --eval "$S/eval" \
  --reference "$S/reference" --device cuda --out "$OUT/repair_default"
for backend in local ray; do
  timed "repair_auto_$backend" python -m core tune --model "$S/model" --counterexamples "$S/counterexamples" \
    --eval "$S/eval" --reference "$S/reference" --strength auto --device auto --backend "$backend" \
    --out "$OUT/repair_auto_$backend"
  timed "evaluate10k_$backend" python -m core evaluate --model "$S/model" --data "$S/eval10k" --device auto \
    --backend "$backend" --quiet --out "$OUT/evaluate10k_$backend.json"
done
cmp <(python -c "import json,sys; print(json.load(open(sys.argv[1]))['accuracy'])" "$OUT/evaluate10k_local.json") \
    <(python -c "import json,sys; print(json.load(open(sys.argv[1]))['accuracy'])" "$OUT/evaluate10k_ray.json") \
  && echo "10k evaluation: same accuracy on both backends" | tee -a "$OUT/gpu.txt"
tee -a "$OUT/gpu.txt" < "$OUT/times.tsv"
