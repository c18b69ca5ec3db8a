#!/usr/bin/env bash
# The embedded-benchmark study reported in README: the main comparison at equal bytes (3 seeds)
# and the ablations of exemplar masking (3 seeds each). Results go to results/{main,ablation}.
#   bash benchmarks/run_synthetic_suite.sh            # about 40 minutes on 2 CPU cores
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-[0,1,2]}
CONFIG=benchmarks/configs/synthetic_main.yaml

$PY -m avalanche_exmask run $CONFIG --out results/main --set "seeds=$SEEDS"

ablate() {  # ablate NAME FIELD=VALUE...
  local name=$1; shift
  $PY -m avalanche_exmask run $CONFIG --out "results/ablation/$name" --set "methods=[masking]" "seeds=$SEEDS" "$@"
}
ablate black-background background_downsample=null
ablate black-skip-empty background_downsample=null skip_empty_patches=true
ablate augmentation p_fill=0.5 p_swap_text=0.5
ablate no-text-mask text_mode=none
ablate ratio-0.3 image_rule=ratio keep_ratio=0.3
ablate ratio-0.5 image_rule=ratio keep_ratio=0.5
ablate background-k4 background_downsample=4

$PY benchmarks/summarise.py results/main > results/main.md
$PY benchmarks/summarise.py results/ablation/* > results/ablation.md
cat results/main.md results/ablation.md
$PY benchmarks/mask_quality.py --out results/mask_quality.json
$PY benchmarks/overhead.py --out results/overhead.json
