#!/usr/bin/env bash
# Continue issue 17's studies in the background on this machine (docs/results/protocol.md), each resumable run by run:
# a run whose JSON is committed is skipped, a killed one resumes from runs/ while that folder is there.
#
#   bash benchmarks/evidence_resume.sh [CIFAR10_ZIP]     # default ../shared/data/cifar10.zip, extracted to $DATA
#
# Two lanes: the CIFAR-10 pair (evidence_classify.py), then the fusion/γ grid (evidence_ablate.py). One lane at
# lower priority: the detection pair's plateau stages (detection amendments 1 and 2), then the recipe screen.
# Logs: /tmp/evidence_cifar.log, /tmp/evidence_detect.log. Pause for timing: kill -STOP / -CONT the python PIDs.
set -euo pipefail
cd "$(dirname "$0")/.."
ZIP=${1:-../shared/data/cifar10.zip}
DATA=${DATA:-/tmp/cifar10}
PY=.venv/bin/python
make install
if [ ! -d "$DATA/train" ]; then
  rm -rf "$DATA.part" && mkdir -p "$DATA.part" && unzip -q "$ZIP" -d "$DATA.part" && mv "$DATA.part" "$DATA"
fi
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
nohup nice -n 15 bash -c "$PY benchmarks/evidence_classify.py train --data $DATA --jobs 2 --commit; \
  $PY benchmarks/evidence_ablate.py train --data $DATA --jobs 2 --commit" > /tmp/evidence_cifar.log 2>&1 &
nohup nice -n 19 bash -c "$PY benchmarks/detect_recipe.py plateau --recipe '' --jobs 1 --commit; \
  $PY benchmarks/detect_recipe.py plateau --recipe '' --mosaic-epochs 20 --datasets raccoon --jobs 1 --commit; \
  $PY benchmarks/detect_recipe.py screen --jobs 1 --commit" > /tmp/evidence_detect.log 2>&1 &
echo "started; follow with: tail -f /tmp/evidence_cifar.log /tmp/evidence_detect.log"
