#!/usr/bin/env bash
# INT8 benchmarks (issue 3): ONNX Runtime latency of FP32 vs INT8 QDQ exports for the
# zoo convnet (quantized by bench/recipes/quant_convnet_ptq.json on full Fashion-MNIST,
# accuracy in its report) and torchvision resnet18 (random weights, imported from
# TorchScript, calibrated on seeded noise by bench_quantize), batch 1 and 32, medians
# of repeated runs (bench/ort_latency.js --reps; convnet 5 x 50 runs, resnet18 3 x 10). Then
# LibTorch: FP32 vs real-INT8 (ONEDNN) TorchScript of the same pairs (bench_torchscript).
# Usage: bench/quant.sh [BUILD_DIR]
set -u
BUILD_DIR=${1:-build}
MC="$BUILD_DIR/bin/mcompress"
OUT=${BENCH_OUT:-$BUILD_DIR/bench-out}
mkdir -p "$OUT"
status=0
"$MC" cpu | head -1

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

# resnet18 at batch 32 takes ~1-2 s per FP32 run here: fewer runs and repetitions.
ort_args() { [[ $1 == quant_resnet18 ]] && echo "--runs 10 --warmup 2 --reps 3" || echo "--runs 50 --warmup 10 --reps 5"; }
for m in quant_convnet quant_resnet18; do
  echo "### ORT latency, $m (FP32 vs INT8 QDQ, repetitions interleaved)"
  # shellcheck disable=SC2046
  node bench/ort_latency.js --batch 1,32 $(ort_args $m) \
    "$OUT/$m/fp32.onnx" "$OUT/$m/int8.onnx" || status=1
done

echo "### LibTorch TorchScript FP32 vs real INT8 (ONEDNN)"
"$BUILD_DIR/bench/bench_torchscript" --onnx "$OUT/quant_convnet/fp32.onnx" \
  --onnx-int8 "$OUT/quant_convnet/int8.onnx" --name convnet || status=1
"$BUILD_DIR/bench/bench_torchscript" --onnx "$OUT/quant_resnet18/fp32.onnx" \
  --onnx-int8 "$OUT/quant_resnet18/int8.onnx" --name resnet18 --reps 5 --runs 3 --warmup 1 || status=1
exit $status
