#!/usr/bin/env bash
# Data-parallel training (issue 15): samples/s of the zoo convnet's training on full
# Fashion-MNIST for 1 process of 1 thread, 2 processes of 1 thread each (mcompress run
# --nproc 2, c10d Gloo on 127.0.0.1) and 1 process of 2 threads; scaling efficiency =
# (2-process samples/s) / (2 x 1-process samples/s). Then mixed precision ("amp": true,
# bfloat16 autocast) vs float32 on 2 threads and on 2 processes: speed and
# validation/test top-1.
# Usage: bench/scaling.sh [BUILD_DIR]   (EPOCHS=2 by default)
set -u
BUILD_DIR=${1:-build}
EPOCHS=${EPOCHS:-2}
MC="$BUILD_DIR/bin/mcompress"
OUT=${BENCH_OUT:-$BUILD_DIR/bench-out}/scaling
mkdir -p "$OUT"
status=0
echo "$("$MC" cpu | head -1)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $(date -u +%FT%TZ); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
# report.json -> "samples/s val% test% seconds world"
metrics() {
  node -e 'const r=require(require("path").resolve(process.argv[1]));
    const s=r.stages[0], pct=x=>(100*x).toFixed(2);
    console.log(s.stats.samples_per_second.toFixed(0), pct(s.stats.val_accuracy), pct(s.metrics.top1),
      s.seconds.toFixed(0), r.world_size)' "$1"
}
variant() {  # name global-args... -- run-args...
  local name=$1; shift
  local pre=()
  while [[ $# -gt 0 && $1 != -- ]]; do pre+=("$1"); shift; done
  shift || true
  "$MC" "${pre[@]}" run bench/recipes/scaling.json --out "$OUT/$name" --progress off \
    --set "stages[0].epochs=$EPOCHS" "$@" > "$OUT/$name.log" 2>&1 || {
      status=1; echo "($name failed: $(tail -1 "$OUT/$name.log"))"; return; }
  read -r sps val test secs world < <(metrics "$OUT/$name/report.json")
  echo "| $name | $world | $sps | $val | $test | $secs |"
  eval "SPS_${name//[^a-zA-Z0-9]/_}=$sps"
}
echo
echo "| run | processes | train samples/s | val top-1 % | test top-1 % | stage s |"
echo "|---|---:|---:|---:|---:|---:|"
variant 1proc-1thread --threads 1 --
variant 2proc-1thread-each --threads 1 -- --nproc 2
variant 2proc-sync-bn --threads 1 -- --nproc 2 --set distributed.sync_batchnorm=true
variant 1proc-2threads --threads 2 --
variant 1proc-2threads-amp --threads 2 -- --set 'stages[0].amp=true'
variant 2proc-1thread-each-amp --threads 1 -- --nproc 2 --set 'stages[0].amp=true'
echo
if [[ -n ${SPS_1proc_1thread:-} && -n ${SPS_2proc_1thread_each:-} ]]; then
  echo "scaling efficiency (2 processes vs 2 x 1): $(node -e "console.log((100*$SPS_2proc_1thread_each/(2*$SPS_1proc_1thread)).toFixed(0))")%"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
