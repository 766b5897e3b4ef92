#!/usr/bin/env bash
# The Vulkan backend on the lent GPU machine: its tests (plain, then under the
# Khronos validation layer with synchronisation validation), the conformance
# suite's Vulkan cases, and the upload benchmark beside the CUDA backend on one file.
#
# That machine has NVIDIA's Vulkan ICD but no loader (nor, on the H200, the glvnd libraries it needs), and no vulkan/cffi/pydantic
# packages: carry `.gl` (Debian's libvulkan1 and vulkan-validationlayers .debs) and
# `.whl` (wheels for Python 3.12); docs/vulkan.md says how to make both. Then:
#
#   run(command="bash benchmarks/vulkan_gpu.sh", carry=[".gl", ".whl"], timeout_s=600)
#
# or from benchmarks/gpu_session.sh, after the CUDA benchmark wrote its file:
#
#   bash benchmarks/vulkan_gpu.sh /path/to/the/cuda/benchmark/model.safetensors
#
# Arguments: [MODEL_FILE] — the file to upload (default: a VULKAN_BENCH_SIZE file,
# 1GiB unless set, written here). Output: $OUT/vulkan_tests.txt, $OUT/vulkan_bench.txt,
# $OUT/vulkan_bench.json ($OUT defaults to ./vulkan-gpu-out). Exit status: non-zero
# if a test run failed; the benchmark runs regardless. HALSIM_VULKAN_PROBE=0 skips
# the mapped-file import probe at device open (should it ever misbehave there).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/vulkan-gpu-out}
mkdir -p "$OUT"
MODEL=${1:-}
SIZE=${VULKAN_BENCH_SIZE:-1GiB}
export PYTHONUNBUFFERED=1
status=0

# 1. The Vulkan loader and validation layers, from Debian's packages (unpacked into /).
if [ -d .gl ] && ls .gl/*.deb >/dev/null 2>&1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
ldconfig -p | grep -q 'libvulkan.so.1 ' || echo "warning: no libvulkan.so.1 (carry .gl)"
# NVIDIA's ICD lives outside the loader's search path.
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json; do
  if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then
    export VK_DRIVER_FILES=$icd VK_ICD_FILENAMES=$icd
  fi
done
echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-<unset>}"

# 2. Python packages the image lacks (vulkan, cffi, pydantic, simpy...).
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

# 3. halsim itself (backends/ installs as halsim.backends): editable install, else a copied tree.
if ! (cd / && python3 -c "import halsim.backends.vulkan") 2>/dev/null; then
  if ! python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
      || ! (cd / && python3 -c "import halsim.backends.vulkan") 2>/dev/null; then
    rm -rf /tmp/halsim-tree && mkdir -p /tmp/halsim-tree
    cp -r halsim /tmp/halsim-tree/ && cp -r backends /tmp/halsim-tree/halsim/backends \
      && cp -r models /tmp/halsim-tree/halsim/models
    export PYTHONPATH=/tmp/halsim-tree${PYTHONPATH:+:$PYTHONPATH}
  fi
fi
PY="python3 -P"  # -P: never import ./halsim (it lacks backends/) instead of the installed package
LOG=$OUT/vulkan_tests.txt
: >"$LOG"
log() { "$@" 2>&1 | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }

log echo "== $(date -u +%FT%TZ) $(uname -m) $(nproc) cores; $(python3 --version 2>&1)"
log nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
log $PY benchmarks/vulkan_upload.py --info

log echo "== tests"
log timeout 300 $PY -m pytest -q -p no:cacheprovider -rs tests/backends/test_vulkan.py || status=1

log echo "== tests under VK_LAYER_KHRONOS_validation (+ synchronisation validation)"
VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation \
VK_LAYER_ENABLES=VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT \
  log timeout 300 $PY -m pytest -q -p no:cacheprovider -rs tests/backends/test_vulkan.py || status=1

if [ -d tests/conformance ]; then
  log echo "== conformance suite, Vulkan cases"
  log timeout 300 $PY -m pytest -q -p no:cacheprovider -rs tests/conformance -k vulkan
  rc=$?
  [ $rc -eq 0 ] || [ $rc -eq 5 ] || status=1  # 5: no Vulkan case collected
fi

echo "== benchmark"
timeout 420 $PY benchmarks/vulkan_upload.py --size "$SIZE" --repeat 3 ${MODEL:+--file "$MODEL"} \
  --also cuda:0 --json "$OUT/vulkan_bench.json" 2>&1 | tee "$OUT/vulkan_bench.txt"

exit $status
