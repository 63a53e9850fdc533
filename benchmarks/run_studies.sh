#!/usr/bin/env bash
# Issue #11's two studies in one command on one GPU box (one H100, 16 cores), then the CPU half here.
#
#   GPU box:  bash benchmarks/run_studies.sh gpu            # ~6 min; carry .gpu (the CIFAR-10 pack); results -> $OUT
#   here:     bash benchmarks/run_studies.sh finish DIR     # DIR holds studies.tar.gz: CPU latency + the docs
#   here:     bash benchmarks/run_studies.sh tiny           # the whole pipeline on this CPU with tiny settings
#   here:     bash benchmarks/run_studies.sh cpu [DATA]     # the convergence pair on a 2-core CPU (~1 h with AMX), resumable
#
# gpu: the ablation (cspnet ablate --base peleenet --budget cpu: 6 variants x 1 seed, 4 epochs x 20,000 images) and
# the convergence pair (cspresnet10/resnet10, 2 seeds each, on all 50,000 images, small-input stem; budget `converge`: 12 epochs, the committed run used
# CONV_EPOCHS=10) train
# at once as 6 + 4 processes sharing the GPU (fp16 autocast), 1 + 3 data-loader workers each. Nothing is timed there:
# latency is measured on the CPU that `finish` runs on. Settings: env ABL_SEEDS, CONV_EPOCHS, CONV_SEEDS, LIMIT_S,
# EXTRACT (0: read the zip directly), STUDIES (ablate,convergence: which to train).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-}
PY=${PY:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
ABL_NAME=peleenet_cpu
CONV_NAME=cspresnet10_vs_resnet10

train_both() {  # $1 data, $2 runs root, $3 device, $4 log folder; extra args via ABL_EXTRA, CONV_EXTRA
  local data=$1 runs=$2 device=$3 logs=$4
  mkdir -p "$runs"
  local t0=$SECONDS
  local abl="" conv="" rc=0
  if [[ ${STUDIES:-ablate,convergence} == *ablate* ]]; then
    timeout -k 60 "${LIMIT_S:-330}" $PY -m cspnet.cli ablate --base peleenet --data "$data" --budget cpu \
      --seeds "${ABL_SEEDS:-1}" --device "$device" --workers "${ABL_WORKERS:-1}" --jobs 6 --parts train,report \
      --project "$runs/ablate" --name $ABL_NAME ${ABL_EXTRA:-} > "$logs/ablate.log" 2>&1 &
    abl=$!
  fi
  if [[ ${STUDIES:-ablate,convergence} == *convergence* ]]; then
    timeout -k 60 "${LIMIT_S:-330}" $PY benchmarks/convergence.py --data "$data" --device "$device" \
      --seeds "${CONV_SEEDS:-2}" --jobs $((2 * ${CONV_SEEDS:-2})) --workers "${CONV_WORKERS:-3}" \
      ${CONV_EPOCHS:+--epochs $CONV_EPOCHS} --parts train,report --project "$runs/convergence" --name $CONV_NAME \
      --out "$runs/convergence_report" ${CONV_EXTRA:-} > "$logs/convergence.log" 2>&1 &
    conv=$!
  fi
  if [ -n "$abl" ]; then wait $abl || rc=$?; echo "ablation trainings: exit $rc after $((SECONDS - t0)) s"; fi
  if [ -n "$conv" ]; then wait $conv || rc=$?; echo "convergence trainings: exit $rc after $((SECONDS - t0)) s"; fi
  return $rc
}

pack_results() {  # $1 runs root, $2 output folder: one tar.gz of the results (no checkpoints or event files)
  local have=()
  for d in ablate convergence; do [ -d "$1/$d" ] && have+=("$d"); done
  [ ${#have[@]} -gt 0 ] || { echo "no study folders in $1: nothing to pack"; return 0; }
  tar czf "$2/studies.tar.gz" -C "$1" --exclude='*.pt' --exclude='events.out.tfevents*' --exclude='.lock' "${have[@]}"
  ls -la "$2"
}

case "$MODE" in
gpu)
  OUT=${OUT:-runs/studies_out}
  mkdir -p "$OUT"
  exec > >(tee "$OUT/log.txt") 2>&1
  nvidia-smi --query-gpu=name,memory.total --format=csv || true
  lscpu | grep -E "Model name|^CPU\(s\)" || true
  $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  DATA=${DATA:-}
  if [ -z "$DATA" ]; then
    [ -f .gpu/unpack.py ] || { echo "no DATA and no .gpu/unpack.py: carry .gpu or set DATA=PATH/cifar10"; exit 2; }
    $PY .gpu/unpack.py /tmp/cifar10.zip
    DATA=/tmp/cifar10.zip
    if [ "${EXTRACT:-1}" = 1 ]; then  # folders read ~20% faster than the zip; extracting takes ~10-20 s
      $PY -c "import zipfile; zipfile.ZipFile('/tmp/cifar10.zip').extractall('/tmp/cifar10')"
      DATA=/tmp/cifar10
    fi
  fi
  RUNS=${RUNS:-runs/studies}
  rc=0
  train_both "$DATA" "$RUNS" "${DEVICE:-cuda}" "$OUT" || rc=$?
  pack_results "$RUNS" "$OUT"
  exit $rc
  ;;
finish)
  SRC=${2:?usage: run_studies.sh finish DIR_WITH_studies.tar.gz}
  RUNS=${RUNS:-runs/studies}
  DOCS=${DOCS:-docs/results}
  mkdir -p "$RUNS"
  tar xzf "$SRC/studies.tar.gz" -C "$RUNS"
  export OMP_WAIT_POLICY=PASSIVE
  uptime
  # CPU latency (interleaved, fused and unfused, batch 1 and 8) of every variant, then the tables and docs
  if [ -d "$RUNS/ablate/$ABL_NAME" ]; then
    $PY -m cspnet.cli ablate --base peleenet --budget cpu --parts measure,report --project "$RUNS/ablate" \
      --name $ABL_NAME ${THREADS:+--threads $THREADS}
    $PY benchmarks/ablation_doc.py --study "$RUNS/ablate/$ABL_NAME" --out "$DOCS"
  fi
  if [ -d "$RUNS/convergence/$CONV_NAME" ]; then
    $PY benchmarks/convergence.py --parts measure,report --project "$RUNS/convergence" --name $CONV_NAME \
      --out "$DOCS/convergence_gpu" --note "The settled answer on a CPU budget: [convergence.md](convergence.md)." ${THREADS:+--threads $THREADS}
  fi
  uptime
  ;;
cpu)  # docs/results/convergence.md: budget converge_cpu (16 epochs, usual stem) on all of CIFAR-10, then latency
  DATA=${2:-/tmp/cifar10}
  if [ ! -d "$DATA" ] && [ ! -f "$DATA" ]; then
    $PY -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
      "${CSPNET_SHARED:-../shared}/data/cifar10.zip" "$DATA"
  fi
  export OMP_WAIT_POLICY=PASSIVE
  lscpu | grep -E "Model name|^CPU\(s\)" || true
  $PY benchmarks/convergence.py --budget converge_cpu --data "$DATA" --seeds 2 --jobs 2 --parts train \
    --project runs/studies/convergence_cpu --name $CONV_NAME
  uptime
  $PY benchmarks/convergence.py --budget converge_cpu --parts measure,report --project runs/studies/convergence_cpu \
    --name $CONV_NAME --threads 2 --note "${CONV_NOTE:-}" --out "${DOCS:-docs/results}/convergence"
  uptime
  ;;
