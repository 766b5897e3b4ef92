#!/usr/bin/env bash
# One short GPU call: does importing on two copy queues beat one? The model says so (a release
# waits for every copy in flight, and two queues drain sooner: 8.5 % for 256 MiB pieces on the
# H100's fit of 2026-12-05); the fidelity runs put 64 MiB pieces on two queues level with
# `import` on real cards. upload_timeline.py times each import 2 x 2 way, with its lanes.
#   run(command="bash benchmarks/gpu_import_queues.sh", carry=[".whl"], timeout_s=150)
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_install.sh || exit 1
FILE=$(python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path
from fidelity_gpu import make_file; print(make_file(Path('/tmp/halsim-fidelity'), 5))" | tail -1)
say "file ready: $FILE"
timeout ${LIMIT:-100} python3 benchmarks/upload_timeline.py "$FILE" --repeat "${REPEAT:-9}" \
  --policy import --policy import:queues=2 --policy import:piece=64MiB --policy import:piece=64MiB,queues=2 \
  --json "$OUT/import-queues.json" >"$OUT/import-queues.log" 2>&1
say "exit $?"; grep -E "^import|  runs:" "$OUT/import-queues.log"
true
