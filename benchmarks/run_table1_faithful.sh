#!/usr/bin/env bash
# Table 1 at the papers' operating points (benchmarks/configs/table1_faithful.yaml; docs/table1-faithful.md),
# then its paired tables. Resumable: a run whose results file exists is skipped. Seeds run in pairs
# across the paper presets, so an interrupted study leaves complete, paired seeds; then the protocol
# groups, the operating-point curves and paper-masking's ingredients.
#   bash benchmarks/run_table1_faithful.sh            # about 7 hours on 2 CPU cores (109 runs at 3 epochs)
#   SUMMARISE_ONLY=1 bash benchmarks/run_table1_faithful.sh
# STUDY, OUT and DEFAULT_GROUPS (groups run in seed pairs beside the presets: a study that carries its
# own `main`) select another study of the same groups: benchmarks/run_table1_128.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/synthetic}
STUDY=${STUDY:-benchmarks/configs/table1_faithful.yaml}
PRESETS="paper-masking paper-mrdc paper-cim paper-mrdc-own-rule"
DEFAULT_GROUPS=${DEFAULT_GROUPS:-}
run() { OMP_NUM_THREADS=1 $PY benchmarks/run_study.py "$STUDY" --out "$OUT" --workers "${WORKERS:-2}" --threads 1 --checkpoint "$@"; }

if [ "${SUMMARISE_ONLY:-0}" != 1 ]; then
  for seeds in "0 1" "2 3" "4"; do
    # shellcheck disable=SC2086
    run --only $DEFAULT_GROUPS $PRESETS --seeds $seeds
  done
  # protocol groups (they settle the package defaults), each in seed pairs so that a stop leaves complete,
  # paired seeds; raw at today's code and the operating-point curves (seeds 0-1 of every point before
  # seed 2); protocol groups first unless CURVES_FIRST=1 (a study whose defaults are settled elsewhere);
  # then paper-masking's ingredients, in seed pairs
  protocol() {
    for groups in "current-as-they-are" "paper-masking-pretrained-scores paper-masking-replay-per-class"; do
      for seeds in "0 1" "2 3" "4"; do
        # shellcheck disable=SC2086
        run --only $groups --seeds $seeds
      done
    done
  }
  curves() {
    local groups
    groups=$(grep -o 'name: curve-[^ ,}]*' "$STUDY" | cut -d' ' -f2)
    # shellcheck disable=SC2086
    run --only paper-raw-check $groups --seeds 0 1
    # shellcheck disable=SC2086
    run --only paper-raw-check $groups --seeds 2 3 4
  }
  if [ "${CURVES_FIRST:-0}" = 1 ]; then curves; protocol; else protocol; curves; fi
  for seeds in "0 1" "2 3" "4"; do
    run --only paper-masking-current-through-codec paper-masking-no-text-mask paper-masking-mean-colour-background \
      paper-masking-no-augmentation --seeds $seeds
  done
fi
S="$PY benchmarks/summarise.py"
present() { for group in "$@"; do [ -d "$OUT/$group" ] && echo "$OUT/$group"; done; }
# Table 1: every pair of the paper presets, with two raw rows: main's (an older commit, current data through
# the identity codec) and paper-raw-check's (today's code, current data as they are; bit-identical to the
# other setting on a tiny run, so what differs is the commit)
# shellcheck disable=SC2046
$S $(present $PRESETS paper-raw-check) "$OUT"/main/raw_seed*.json \
  --versus "$OUT"/main/raw_seed0.json $(present $PRESETS paper-raw-check) > "$OUT/table1-paper-presets_paired.md"
# each paper preset against the package default of its policy (main) and the composed variant
for policy in masking mrdc cim; do
  $S $(present paper-$policy) "$OUT"/main/${policy}_seed*.json --versus "$OUT"/main/${policy}_seed0.json > "$OUT/table1-paper-$policy-vs-default_paired.md"
done
$S "$OUT/paper-masking" "$OUT/masking-jpeg-patches-ratio-0.35" --versus "$OUT/masking-jpeg-patches-ratio-0.35" > "$OUT/table1-paper-masking-vs-composed_paired.md"
# a study that carries its own `main`: the package defaults' Table 1 in its regime (every pair of raw,
# MRDC, CIM, masking and the composed variant), so that "who leads" is read within that regime
if [[ " $DEFAULT_GROUPS " == *" main "* ]]; then
  $S "$OUT"/main/{raw,mrdc,cim,masking}_seed*.json "$OUT/masking-jpeg-patches-ratio-0.35" \
    --versus "$OUT"/main/{raw,mrdc,cim,masking}_seed0.json > "$OUT/table1-defaults_paired.md"
  # MRDC's own rule (papers' protocol) beside the defaults' leaders: MRDC q50 and the composed variant
  [ -n "$(ls "$OUT/paper-mrdc-own-rule"/*.json 2>/dev/null)" ] && $S "$OUT/paper-mrdc-own-rule" "$OUT"/main/mrdc_seed*.json \
    "$OUT/masking-jpeg-patches-ratio-0.35" --versus "$OUT/paper-mrdc-own-rule" > "$OUT/own-rule-vs-defaults_paired.md"
fi
# protocol: current data as they are (current-as-they-are) against through the codec (main), per policy
if [ -d "$OUT/current-as-they-are" ]; then
  $S "$OUT/current-as-they-are" "$OUT"/main/{masking,mrdc,cim}_seed*.json --versus "$OUT"/main/{masking,mrdc,cim}_seed0.json > "$OUT/current-as-they-are_paired.md"
  # the three policies against each other, all with current data as they are (the papers' protocol)
  $S "$OUT/current-as-they-are" --versus "$OUT"/current-as-they-are/{mrdc,cim}_seed0.json > "$OUT/current-as-they-are-policies_paired.md"
fi
# paper-masking's ingredients and protocol options, each against paper-masking
for group in current-through-codec no-text-mask mean-colour-background no-augmentation pretrained-scores replay-per-class; do
  [ -n "$(ls "$OUT/paper-masking-$group"/*.json 2>/dev/null)" ] && $S "$OUT/paper-masking-$group" "$OUT/paper-masking" --versus "$OUT/paper-masking" > "$OUT/paper-masking-$group"_paired.md
done
for group in $PRESETS current-as-they-are paper-raw-check $(cd "$OUT" && ls -d paper-masking-* curve-* 2>/dev/null | grep -v '\.md$'); do
  [ -n "$(ls "$OUT/$group"/*.json 2>/dev/null)" ] && $S "$OUT/$group" > "$OUT/$group.md"
done
exit 0
