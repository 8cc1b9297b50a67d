#!/usr/bin/env bash
# quantize's latency_fallback (issue 12): per zoo model, the INT8 recipe
# (bench/recipes/int8_target.json: train 3 epochs on full Fashion-MNIST, quantize
# portable, evaluate) plain and with latency_fallback at batch 32 / 1 thread; prints the
# pass's per-layer scan and choice, both files' test top-1, then ONNX Runtime latency
# of FP32, all-INT8 and latency-aware INT8 side by side at batch 1 and 32
# (bench/ort_latency.js, medians of 100 runs, 1 and 2 threads).
# Usage: bench/latency_fallback.sh [BUILD_DIR] [MODEL ...]
set -u
BUILD_DIR=${1:-build}
shift || true
MODELS=("$@")
[[ ${#MODELS[@]} -eq 0 ]] && MODELS=(lenet5 mobilenet-tiny convnet resnet8)
MC="$BUILD_DIR/bin/mcompress"
OUT=${BENCH_OUT:-$BUILD_DIR/bench-out}/latency_fallback
mkdir -p "$OUT"
status=0
echo "$("$MC" cpu | head -1)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
scan() {  # report.json -> the quantize stage's latency rows and stats
  node -e 'const r=require(require("path").resolve(process.argv[1]));
    const q=r.stages.find((s)=>s.pass==="quantize"); const f=r.stages[r.stages.length-1];
    const st=q.stats;
    console.log(`all INT8 ${st.ort_int8_ms.toFixed(3)} ms, chosen ${st.ort_chosen_ms.toFixed(3)} ms, FP32 ${st.ort_fp32_ms.toFixed(3)} ms; ` +
      `${st.layers_fp32_for_latency} layer(s) kept FP32 (confirmed ${st.latency_confirmed}); test top-1 ${(100*f.metrics.top1).toFixed(2)}%`);
    for (const t of q.latency_trials) console.log(`  scan ${t.step} ${t.layer}: ${t.ms.toFixed(3)} ms with it FP32, saving ${(100*t.saving).toFixed(1)}%${t.fp32 ? " -> FP32" : ""}`);' "$1"
}
top1() {
  node -e 'const r=require(require("path").resolve(process.argv[1])); const f=r.stages[r.stages.length-1];
    console.log((100*f.metrics.top1).toFixed(2))' "$1"
}
for m in "${MODELS[@]}"; do
  echo
  echo "### $m"
  "$MC" run bench/recipes/int8_target.json --out "$OUT/$m.plain" --cache-dir "$BUILD_DIR/cache" \
    --set "model=zoo:$m" > "$OUT/$m.plain.log" 2>&1 || { status=1; echo "($m plain failed: $(tail -1 "$OUT/$m.plain.log"))"; continue; }
  "$MC" run bench/recipes/int8_target.json --out "$OUT/$m.latency" --cache-dir "$BUILD_DIR/cache" \
    --set "model=zoo:$m" --set 'stages[1].latency_fallback={"batch": 32, "threads": 1}' \
    > "$OUT/$m.latency.log" 2>&1 || { status=1; echo "($m latency failed: $(tail -1 "$OUT/$m.latency.log"))"; continue; }
  echo "plain INT8 test top-1 $(top1 "$OUT/$m.plain/report.json")%"
  scan "$OUT/$m.latency/report.json"
  cp "$OUT/$m.plain/int8.onnx" "$OUT/$m.int8_all.onnx"
  cp "$OUT/$m.latency/int8.onnx" "$OUT/$m.int8_latency.onnx"
  for threads in 1 2; do
    node bench/ort_latency.js --batch 1,32 --runs 100 --warmup 20 --threads "$threads" \
      "$OUT/$m.plain/fp32.onnx" "$OUT/$m.int8_all.onnx" "$OUT/$m.int8_latency.onnx" || status=1
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
