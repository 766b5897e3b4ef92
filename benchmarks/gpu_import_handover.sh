#!/usr/bin/env bash
# One short GPU call: do the import lane's hand-overs depend on the file's layout? The calibration's
# import-upload probe (one 1 GiB tensor, 64 MiB pieces) saw 0.08-0.10 ms gaps on the lane, the
# fidelity file's uploads (3.99 GiB, 48 tensors) 0.13-0.25 ms (benchmarks/import_gaps.py). The
# same policies on both files, lane by lane (upload_timeline.py, 9 runs each); then import_gaps.py.
#   run(command="bash benchmarks/gpu_import_handover.sh", carry=[".whl"], timeout_s=150)
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_install.sh || exit 1
LLAMA=$(fidelity_file)
ONE=/tmp/halsim-fidelity/one-tensor-1GiB.safetensors
python3 -c "import numpy as np, sys; from safetensors.numpy import save_file
save_file({'w': np.frombuffer(np.random.default_rng(0).bytes(1 << 30), np.uint8)}, sys.argv[1])" "$ONE" || exit 1
say "files ready"
for file in "$ONE" "$LLAMA"; do
  name=$(basename "$file" .safetensors)
  timeout ${LIMIT:-60} python3 benchmarks/upload_timeline.py "$file" --repeat "${REPEAT:-9}" \
    --policy import --policy import:piece=64MiB --policy import:piece=64MiB,queues=2 \
    --json "$OUT/handover-$name.json" >"$OUT/handover-$name.log" 2>&1
  say "$name: exit $?"
done
python3 benchmarks/import_gaps.py "$OUT"/handover-*.json | tee "$OUT/import-gaps.txt"
true
