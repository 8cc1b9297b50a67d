#!/usr/bin/env bash
# Issue 12's imported-model row: torchvision resnet18 (random weights, traced by
# tests/fixtures/make_torchscript.py, 3x224x224) quantized by bench_quantize (calibrated
# on seeded noise; no labelled data of that shape here) plain and with quantize's
# latency_fallback at batch 1 / 1 thread, then ONNX Runtime latency of FP32, all-INT8 and
# latency-aware INT8 at batch 1 and 32, 1 and 2 threads (bench/ort_latency.js).
# Usage: bench/resnet18_int8.sh [BUILD_DIR]
set -u
BUILD_DIR=${1:-build}
MC="$BUILD_DIR/bin/mcompress"
OUT=${BENCH_OUT:-$BUILD_DIR/bench-out}/resnet18_int8
FIX="$BUILD_DIR/fixtures/torchscript"
mkdir -p "$OUT"
status=0
echo "$("$MC" cpu | head -1)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ ! -f "$FIX/resnet18.pt" ]]; then
  /usr/bin/python3 tests/fixtures/make_torchscript.py "$FIX" > /dev/null || exit 1
fi
"$BUILD_DIR/bench/bench_quantize" "$FIX/resnet18.pt" "$OUT/plain" --input-shape 1,3,224,224 || status=1
"$BUILD_DIR/bench/bench_quantize" "$FIX/resnet18.pt" "$OUT/latency" --input-shape 1,3,224,224 \
  --options '{"latency_fallback": {"batch": 1, "threads": 1, "rounds": 3, "runs": 10}}' || status=1
cp "$OUT/plain/int8.onnx" "$OUT/int8_all.onnx"
cp "$OUT/latency/int8.onnx" "$OUT/int8_latency.onnx"
for threads in 1 2; do
  node bench/ort_latency.js --batch 1,32 --runs 10 --warmup 2 --threads "$threads" \
    "$OUT/plain/fp32.onnx" "$OUT/int8_all.onnx" "$OUT/int8_latency.onnx" || status=1
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
