#!/usr/bin/env bash
# Table 1 at 224 px with ViT-B/16's geometry and random weights (benchmarks/configs/table1_224_vitb16.yaml)
# on a GPU machine: the groups in seed order, each run_study call under a timeout, then the paired
# tables (benchmarks/summarise.py) and a figure (benchmarks/plot_study.py), all under $OUT.
# Resumable: finished runs are skipped, interrupted ones resume from their last experience.
#   bash benchmarks/run_224_vitb16.sh                       # seeds 0 1 (a pilot), DEVICE=cuda
#   SEEDS="0 1 2 3 4" CALL_TIMEOUT=3000 bash benchmarks/run_224_vitb16.sh
# Settings (environment): PY, OUT (results/vitb16-224), DEVICE (cuda), SEEDS ("0 1"), THREADS (8),
# CALL_TIMEOUT (seconds per run_study call, 540), GROUPS_RUN (the groups), SET (more `--set` overrides; the CPU smoke test gives a
# tiny slice and a tiny model).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/vitb16-224}
STUDY=${STUDY:-benchmarks/configs/table1_224_vitb16.yaml}
GROUPS_RUN=${GROUPS_RUN:-"main masking-jpeg-patches-ratio-0.35 paper-masking paper-mrdc paper-cim"}
failed=0
for seed in ${SEEDS:-0 1}; do
  # shellcheck disable=SC2086
  timeout "${CALL_TIMEOUT:-540}" "$PY" benchmarks/run_study.py "$STUDY" --out "$OUT" --only $GROUPS_RUN \
    --seeds "$seed" --workers 1 --threads "${THREADS:-8}" --checkpoint --set device="${DEVICE:-cuda}" ${SET:-} \
    || { echo "seed $seed: run_study ended with status $? (timeout: 124)" >&2; failed=1; }
done
present() { for group in "$@"; do [ -d "$OUT/$group" ] && echo "$OUT/$group"; done; }
# shellcheck disable=SC2046
"$PY" benchmarks/summarise.py $(present $GROUPS_RUN) --versus $(present main) > "$OUT/table1-224_paired.md" || failed=1
"$PY" benchmarks/plot_study.py "$OUT" --out "$OUT/final_accuracy.png" || failed=1
exit $failed
