#!/usr/bin/env bash
# The embedded-benchmark study reported in README "Results": the study's runs (resumable: finished
# runs are kept), its tables with paired 95% intervals, the mask-quality figures, and the notebooks
# re-executed on the results.
#   bash benchmarks/run_synthetic_suite.sh            # about 8 hours on 2 CPU cores (main: 75 min; main-6-epochs: about 2.5 h)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/synthetic}

OMP_NUM_THREADS=1 $PY benchmarks/run_study.py benchmarks/configs/synthetic_study.yaml --out "$OUT" --workers 2 --threads 1
$PY benchmarks/summarise.py "$OUT/main" --versus raw mrdc cim > "$OUT/main_paired.md"
$PY benchmarks/summarise.py "$OUT/main" --versus raw --key ncm_final_accuracy > "$OUT/main_ncm.md"
# the main comparison again at 6 epochs per experience (where both regime rules hold)
$PY benchmarks/summarise.py "$OUT/main-6-epochs" --versus raw mrdc cim > "$OUT/main-6-epochs_paired.md"
$PY benchmarks/summarise.py "$OUT/main-6-epochs" --versus raw mrdc --key ncm_final_accuracy > "$OUT/main-6-epochs_ncm.md"
$PY benchmarks/summarise.py "$OUT/main-6-epochs" "$OUT/main" --versus "masking (epochs=3)" "mrdc (epochs=3)" "raw (epochs=3)" "cim (epochs=3)" > "$OUT/main-6-vs-3-epochs_paired.md"
# the regime rule: raw with every training image in memory against joint, paired by seed
$PY benchmarks/summarise.py "$OUT/joint" "$OUT/raw-all-data" --versus joint > "$OUT/regime_paired.md"
$PY benchmarks/summarise.py "$OUT/joint-convergence" "$OUT/raw-all-data-6-epochs" --versus joint > "$OUT/regime_6_epochs_paired.md"
# an ablation paired with the main comparison's masking on the same seeds (the others alike, with
# the default's name in their table as --versus)
$PY benchmarks/summarise.py "$OUT/masking-text-mask" "$OUT"/main/masking_seed*.json --versus "masking (text_rule.mode=none)" > "$OUT/masking-text-mask_paired.md"
$PY benchmarks/summarise.py "$OUT/masking-jpeg-patches" "$OUT/main" --versus mrdc "masking (patch_jpeg_quality=None)" raw cim > "$OUT/masking-jpeg-patches_paired.md"
$PY benchmarks/summarise.py "$OUT/main-6-epochs-masking-jpeg-ratio-0.35" "$OUT/main-6-epochs" --versus mrdc "masking (image_rule.kind=threshold, image_rule.ratio=0.3, patch_jpeg_quality=None)" raw cim > "$OUT/main-6-epochs-masking-jpeg-ratio-0.35_paired.md"
$PY benchmarks/summarise.py "$OUT/masking-jpeg-patches-ratio-0.35" "$OUT/main" --versus mrdc "masking (image_rule.kind=threshold, image_rule.ratio=0.3, patch_jpeg_quality=None)" raw cim > "$OUT/masking-jpeg-patches-ratio-0.35_paired.md"
$PY benchmarks/summarise.py "$OUT/masking-ratio-0.35" "$OUT/main" --versus "masking (image_rule.kind=threshold, image_rule.ratio=0.3)" > "$OUT/masking-ratio-0.35_paired.md"
$PY benchmarks/summarise.py "$OUT/weight-aligning" "$OUT/main" --versus "raw (weight_aligning=False)" > "$OUT/weight-aligning_paired.md"
for group in "$OUT"/*/; do
  $PY benchmarks/summarise.py "$group" > "${group%/}.md"
done
$PY benchmarks/mask_quality.py --out "$OUT/mask_quality.json"
$PY benchmarks/execute_notebooks.py
