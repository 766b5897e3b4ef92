#!/usr/bin/env bash
# Second GPU call of a session (after benchmarks/gpu_session.sh): calibrate cuda:0
# and compare sim vs real (issue 7), then the Vulkan backend's tests and benchmark.
#   run(command="bash benchmarks/gpu_fidelity_vulkan.sh", carry=[".gl", ".whl"], timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_install.sh || exit 1
say "fidelity"
timeout ${FIDELITY_SECONDS:-290} python3 benchmarks/fidelity_gpu.py "$OUT/fidelity" --repeat ${FIDELITY_REPEAT:-3} 2>&1 | tail -45
say "fidelity exit ${PIPESTATUS[0]}"
left=$(( ${SESSION_SECONDS:-570} - ($(date +%s) - began) ))
say "vulkan (${left}s left)"
VULKAN_BENCH_SIZE=${VULKAN_BENCH_SIZE:-1GiB} timeout $(( left > 30 ? left - 10 : 20 )) bash benchmarks/vulkan_gpu.sh \
  >"$OUT/vulkan_run.log" 2>&1
say "vulkan exit $?"
grep -E "passed|failed|error" "$OUT/vulkan_tests.txt" 2>/dev/null | tail -8
tail -25 "$OUT/vulkan_bench.txt" 2>/dev/null
