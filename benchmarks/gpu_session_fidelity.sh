#!/usr/bin/env bash
# One GPU call: the CUDA tests and conformance, the pinning microbenchmarks,
# simulator fidelity (calibrate + compare, issue 7; 3 rounds to fit the call), then the pinned-source rows
# of cuda_upload.py with what time is left.
#   run(command="bash benchmarks/gpu_session_fidelity.sh", carry=[".whl"], timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_install.sh || exit 1
say "CUDA tests and conformance"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/backends/test_cuda.py >"$OUT/test_cuda.log" 2>&1
say "test_cuda exit $?: $(tail -1 "$OUT/test_cuda.log")"
HYPOTHESIS_PROFILE=dev timeout 120 python3 -m pytest -q -p no:cacheprovider tests/conformance -k cuda \
  >"$OUT/conformance.log" 2>&1
say "conformance exit $?: $(tail -1 "$OUT/conformance.log")"
say "pinning"
timeout 90 python3 benchmarks/cuda_pinning.py --json "$OUT/pinning.json" >"$OUT/pinning.log" 2>&1
say "pinning exit $?"
say "fidelity"
timeout ${FIDELITY_SECONDS:-290} python3 benchmarks/fidelity_gpu.py "$OUT/fidelity" --repeat ${FIDELITY_REPEAT:-3} >"$OUT/fidelity.log" 2>&1
say "fidelity exit $?"
left=$(( ${SESSION_SECONDS:-570} - ($(date +%s) - began) ))
if [ "$left" -gt 80 ]; then
  say "pinned-source rows (${left}s left)"
  timeout $(( left - 10 )) python3 benchmarks/cuda_upload.py --no-cold --no-peers --only "pinned" \
    --json "$OUT/pinned.json" >"$OUT/pinned.log" 2>&1
  say "pinned exit $?"
fi
tail -32 "$OUT/pinning.log"
tail -45 "$OUT/fidelity.log"
tail -8 "$OUT/pinned.log" 2>/dev/null
