#!/usr/bin/env bash
# One GPU call (about 4 minutes): can a 1 GiB calibration-style ring show the
# 8- vs 16-slot footprint effect that 4 GiB uploads show (docs/fidelity.md,
# thirteenth session)? Then one fidelity run with both rings as extras, stopped
# before the fit (fit it here: fidelity_replay.py OUT/run1.raw.json --cases --write DIR).
#   run(command="bash benchmarks/gpu_session_ring.sh", carry=[".whl"], timeout_s=480)
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_install.sh || exit 1
RINGS=(--policy "streaming:chunk=16MiB,slots=8,readers=8" --policy "streaming:chunk=16MiB,slots=16,readers=8")
say "ring footprint"
timeout 150 python3 benchmarks/ring_footprint.py --files 1GiB,4GiB --staging-first --raw --rounds 7 "${RINGS[@]}" \
  --json "$OUT/ring-footprint.json" >"$OUT/ring-footprint.log" 2>&1
say "ring footprint exit $?"
tail -18 "$OUT/ring-footprint.log"
say "fidelity"
timeout 270 python3 benchmarks/fidelity_gpu.py "$OUT/run1" --no-fit \
  --extra "streaming:chunk=16MiB,slots=16,readers=8" --extra "streaming:chunk=16MiB,slots=8,readers=8" \
  >"$OUT/run1.log" 2>&1
say "fidelity exit $?"
tail -5 "$OUT/run1.log"
rm -f "$OUT"/*.png "$OUT"/*.toml
gzip -f "$OUT"/*.perfetto.json 2>/dev/null
