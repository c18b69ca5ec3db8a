#!/usr/bin/env bash
# Table 1 and its curves at 128 px with 16-pixel patches on photographic backgrounds
# (benchmarks/configs/table1_128.yaml, issue 23): the driver of table1_faithful.yaml on that study, its
# own package-default rows (main) and composed variant run in seed pairs beside the paper presets.
# Needs the shipped exmask-tiny-128 `real` weights. Resumable, like the 64 px driver.
#   bash benchmarks/run_table1_128.sh
#   SUMMARISE_ONLY=1 bash benchmarks/run_table1_128.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export STUDY=benchmarks/configs/table1_128.yaml OUT=${OUT:-results/synthetic-128}
export DEFAULT_GROUPS="main masking-jpeg-patches-ratio-0.35"
# the package defaults were settled at 64 px: the curves (which policy at which budget) come before the protocol groups
export CURVES_FIRST=1
exec bash benchmarks/run_table1_faithful.sh
