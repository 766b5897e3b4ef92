#!/usr/bin/env bash
# One GPU call (about 6 minutes): three fidelity runs, stopped before the fit, with the
# 16- and 8-slot rings as extras. Since the fourteenth session `compare` warms the file
# afresh after the cold cases, so the extras no longer run on a cold case's cache (the
# first warm upload after one ran 14-20% slower on the H200: benchmarks/warm_state.py).
# Fit each here: python3 benchmarks/fidelity_replay.py OUT/runN.raw.json --cases --write DIR
#   run(command="bash benchmarks/gpu_session_extras.sh", carry=[".whl"], timeout_s=590)
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_install.sh || exit 1
for r in 1 2 3; do
  say "fidelity run $r"
  timeout 180 python3 benchmarks/fidelity_gpu.py "$OUT/run$r" --no-fit \
    --extra "streaming:chunk=16MiB,slots=16,readers=8" --extra "streaming:chunk=16MiB,slots=8,readers=8" \
    >"$OUT/run$r.log" 2>&1
  say "fidelity run $r exit $?"
  tail -3 "$OUT/run$r.log"
  rm -f "$OUT"/*.png "$OUT"/*.toml "$OUT"/*.perfetto.json
done
true
