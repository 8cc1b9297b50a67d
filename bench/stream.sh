#!/usr/bin/env bash
# Streaming loader (issue 14): Fashion-MNIST written as PNG image folders of 60k and 6k
# training images (1k test each), then for each size, in memory and streamed:
#   1. bench_stream loader: one shuffled epoch of batches, no model (the data path alone);
#   2. mcompress run bench/recipes/stream_epoch.json: a lenet5 training epoch, under
#      /usr/bin/time for the peak RSS.
# Acceptance: the streamed epoch's peak RSS over 60k images is below 2x that over 6k.
# Usage: bench/stream.sh [BUILD_DIR]
set -u
BUILD_DIR=${1:-build}
MC="$BUILD_DIR/bin/mcompress"
BS="$BUILD_DIR/bench/bench_stream"
DATA="$BUILD_DIR/bench-data"
OUT=${BENCH_OUT:-$BUILD_DIR/bench-out}/stream
mkdir -p "$OUT" "$DATA"
status=0
echo "$("$MC" cpu | head -1)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in 60000 6000; do
  root="$DATA/fmnist-png-$((n / 1000))k"
  if [[ ! -f "$root/.complete" ]]; then
    rm -rf "$root"
    start=$SECONDS
    "$BS" write /usr/share/datasets/fashion-mnist "$root" "$n" 1000 || exit 1
    touch "$root/.complete"
    echo "(wrote $root: $n + 1000 PNGs in $((SECONDS - start)) s)"
  fi
done
echo
echo "Data path alone (bench_stream loader, batch 128, workers/prefetch):"
echo
echo "| folder | train images | mode | workers/prefetch | load s | epoch s | images/s | peak RSS MiB | checksum |"
echo "|---|---:|---|---|---:|---:|---:|---:|---:|"
for n in 60 6; do
  for mode in memory stream; do
    "$BS" loader "$DATA/fmnist-png-${n}k" "$mode" 128 2 4 || status=1
  done
done
echo
echo "A lenet5 training epoch (mcompress run bench/recipes/stream_epoch.json):"
echo
echo "| train images | mode | wall s | train stage s | images/s in the epoch | peak RSS MiB | test top-1 |"
echo "|---:|---|---:|---:|---:|---:|---:|"
declare -A rss=()
for n in 60 6; do
  for mode in memory stream; do
    log="$OUT/$mode.$n.log"
    streaming=false
    [[ $mode == stream ]] && streaming=true
    start=$(date +%s.%N)
    /usr/bin/time -f 'peak_rss_kb %M' "$MC" run bench/recipes/stream_epoch.json --out "$OUT/$mode.$n" \
      --set "data.root=$(realpath "$DATA/fmnist-png-${n}k")" --set "data.streaming=$streaming" \
      --progress quiet > "$log" 2>&1 || { status=1; echo "($mode $n failed: $(tail -1 "$log"))"; continue; }
    wall=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
    kb=$(awk '/^peak_rss_kb/ {print $2}' "$log")
    rss[$mode.$n]=$kb
    node -e '
      const r = require(require("path").resolve(process.argv[1]));
      const s = r.stages[0], n = +process.argv[2] * 1000;
      console.log(`| ${n} | ${process.argv[3]} | ${process.argv[4]} | ${s.seconds.toFixed(1)} | ` +
                  `${(n / s.seconds).toFixed(0)} | ${(+process.argv[5] / 1024).toFixed(0)} | ` +
                  `${(100 * s.metrics.top1).toFixed(2)}% |`);' \
      "$OUT/$mode.$n/report.json" "$n" "$mode" "$wall" "$kb"
  done
done
for mode in memory stream; do
  if [[ -n ${rss[$mode.60]:-} && -n ${rss[$mode.6]:-} ]]; then
    awk -v a="${rss[$mode.6]}" -v b="${rss[$mode.60]}" -v m="$mode" \
      'BEGIN {printf "(%s: peak RSS 60k / 6k images = %.2fx)\n", m, b / a}'
  fi
done
if [[ -n ${rss[stream.60]:-} && -n ${rss[stream.6]:-} ]]; then
  awk -v a="${rss[stream.6]}" -v b="${rss[stream.60]}" 'BEGIN {exit (b < 2 * a) ? 0 : 1}' || status=1
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
