# Sourced by the GPU session scripts (from the repository root): the output folder
# ($OUT, default ./gpu-out), a clock for the log (`say`), the wheels the lent
# machine's image lacks (.whl/, see docs/cuda.md), then halsim itself, editable.
# Log: $OUT/install.log; returns non-zero on failure.
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
began=${began:-$(date +%s)}
say() { echo "[$(( $(date +%s) - began ))s] $*"; }
# The fidelity runs' file (5 layers of Llama 3 8B, 3.99 GiB), written once; prints its path.
fidelity_file() {
  python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path
from fidelity_gpu import make_file; print(make_file(Path('/tmp/halsim-fidelity'), 5))" | tail -1
}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >"$OUT/install.log" 2>&1 || { tail -20 "$OUT/install.log"; return 1; }
  export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >>"$OUT/install.log" 2>&1 \
  || { tail -20 "$OUT/install.log"; return 1; }
