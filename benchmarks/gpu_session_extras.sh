#!/usr/bin/env bash
# One GPU call: fidelity runs, stopped before the fit, with the 16- and 8-slot rings as
# extras (RUNS runs of REPEAT rounds each; default 2 x 5, about 7 minutes). Since the
# fourteenth session `compare` warms the file afresh after the cold cases, so the extras
# no longer run on a cold case's cache. TESTS=1 first runs the CUDA backend's tests (about
# a minute).
# Fit each here: python3 benchmarks/fidelity_replay.py OUT/runN.raw.json --cases --write DIR
#   run(command="bash benchmarks/gpu_session_extras.sh", carry=[".whl"], timeout_s=590)
#   run(command="TESTS=1 RUNS=1 bash benchmarks/gpu_session_extras.sh", ...)
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_install.sh || exit 1
RUNS=${RUNS:-2} REPEAT=${REPEAT:-5}
if [ -n "${TESTS:-}" ]; then
  say "CUDA backend tests"
  timeout 150 python3 -m pytest -q -rs -p no:cacheprovider tests/backends/test_cuda.py >"$OUT/test_cuda.log" 2>&1
  say "tests exit $?"; tail -4 "$OUT/test_cuda.log"
fi
for r in $(seq 1 "$RUNS"); do
  say "fidelity run $r ($REPEAT rounds)"
  timeout $(( 60 * REPEAT + 20 )) python3 benchmarks/fidelity_gpu.py "$OUT/run$r" --no-fit --repeat "$REPEAT" \
    --extra "streaming:chunk=16MiB,slots=16,readers=8" --extra "streaming:chunk=16MiB,slots=8,readers=8" \
    >"$OUT/run$r.log" 2>&1
  say "fidelity run $r exit $?"
  tail -3 "$OUT/run$r.log"
  rm -f "$OUT"/*.png "$OUT"/*.toml "$OUT"/*.perfetto.json
done
true
