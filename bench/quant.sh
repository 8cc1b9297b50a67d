#!/usr/bin/env bash
# INT8 benchmarks (issue 3): ONNX Runtime latency of FP32 vs INT8 QDQ exports for the
# zoo convnet (quantized by bench/recipes/quant_convnet_ptq.json on full Fashion-MNIST,
# accuracy in its report) and torchvision resnet18 (random weights, imported from
# TorchScript, calibrated on seeded noise by bench_quantize), batch 1 and 32, median of
# 5 repetitions of 50-run medians (bench/ort_latency.js). Then LibTorch: FP32 vs real
# INT8 (ONEDNN) TorchScript when bench_torchscript is built.
# Usage: bench/quant.sh [BUILD_DIR]
set -u
BUILD_DIR=${1:-build}
MC="$BUILD_DIR/bin/mcompress"
OUT=${BENCH_OUT:-$BUILD_DIR/bench-out}
mkdir -p "$OUT"
status=0

echo "\$ $MC run bench/recipes/quant_convnet_ptq.json --out $OUT/quant_convnet --cache-dir $BUILD_DIR/cache"
"$MC" run bench/recipes/quant_convnet_ptq.json --out "$OUT/quant_convnet" \
  --cache-dir "$BUILD_DIR/cache" > "$OUT.quant_convnet.log" 2>&1 || status=1
[[ -f "$OUT/quant_convnet/report.md" ]] &&
  sed -n '/^## Stages/,/^## Latency/p' "$OUT/quant_convnet/report.md" | sed '$d'
tail -4 "$OUT.quant_convnet.log"

FIX="$BUILD_DIR/fixtures/torchscript"
if [[ ! -f "$FIX/resnet18.pt" ]]; then
  /usr/bin/python3 tests/fixtures/make_torchscript.py "$FIX" > /dev/null || status=1
fi
echo "\$ $BUILD_DIR/bench/bench_quantize $FIX/resnet18.pt $OUT/quant_resnet18 --input-shape 1,3,224,224"
"$BUILD_DIR/bench/bench_quantize" "$FIX/resnet18.pt" "$OUT/quant_resnet18" \
  --input-shape 1,3,224,224 || status=1

for m in quant_convnet quant_resnet18; do
  for rep in 1 2 3 4 5; do
    node bench/ort_latency.js --batch 1,32 --runs 50 --warmup 10 \
      "$OUT/$m/fp32.onnx" "$OUT/$m/int8.onnx" > "$OUT.$m.ort.$rep.md" || status=1
  done
  echo "### ORT latency, $m (5 repetitions)"
  cat "$OUT.$m.ort.1.md"
  for rep in 2 3 4 5; do grep -E '^\| .*int8' "$OUT.$m.ort.$rep.md"; done
done

if [[ -x "$BUILD_DIR/bench/bench_torchscript" ]]; then
  for m in quant_convnet quant_resnet18; do
    "$BUILD_DIR/bench/bench_torchscript" "$OUT/$m/int8.onnx" || status=1
  done
fi
exit $status
