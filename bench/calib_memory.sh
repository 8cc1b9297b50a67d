#!/usr/bin/env bash
# Calibration memory (issue 12): peak RSS of a quantize run with 512 and with 32,768
# calibration samples and each calibration method. Calibration streams its batches
# (indices only; each batch gathered when it runs), so the peak should not grow with the
# sample count: the acceptance is a difference below 10%. The baseline training is
# cached (bench/recipes/int8_target.json's train stage), so only quantization differs.
# Usage: bench/calib_memory.sh [BUILD_DIR] [MODEL]
set -u
BUILD_DIR=${1:-build}
MODEL=${2:-convnet}
MC="$BUILD_DIR/bin/mcompress"
OUT=${BENCH_OUT:-$BUILD_DIR/bench-out}/calib_memory
mkdir -p "$OUT"
status=0
echo "$("$MC" cpu | head -1)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
# Warm the baseline cache first so both measured runs only load it.
"$MC" run bench/recipes/int8_target.json --out "$OUT/warm" --cache-dir "$BUILD_DIR/cache" \
  --set "model=zoo:$MODEL" > "$OUT/warm.log" 2>&1 || { echo "warm-up failed: $(tail -1 "$OUT/warm.log")"; exit 1; }
echo
echo "| model | calibration | samples | peak RSS MiB | quantize stage s |"
echo "|---|---|---:|---:|---:|"
for method in minmax entropy; do
  declare -A rss=()
  for n in 512 32768; do
    log="$OUT/$method.$n.log"
    /usr/bin/time -f 'peak_rss_kb %M' "$MC" run bench/recipes/int8_target.json --out "$OUT/$method.$n" \
      --cache-dir "$BUILD_DIR/cache" --set "model=zoo:$MODEL" --set "stages[1].calibration=$method" \
      --set "stages[1].samples=$n" > "$log" 2>&1 || { status=1; echo "($method $n failed: $(tail -1 "$log"))"; continue; }
    kb=$(awk '/^peak_rss_kb/ {print $2}' "$log")
    rss[$n]=$kb
    secs=$(node -e 'const r=require(require("path").resolve(process.argv[1])); console.log(r.stages[1].seconds.toFixed(1))' "$OUT/$method.$n/report.json")
    echo "| $MODEL | $method | $n | $(awk "BEGIN {printf \"%.0f\", $kb / 1024}") | $secs |"
  done
  if [[ -n ${rss[512]:-} && -n ${rss[32768]:-} ]]; then
    awk -v a="${rss[512]}" -v b="${rss[32768]}" -v m="$method" \
      'BEGIN {d = 100 * (b - a) / a; printf "(%s: 32,768 vs 512 samples: %+.1f%% peak RSS)\n", m, d; exit (d < 10 && d > -10) ? 0 : 1}' || status=1
  fi
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
