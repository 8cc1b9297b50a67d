#!/usr/bin/env bash
# Runs the benchmarks (`make bench`): prints the machine, each command, and its results:
# training accuracy, executor overhead, the pruning recipes (bench/prune.sh) and INT8
# quantization (bench/quant.sh), INT8 targets, QAT, distillation, calibration memory and
# streaming data; first the Python peer side by side (bench/peers.sh), the profile and the
# Deep Compression table (bench/compression.sh).
# QUICK=1 (`make bench QUICK=1`): only a reduced peer comparison and profile.
# Usage: bench/run.sh [BUILD_DIR]   (default: build). Extra arguments for the two
# programs can be passed through BENCH_TRAIN_ARGS / BENCH_OVERHEAD_ARGS.
# Exit status: non-zero when an accuracy target is missed or outputs differ.
set -u
BUILD_DIR=${1:-build}
BIN="$BUILD_DIR/bench"
for b in bench_train bench_overhead bench_quantize bench_torchscript bench_stream bench_profile; do
  if [[ ! -x "$BIN/$b" ]]; then
    echo "run.sh: $BIN/$b not found; build first (cmake --build $BUILD_DIR --target $b)" >&2
    exit 2
  fi
done

echo "## Machine"
echo "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "nproc:    $(nproc)"
echo "cpu:      $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "memory:   $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
torch_version=$(dpkg-query -W -f='${Version}' libtorch-dev 2>/dev/null || echo unknown)
echo "libtorch: $torch_version (Debian libtorch-dev; build type $(grep -m1 CMAKE_BUILD_TYPE: "$BUILD_DIR/CMakeCache.txt" 2>/dev/null | cut -d= -f2))"
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the runs)"
echo "int8:     $("$BUILD_DIR/bin/mcompress" cpu | head -1)"
echo

status=0
run() {
  echo "\$ $*"
  local start=$SECONDS
  "$@"
  local rc=$?
  echo "(exit $rc, $((SECONDS - start)) s; load now $(cut -d' ' -f1-3 /proc/loadavg))"
  echo
  [[ $rc -ne 0 ]] && status=1
}

if [[ ${QUICK:-0} == 1 ]]; then
  # `make bench QUICK=1`: the peer comparison on 10k images and 1-2 epochs, and the
  # profile of two models on 2k images (a few minutes); the full run does everything.
  echo "## QUICK: ours beside the Python peer, reduced (bench/peers.sh --quick)"
  run bash bench/peers.sh "$BUILD_DIR" --quick
  echo "## QUICK: where the time goes, lenet5 and mlp-300-100 on 2k images (bench_profile)"
  run "$BIN/bench_profile" --model lenet5 --model mlp-300-100 --train-limit 2000
  echo "## QUICK: the Deep Compression table, without latency (bench/compression.sh --quick)"
  run bash bench/compression.sh "$BUILD_DIR" --quick
  exit $status
fi
echo "## Ours beside the Python peer: train, prune, PTQ, QAT, KD (bench/peers.sh)"
run bash bench/peers.sh "$BUILD_DIR"
echo "## Where the time goes: training, evaluation, PTQ and QAT profiled per op (bench_profile)"
run "$BIN/bench_profile"
echo "## Deep Compression table and ORT latency of dense / pruned / pruned INT8 (bench/compression.sh)"
run bash bench/compression.sh "$BUILD_DIR"
echo "## Training (full Fashion-MNIST: 55k train / 5k validation / 10k test)"
# shellcheck disable=SC2086
run "$BIN/bench_train" ${BENCH_TRAIN_ARGS:-}
echo "## Executor overhead vs hand-written LibTorch modules"
# shellcheck disable=SC2086
run "$BIN/bench_overhead" ${BENCH_OVERHEAD_ARGS:-}
echo "## Pruning (recipes in bench/recipes/prune_*.json; baselines cached in $BUILD_DIR/cache)"
run bash bench/prune.sh "$BUILD_DIR"
echo "## INT8 quantization: accuracy, ONNX Runtime and LibTorch latency FP32 vs INT8 (bench/quant.sh)"
run bash bench/quant.sh "$BUILD_DIR"
echo "## INT8 targets: portable vs full-range accuracy and ONNX Runtime latency (bench/int8_targets.sh)"
run bash bench/int8_targets.sh "$BUILD_DIR"
echo "## INT8 layers that do not pay in ONNX Runtime kept FP32 (bench/latency_fallback.sh)"
run bash bench/latency_fallback.sh "$BUILD_DIR"
echo "## QAT vs PTQ: accuracy of quantize-qat against per-tensor / per-channel PTQ (bench/qat.sh)"
run bash bench/qat.sh "$BUILD_DIR"
echo "## Distillation: half-width lenet5 alone vs distilled from a convnet, 3 seeds (bench/distill.sh)"
run bash bench/distill.sh "$BUILD_DIR"
echo "## Calibrators: minmax, percentile, mse, entropy on convnet, lenet5, resnet8 (bench/calibrators.sh)"
run bash bench/calibrators.sh "$BUILD_DIR"
echo "## Data-parallel training and mixed precision: 1 vs 2 processes, AMP on/off (bench/scaling.sh)"
run bash bench/scaling.sh "$BUILD_DIR"
echo "## Calibration memory: peak RSS for 512 vs 32,768 calibration samples (bench/calib_memory.sh)"
run bash bench/calib_memory.sh "$BUILD_DIR"
echo "## Streaming data: peak RSS and throughput of 60k vs 6k images, streamed vs in memory (bench/stream.sh)"
run bash bench/stream.sh "$BUILD_DIR"
exit $status
