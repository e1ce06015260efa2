#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md in one go on one CUDA GPU, small models side by side (one process each).
#
#   scripts/bench_gpu.sh cifar PATH/cifar10_jpeg.npz OUT   # KD throughput, ResNet-56 -> ResNet-20 KD x 3 seeds,
#                                                          # ResNet-56 pruned 2x (channels; blocks) with KD vs
#                                                          # CE recovery, data-free vs data-based KD
#   scripts/bench_gpu.sh mnist PATH/mnist.npz OUT          # Hinton's MNIST table
#
# Schedules come from the environment: TEACHER_EPOCHS (30), EPOCHS (20), PRUNE_EPOCHS (40), DF_EPOCHS (100),
# MNIST_EPOCHS (200), SEEDS ("0 1 2"), JOBS (3, student runs at once), PRUNE_TARGET (x86-avx512-vnni: its
# channel multiple, 16, is the conv block of the AVX-512 CPU the pruned model is timed on; x86-avx2 for an
# AVX2 one). Each benchmark writes its JSON under OUT as runs finish; logs go to OUT/*.log. The CPU halves
# (ONNX Runtime latency, post-training quantization) run elsewhere from the checkpoints left under OUT: see BENCHMARKS.md.
set -uo pipefail
task=$1 data=$2 out=$3
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

case $task in
cifar)
    # Throughput first and alone: nothing else may share the GPU while it is timed.
    $py scripts/bench_distill.py --data "$data" --out "$out/bench_distill.json" >"$out/distill.log" 2>&1
    $py scripts/bench_kd.py cifar --data "$data" --seeds ${SEEDS:-0 1 2} --teacher-epochs "${TEACHER_EPOCHS:-30}" \
        --epochs "${EPOCHS:-20}" --jobs "${JOBS:-3}" --out "$out/kd" >"$out/kd.log" 2>&1 &
    kd=$!
    teacher=$out/kd/cifar/teacher/01-teacher
    until [ -f "$teacher/done.json" ] || ! kill -0 $kd 2>/dev/null; do sleep 2; done
    if [ -f "$teacher/done.json" ]; then  # the pruning runs start from the same teacher as the students
        $py scripts/bench_prune.py recovery --data "$data" --teacher-checkpoint "$teacher/model.pt" --jobs 2 \
            --macs-ratio 0.5 --target "${PRUNE_TARGET:-x86-avx512-vnni}" --no-latency --epochs "${PRUNE_EPOCHS:-40}" \
            --out "$out/prune" >"$out/prune.log" 2>&1 &
        $py scripts/bench_prune.py recovery --data "$data" --teacher-checkpoint "$teacher/model.pt" --jobs 2 \
            --macs-ratio 0.5 --structure blocks --no-latency --epochs "${PRUNE_EPOCHS:-40}" \
            --out "$out/prune-blocks" >"$out/prune-blocks.log" 2>&1 &
        $py scripts/bench_datafree.py cifar --data "$data" --teacher-checkpoint "$teacher/model.pt" \
            --kd-epochs "${EPOCHS:-20}" --df-epochs "${DF_EPOCHS:-100}" --out "$out/df" >"$out/df.log" 2>&1 &
    fi
    wait
    ;;
mnist)
    $py scripts/bench_kd.py mnist --data "$data" --seeds ${SEEDS:-0} --teacher-epochs "${MNIST_EPOCHS:-200}" \
        --epochs "${MNIST_EPOCHS:-200}" --jobs "${JOBS:-3}" --out "$out/kd" >"$out/mnist.log" 2>&1
    ;;
*)
    echo "usage: scripts/bench_gpu.sh cifar|mnist DATA OUT" >&2
    exit 2
    ;;
esac
