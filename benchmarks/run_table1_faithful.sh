#!/usr/bin/env bash
# Table 1 at the papers' operating points (benchmarks/configs/table1_faithful.yaml), then its paired
# tables. Resumable: a run whose results file exists is skipped. Seeds run in pairs across the three
# paper presets, so an interrupted study leaves complete, paired seeds.
#   bash benchmarks/run_table1_faithful.sh        # about 2.5 hours on 2 CPU cores (3 presets x 5 seeds, then the protocol group)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/synthetic}
STUDY=benchmarks/configs/table1_faithful.yaml
run() { OMP_NUM_THREADS=1 $PY benchmarks/run_study.py "$STUDY" --out "$OUT" --workers 2 --threads 1 "$@"; }

if [ "${SUMMARISE_ONLY:-0}" != 1 ]; then
  for seeds in "0 1" "2 3" "4"; do
    # shellcheck disable=SC2086
    run --only paper-masking paper-mrdc paper-cim --seeds $seeds
  done
  run --only paper-raw-check current-as-they-are
fi
# Table 1: the paper presets, every pair (raw is the same run in main and here)
$PY benchmarks/summarise.py "$OUT/paper-masking" "$OUT/paper-mrdc" "$OUT/paper-cim" "$OUT"/main/raw_seed*.json \
  --versus raw "mrdc (chroma_subsampling=4:4:4, current_through_codec=0.0, quality=97)" \
  "cim (current_through_codec=0.0, pixels_once=True, saliency=class_activation)" > "$OUT/table1-paper-presets_paired.md"
# each paper preset against the package default of its policy, and the composed variant
$PY benchmarks/summarise.py "$OUT/paper-masking" "$OUT/paper-mrdc" "$OUT/paper-cim" "$OUT/main" "$OUT/masking-jpeg-patches-ratio-0.35" \
  --versus "masking (augmentation.p_fill=0.0, augmentation.p_swap_text=0.0, augmentation.p_token_mix=0.0, background_downsample=patch, current_through_codec=1.0, skip_empty_patches=False, text_rule.class_source=names, text_rule.mode=none)" \
  > "$OUT/table1-paper-vs-defaults_paired.md" || true
for group in paper-masking paper-mrdc paper-cim current-as-they-are paper-raw-check; do
  [ -d "$OUT/$group" ] && $PY benchmarks/summarise.py "$OUT/$group" > "$OUT/$group.md"
done
