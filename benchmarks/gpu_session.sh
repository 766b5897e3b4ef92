#!/usr/bin/env bash
# The CUDA backend's whole session on the lent GPU machine, in one call:
# install halsim, run the GPU tests, write the 8 GiB file, run the benchmark,
# then the conformance suite on cuda:0 with the time left (SESSION_SECONDS, default 560).
#
#   bash benchmarks/gpu_session.sh        (from the repository root; logs and JSON go to $OUT)
#
# BENCH_ARGS adds arguments to cuda_upload.py (e.g. "--only 'at end' --no-cold");
# PINNING=1 first runs cuda_pinning.py --only-overlap (does registration hold copies back?).
#
# Python packages the machine's image lacks (pydantic and its needs, simpy)
# travel as wheels in .whl/ (see docs/cuda.md). Nothing here changes the GPU's settings.
set -uo pipefail
BENCH_DIR=${BENCH_DIR:-/tmp/halsim-bench}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
source benchmarks/gpu_install.sh || exit 1
say "installed"

# The benchmark's file is written while the tests run (it takes a CPU, not the GPU).
python3 benchmarks/cuda_upload.py --make-only --dir "$BENCH_DIR" >"$OUT/make_file.log" 2>&1 &
maker=$!

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.current,pcie.link.width.current --format=csv
  python3 -c "import sys, cuda.bindings, numpy; print('python', sys.version.split()[0], 'cuda-bindings', cuda.bindings.__version__, 'numpy', numpy.__version__)"
  python3 -c "import torch, cupy, safetensors; print('torch', torch.__version__, 'cupy', cupy.__version__, 'safetensors', safetensors.__version__)"
  halsim devices
  nproc; free -g; df -hT /tmp "$BENCH_DIR" 2>/dev/null; uname -r
} >"$OUT/env.txt" 2>&1
say "environment:"; cat "$OUT/env.txt"

if [ -n "${PINNING:-}" ]; then
  say "registration against copies"
  timeout 60 python3 benchmarks/cuda_pinning.py --only-overlap --json "$OUT/pinning.json" >"$OUT/pinning.log" 2>&1
  say "pinning exit status $?"; cat "$OUT/pinning.log"
fi

say "GPU tests"
timeout_opt=""
python3 -c "import pytest_timeout" 2>/dev/null && timeout_opt="--timeout=120"
timeout 200 python3 -m pytest -q -rs -p no:cacheprovider $timeout_opt tests/backends/test_cuda.py >"$OUT/test_cuda.log" 2>&1
say "tests exit status $?"
tail -25 "$OUT/test_cuda.log"

wait "$maker"
say "file written (status $?): $(tail -1 "$OUT/make_file.log")"

say "benchmark"
eval "timeout 340 python3 benchmarks/cuda_upload.py --dir \"$BENCH_DIR\" --json \"$OUT/cuda_upload.json\" \
  --budget-s 250 ${BENCH_ARGS:-}" >"$OUT/bench.log" 2>&1
say "benchmark exit status $?"

# The device conformance suite on cuda:0, with what time is left (short hypothesis profile).
left=$(( ${SESSION_SECONDS:-560} - ($(date +%s) - began) ))
if [ "$left" -gt 40 ]; then
  say "conformance suite on cuda:0 (${left}s left)"
  HYPOTHESIS_PROFILE=dev timeout $(( left - 10 )) python3 -m pytest -q -rs -p no:cacheprovider tests/conformance \
    -k "cuda" >"$OUT/conformance.log" 2>&1
  say "conformance exit status $?"
  tail -6 "$OUT/conformance.log"
fi
tail -48 "$OUT/bench.log"
