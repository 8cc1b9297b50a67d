#!/usr/bin/env bash
# A compression table in the style of Deep Compression (issue 17; Han et al., ICLR 2016,
# tables 1-2) for mlp-300-100 and lenet5 on full Fashion-MNIST: the recipes
# bench/recipes/deep_compression_*.json (baseline -> 92% global magnitude pruning with
# fine-tuning -> INT8 PTQ) run with `mcompress run`; from each report: accuracy and size
# after every step, the exported files' bytes (dense FP32 ONNX; pruned FP32 with sparse
# initializers; pruned INT8 QDQ) and the compact estimate (the report's bytes_compact:
# bitmask or 4-bit relative indices, a format ONNX cannot store). Then ONNX Runtime
# latency of the three files (bench/ort_latency.js, 5 interleaved repetitions).
# Usage: bench/compression.sh [BUILD_DIR] [--quick]   (--quick: the table only, no latency)
set -u
BUILD_DIR=${1:-build}
QUICK=0
[[ ${2:-} == --quick ]] && QUICK=1
MC="$BUILD_DIR/bin/mcompress"
OUT=${BENCH_OUT:-$BUILD_DIR/bench-out}/compression
mkdir -p "$OUT"
status=0
echo "$("$MC" cpu | head -1)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); date: $(date -u '+%Y-%m-%d %H:%M UTC'); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for m in mlp lenet5; do
  model=$([[ $m == mlp ]] && echo mlp-300-100 || echo lenet5)
  "$MC" run "bench/recipes/deep_compression_$m.json" --out "$OUT/$m" --cache-dir "$BUILD_DIR/cache" \
    --progress quiet > "$OUT/$m.log" 2>&1
  rc=$?
  # exit 3: the recipe ran but missed its acceptance (max_accuracy_drop 0.5 pt): a row
  # all the same, and a non-zero status for the script, as bench/prune.sh does.
  if [[ $rc -eq 3 ]]; then
    echo "compression.sh: $model missed its acceptance criteria: $(grep -m1 -i 'verdict\|FAIL' "$OUT/$m/report.md" 2>/dev/null)"
    status=1
  elif [[ $rc -ne 0 ]]; then
    echo "compression.sh: $model recipe failed (exit $rc), see $OUT/$m.log"; status=1
  fi
  # The dense FP32 file: its size depends on the shapes only, so the zoo model's export
  # has the trained baseline's byte count.
  "$MC" export "zoo:$model" -o "$OUT/$m/dense_fp32.onnx" > /dev/null 2>&1 || status=1
done
node - "$OUT" <<'JS' || status=1
const fs = require('fs'), path = require('path');
const out = process.argv[2];
const kb = (b) => (b / 1024).toFixed(1);
const x = (a, b) => (a / b).toFixed(1) + '×';
console.log('\n| model | step | top-1 % | drop pt | non-zero weights | file | bytes | vs dense FP32 file |');
console.log('|---|---|---:|---:|---:|---|---:|---:|');
for (const [m, model] of [['mlp', 'mlp-300-100'], ['lenet5', 'lenet5']]) {
  const r = JSON.parse(fs.readFileSync(path.join(out, m, 'report.json'), 'utf8'));
  const dense = fs.statSync(path.join(out, m, 'dense_fp32.onnx')).size;
  const base = r.baseline, st = r.stages;
  const pruned = st.filter((s) => s.pass === 'train').pop();  // the fine-tuned pruned model
  const q = st[st.length - 1];
  const file = (name) => r.exports.find((e) => e.path === name);
  const pct = (s) => (100 * s.metrics.top1).toFixed(2);
  const drop = (s) => (100 * (base.metrics.top1 - s.metrics.top1)).toFixed(2);
  const nz = (s) => `${s.size.nonzeros.toLocaleString('en')} of ${s.size.parameters.toLocaleString('en')}`;
  const f32 = file('pruned_fp32.onnx'), i8 = file('pruned_int8.onnx');
  console.log(`| ${model} | baseline | ${pct(base)} | — | ${nz(base)} | dense FP32 ONNX | ${dense.toLocaleString('en')} | 1.0× |`);
  console.log(`| ${model} | pruned 92% + fine-tuned | ${pct(pruned)} | ${drop(pruned)} | ${nz(pruned)} | FP32 ONNX, sparse initializers | ${f32.bytes.toLocaleString('en')} | ${x(dense, f32.bytes)} |`);
  console.log(`| ${model} | + INT8 PTQ | ${pct(q)} | ${drop(q)} | ${nz(q)} | INT8 QDQ ONNX, sparse initializers | ${i8.bytes.toLocaleString('en')} | ${x(dense, i8.bytes)} |`);
  console.log(`| ${model} | + INT8 PTQ | ${pct(q)} | ${drop(q)} | ${nz(q)} | compact estimate (bitmask / 4-bit relative indices) | ${q.size.bytes_compact.toLocaleString('en')} | ${x(dense, q.size.bytes_compact)} |`);
}
JS
if ((!QUICK)); then
  for m in mlp lenet5; do
    echo; echo "ORT latency, $m: dense FP32 vs pruned FP32 vs pruned INT8 QDQ"
    node bench/ort_latency.js --batch 1,32 --runs 100 --warmup 20 --reps 5 \
      "$OUT/$m/dense_fp32.onnx" "$OUT/$m/pruned_fp32.onnx" "$OUT/$m/pruned_int8.onnx" || status=1
  done
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
