# Sourced by the GPU session scripts (from the repository root, with $OUT set):
# the wheels the lent machine's image lacks (.whl/, see docs/cuda.md), then
# halsim itself, editable. Log: $OUT/install.log; returns non-zero on failure.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >"$OUT/install.log" 2>&1 || { tail -20 "$OUT/install.log"; return 1; }
  export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >>"$OUT/install.log" 2>&1 \
  || { tail -20 "$OUT/install.log"; return 1; }
