#!/usr/bin/env bash
# The GPU checks, as one call on a lent GPU machine (about 9 minutes), each part under its own timeout so
# that one failure leaves the others' results:
#   A. benchmarks/overhead.py on ViT-B/16 at 224 px (random weights, fp32): step time per method relative to
#      raw replay, masking + selection against training time, token-dropping replay against the attention-
#      masked and the full-image step, the current-data pass's parts, decode rates (issue 25, item 4);
#   B. benchmarks/scale.py in bf16, batch 32, 4 and 8 loader workers: per-stage rates, GPU memory, data wait
#      (its 2026-12-04 run used scale.py's default batch of 4);
#   C. a pilot of the 224 px Table 1 (benchmarks/run_224_vitb16.sh) on a slice: 12 classes in 3
#      experiences, 40 training images a class, 1 epoch, seed 0 (issue 23, item 5). A pilot: no verdict.
# Everything lands in $OUT (logs in device-log.txt; the pilot's folder as study-224-pilot.tar.gz).
#   OUT=results/device bash benchmarks/run_device_checks.sh
# The wheels for a machine with torch but without this package's other dependencies (Python 3.12; the H200
# image of 2026-12 lacked these), fetched where pip works, then carried in .whl/ (ignored by git):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl avalanche-lib==0.6.0 dill gdown \
#     pytorchcv qpsolvers open_clip_torch ftfy wcwidth tensordict pyvers pydantic pydantic_core annotated_types \
#     typing_inspection beautifulsoup4 soupsieve platformdirs && pip wheel --no-deps -w .whl GPUtil==1.4.0
# (pydantic and pydantic_core at the versions that match; about 8 MB in all.)
# Settings (environment): PY (python3), OUT (results/device), LIMIT (seconds for all parts, 540), DEVICE (cuda),
# WHEELS (.whl: where the machine lacks this package's dependencies, the wheels there are installed to /tmp/site
# first), and for a CPU rehearsal on a tiny slice: OVERHEAD_ARGS, SCALE_ARGS, PILOT_SET, PILOT_GROUPS (each replaces its
# part's sizes; tests/test_run_device_checks.py).
#   DEVICE=cpu WHEELS=none OVERHEAD_ARGS="--geometries 64 --epochs 1 --drop-steps 1 --methods raw masking" \
#   SCALE_ARGS=skip PILOT_SET="model.name=exmask-tiny model.pretrained=synthetic benchmark.args.n_classes=2" bash benchmarks/run_device_checks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-results/device}
LIMIT=${LIMIT:-540}
DEVICE=${DEVICE:-cuda}
WHEELS=${WHEELS:-.whl}
START=$(date +%s)
mkdir -p "$OUT"
LOG="$OUT/device-log.txt"
left() { echo $((LIMIT - ($(date +%s) - START))); }
part() {  # part NAME SECONDS COMMAND...: run COMMAND under a timeout, its output in the log
  local name=$1 seconds=$2
  shift 2
  echo "=== $name: up to ${seconds} s, $(left) s left" | tee -a "$LOG"
  local t0
  t0=$(date +%s)
  timeout "$seconds" "$@" >>"$LOG" 2>&1
  local status=$?
  echo "=== $name: status $status (124: timeout) after $(($(date +%s) - t0)) s" | tee -a "$LOG"
}
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl >>"$LOG" 2>&1
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
# Avalanche imports wandb at module level (its confusion-matrix metric, not used here); where the machine has no
# wandb, an empty stand-in module lets Avalanche import (wandb's own wheel needs OpenTelemetry and more)
if ! "$PY" -c "import wandb" >/dev/null 2>&1; then
  mkdir -p /tmp/site/wandb && echo "# stand-in for wandb, which this machine lacks (benchmarks/run_device_checks.sh)" >/tmp/site/wandb/__init__.py
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$LOG" 2>&1
part imports 60 "$PY" -c "import torch, avalanche, open_clip, tensordict, avalanche_exmask.experiment; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"

# shellcheck disable=SC2086
part overhead 200 "$PY" benchmarks/overhead.py --device "$DEVICE" --threads 4 --workers 4 \
  ${OVERHEAD_ARGS:---geometries vitb16 --methods raw mrdc cim masking masking+experience --drop-steps 10} \
  --out "$OUT/overhead-gpu-vitb16.json"

if [ "${SCALE_ARGS:-}" != skip ]; then
  # shellcheck disable=SC2086
  part scale 120 "$PY" benchmarks/scale.py --device "$DEVICE" --precision bf16 --threads 4 \
    ${SCALE_ARGS:---workers 4 8 --steps 20 --batch-size 32} --out "$OUT/scale-gpu-bf16.json"
fi

# the pilot loads its data in the run's own process (loader.num_workers 0, the study's setting)
pilot=$(($(left) - 20))
part pilot-224 "$pilot" env PY="$PY" OUT="$OUT/study" DEVICE="$DEVICE" SEEDS=0 THREADS=8 CALL_TIMEOUT=$((pilot - 15)) \
  GROUPS_RUN="${PILOT_GROUPS:-main paper-masking paper-mrdc}" \
  SET="benchmark.n_experiences=3 benchmark.args.n_classes=12 benchmark.args.train_per_class=40 benchmark.args.test_per_class=20 train.epochs=1 ${PILOT_SET:-}" \
  bash benchmarks/run_224_vitb16.sh
[ -d "$OUT/study" ] && tar czf "$OUT/study-224-pilot.tar.gz" --exclude='*.safetensors' -C "$OUT" study && rm -rf "$OUT/study"
echo "=== all parts done after $(($(date +%s) - START)) s" | tee -a "$LOG"
