#!/usr/bin/env bash
# The prepared GPU check (issue 13), for a machine with one NVIDIA GPU and JAX with CUDA:
#
#     OUT=/some/dir bash scripts/device_check.sh        # < 8 minutes on one H100
#
# Runs scripts/gpu_check.py at GPU size under a 7.5-minute limit (each section is recorded even
# if a later one fails or the limit cuts it): float64 agreement of the GPU with the CPU on small
# finite and limit runs, the particle method (stored at M = 8192; lean at M = 16384, K = 64,
# the issue's size), a finite training step at n = 4096, L = 64, an 8-member ensemble against 8
# singles, float32/TF32/bf16 against float64, the kernel method in mode A at L = K = 1024, and
# the particles' history form at the issue's size (rank 512).
# Writes $OUT/gpu_check.json, $OUT/gpu_check.png and $OUT/gpu_check.log.
set -u
OUT="${OUT:-${1:-gpu-check}}"
mkdir -p "$OUT"
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${PYTHON:-python3}"
if [ -x "$HERE/../.venv/bin/python" ] && [ -z "${PYTHON:-}" ]; then PY="$HERE/../.venv/bin/python"; fi
# the lean particle section needs ~69 GiB: let XLA use 95 % of the card instead of 75 %
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}"
export PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import jax; print('devices:', jax.devices())" 2>&1 | tee "$OUT/gpu_check.log"
timeout 450 "$PY" "$HERE/gpu_check.py" --size "${SIZE:-gpu}" --out "$OUT" 2>&1 | tee -a "$OUT/gpu_check.log"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && echo "device_check: the 7.5-minute limit stopped gpu_check.py" | tee -a "$OUT/gpu_check.log"
exit "$status"
