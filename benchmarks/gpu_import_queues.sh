#!/usr/bin/env bash
# One short GPU call: `import` with 256 and 64 MiB pieces, each on one and two copy queues,
# lane by lane (upload_timeline.py, 9 runs each). On the stored H100 runs the model has the
# two-queue 64 MiB import ahead of `import`, the hardware level or behind: its import lane stands
# idle 5-9 ms longer for real, and `import`'s releases on one queue run 8-10 ms shorter
# (benchmarks/case_error_lanes.py). These timelines show the hand-overs and releases step by step.
#   run(command="bash benchmarks/gpu_import_queues.sh", carry=[".whl"], timeout_s=150)
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_install.sh || exit 1
FILE=$(fidelity_file)
say "file ready: $FILE"
timeout ${LIMIT:-100} python3 benchmarks/upload_timeline.py "$FILE" --repeat "${REPEAT:-9}" \
  --policy import --policy import:queues=2 --policy import:piece=64MiB --policy import:piece=64MiB,queues=2 \
  --json "$OUT/import-queues.json" >"$OUT/import-queues.log" 2>&1
say "exit $?"; grep -E "^import|  runs:" "$OUT/import-queues.log"
true
