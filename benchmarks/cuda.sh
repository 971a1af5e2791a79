#!/usr/bin/env bash
# The CUDA checks and figures in one go, for a machine with an NVIDIA GPU (`make bench-cuda`, or run it directly):
#
#   1. tests/accelerator: every optimizer, estimator and LipschitzLR on the GPU against the CPU, no host-device
#      sync in step(), bf16 parameters, inductor (Triton) compiled steps;
#   2. the optimizer-step sections of the benchmark suite on the GPU in float32, torch.compile rows included;
#   3. the same in bf16 (no compile rows unless BF16_COMPILE=1: they would double the compile time);
#   4. benchmarks.step_profile: operator calls and kernels per step (what sets a GPU step's time);
#   5. the curvature section's cost part on the GPU;
#   6. the LipschitzLR hook overhead with the MLPs and data on the GPU.
#
# Usage: benchmarks/cuda.sh [OUTDIR]   (default benchmarks/results/cuda). PYTHON picks the interpreter (default
# python3); the repository's src/ is put on PYTHONPATH, so no install is needed where torch, numpy and scikit-learn
# are. STAGES picks stages (default "tests float32 bfloat16 profile curvature hooks"). Each stage runs under a time
# limit (seconds, overridable: LIMIT_TESTS, LIMIT_F32, LIMIT_BF16, LIMIT_PROFILE, LIMIT_CURV, LIMIT_HOOKS),
# logs to OUTDIR/<stage>.log and the suite's JSON to OUTDIR/<dtype>.json; a failed stage does not stop the next,
# and the exit status is 1 if any failed (2 when there is no GPU).
set -u
out=${1:-benchmarks/results/cuda}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0

stage() {  # stage NAME LIMIT COMMAND...
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "== $name (limit ${limit} s): $*"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    rc=$?
    echo "   exit $rc after $((SECONDS - start)) s"
    tail -n "${TAIL:-12}" "$out/$name.log"
    [ "$rc" -eq 0 ] || status=1
}

$py - <<'EOF' || exit 2
import torch
assert torch.cuda.is_available(), "no CUDA device"
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {p.name}, {p.multi_processor_count} SMs, "
      f"{p.total_memory / 2**30:.0f} GiB")
EOF
xdist=()
$py -c "import xdist" 2>/dev/null && xdist=(-n 4)

bf16_compile=--no-compile
[ -n "${BF16_COMPILE:-}" ] && bf16_compile=--compile

run() {  # run STAGE: one of the stages below, if STAGES names it
    case " ${STAGES:-tests float32 bfloat16 profile curvature hooks} " in *" $1 "*) ;; *) return ;; esac
    case $1 in
    tests) stage tests "${LIMIT_TESTS:-150}" $py -m pytest tests/accelerator -q -p no:cacheprovider "${xdist[@]}" ;;
    float32) stage float32 "${LIMIT_F32:-300}" $py -m benchmarks.run --only optim_step,adaptive_step \
        --out "$out/float32.json" ;;
    bfloat16) stage bfloat16 "${LIMIT_BF16:-90}" $py -m benchmarks.run --only optim_step,adaptive_step \
        --dtype bfloat16 "$bf16_compile" --out "$out/bfloat16.json" ;;
    profile) stage profile "${LIMIT_PROFILE:-60}" $py -m benchmarks.step_profile ;;
    curvature) stage curvature "${LIMIT_CURV:-45}" $py -m benchmarks.curvature --device cuda --repeats 10 --seeds 1 ;;
    hooks) stage hooks "${LIMIT_HOOKS:-120}" $py -m benchmarks.lipschitz_hooks --device cuda --repeats 15 ;;
    esac
}
for name in tests float32 bfloat16 profile curvature hooks; do run "$name"; done
exit $status
