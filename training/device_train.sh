#!/usr/bin/env bash
# One training call on the GPU machine (see training/README.md). Carries: .whl .cache/espeak
# .cache/demo/base .cache/demo/corpus.jsonl.xz [.cache/snapshot] (WHEELS=DIR: another wheel folder; INIT=DIR: start
# from an exported model). Usage, from the repository root (the scripts run as python3 -m training.NAME):
# bash training/device_train.sh TOTAL_SECONDS CALL_SECONDS [export]
set -euo pipefail
total=$1; seconds=$2; export_dir=${3:-}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${WHEELS:-.whl}"/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=$PWD/.cache/espeak/lib ESPEAK=$PWD/.cache/espeak/espeak-ng ESPEAK_DATA_PATH=$PWD/.cache/espeak
[ -f .cache/demo/corpus.jsonl ] || python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open('.cache/demo/corpus.jsonl.xz'),open('.cache/demo/corpus.jsonl','wb'))"
mkdir -p .cache/pool
# The pool keeps growing across calls while the machine stays warm (a new session outlives this command).
if ! pgrep -f 'training[.]pool' >/dev/null; then
  setsid nohup python3 -m training.pool .cache/demo/corpus.jsonl .cache/pool --clips 150000 --shard 4000 \
    --processes 11 > .cache/pool.log 2>&1 < /dev/null &
fi
python3 -m training.train --corpus .cache/demo/corpus.jsonl --base .cache/demo/base --pool .cache/pool \
  --work .cache/work --snapshot .cache/snapshot ${INIT:+--init "$INIT"} --seconds "$total" --time-limit "$seconds" ${export_dir:+--export "$export_dir"}
cp .cache/snapshot/weights-*.pt .cache/work/log.jsonl "$OUT"/ ; cp .cache/pool.log "$OUT"/
nvidia-smi --query-gpu=name,memory.used --format=csv
