#!/usr/bin/env bash
# One GPU call: fidelity runs, stopped before the fit, with the 16- and 8-slot rings as
# extras (RUNS runs of REPEAT rounds each; default one run of 10 rounds, about 7.5 minutes
# on the H100: the twenty-first session's three such runs met the error targets twice, where
# their first or last 5 rounds alone scored 5.1 % / 26 % and 3.9 % / 15 %). Since the
# fourteenth session `compare` warms the file afresh after the cold cases, so the extras
# no longer run on a cold case's cache. TESTS=1 first runs the CUDA backend's tests (about
# a minute; with it, REPEAT=8 stays inside a call). WAIT=1 last runs the 16 MiB x 8 x 8 ring
# on one and on two queues, five times each, with the copy threads spinning and then blocking
# (upload_timeline.py: time per read and per copy; the H200's reads ran 8 % faster beside two
# queues, the H100's 7 % slower), about a minute.
# Fit each here: python3 benchmarks/fidelity_replay.py OUT/runN.raw.json --cases --write DIR
#   run(command="bash benchmarks/gpu_session_extras.sh", carry=[".whl"], timeout_s=595)
#   run(command="TESTS=1 REPEAT=8 bash benchmarks/gpu_session_extras.sh", ...)
#   run(command="RUNS=2 REPEAT=5 bash benchmarks/gpu_session_extras.sh", ...)  # two runs of five rounds
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_install.sh || exit 1
RUNS=${RUNS:-1} REPEAT=${REPEAT:-10}
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
if [ -n "${WAIT:-}" ]; then
  FILE=$(fidelity_file)
  for mode in spin block; do
    say "two rings, HALSIM_CUDA_WAIT=$mode"
    HALSIM_CUDA_WAIT=$mode timeout 150 python3 benchmarks/upload_timeline.py "$FILE" --repeat 5 \
      --policy "streaming:chunk=16MiB,slots=8,readers=8" --policy "streaming:chunk=16MiB,slots=8,readers=8,queues=2" \
      --json "$OUT/rings-$mode.json" >"$OUT/rings-$mode.log" 2>&1
    say "exit $?"; tail -5 "$OUT/rings-$mode.log"
  done
fi
# At most 8 files come back from $OUT: the logs travel as one archive so no raw run is left out.
(cd "$OUT" && tar czf logs.tgz *.log && rm -f *.log)
true