tiny)  # the same pipeline, end to end on this CPU: 500 training images, 1-2 epochs, into a scratch folder
  TMP=${TMP_DIR:-$(mktemp -d)}
  SHARED=${CSPNET_SHARED:-../shared}
  $PY - "$SHARED/data/cifar10.zip" "$TMP/data" <<'EOF'
import sys, zipfile
from pathlib import Path
z, out = zipfile.ZipFile(sys.argv[1]), Path(sys.argv[2])
per = {"train": 50, "test": 20}  # per class
seen = {}
for n in z.namelist():
    parts = n.split("/")
    if len(parts) == 3 and parts[2] and seen.get((parts[0], parts[1]), 0) < per.get(parts[0], 0):
        seen[(parts[0], parts[1])] = seen.get((parts[0], parts[1]), 0) + 1
        (out / parts[0] / parts[1]).mkdir(parents=True, exist_ok=True)
        (out / n).write_bytes(z.read(n))
print("tiny CIFAR-10:", sum(seen.values()), "images in", out)
EOF
  export ABL_EXTRA="--epochs 1 --subset 500 --val-subset 200" CONV_EXTRA="--epochs 2 --batch 50 --img 16 --subset 200 --val-subset 100"
  export CONV_SEEDS=2 LIMIT_S=${LIMIT_S:-900} ABL_WORKERS=0 CONV_WORKERS=0
  OUT="$TMP/out" RUNS="$TMP/runs" DATA="$TMP/data" DEVICE=cpu bash "$0" gpu
  RUNS="$TMP/finished" DOCS="$TMP/docs" bash "$0" finish "$TMP/out"
  ls -la "$TMP/docs"
  echo "tiny pipeline OK in $TMP"
  ;;
*)
  sed -n 2,13p "$0"
  exit 2
  ;;
esac
