#!/usr/bin/env bash
# Runs the libFuzzer targets built in SAN_DIR/fuzz (TARGETS, default all four) for SECONDS
# each, JOBS at a time (`make fuzz`; `make fuzz FUZZ_TARGETS="recipe idx"`). Seeds come
# from fuzz_seeds (the tests' models, recipes and data); each target's corpus grows in SAN_DIR/fuzz/corpus/<target>, its log is
# SAN_DIR/fuzz/logs/<target>.log and a crashing input lands in SAN_DIR/fuzz/crashes/.
# Prints one line per target (executions, coverage, features, corpus) and exits 1 when
# any target found a crash, a leak or a timeout.
set -uo pipefail
SAN_DIR=${1:?usage: run_fuzz.sh SAN_DIR SECONDS JOBS [TARGETS]}
SECONDS_EACH=${2:-600}
JOBS=${3:-2}
TARGETS=${4:-onnx recipe torchscript idx}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FUZZ="$SAN_DIR/fuzz"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export LSAN_OPTIONS="suppressions=$ROOT/tools/sanitizers/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
export OMP_NUM_THREADS=1

rm -rf "$FUZZ/seeds"
"$FUZZ/fuzz_seeds" "$ROOT" "$FUZZ/seeds" || exit 1
mkdir -p "$FUZZ/logs" "$FUZZ/crashes"
grep -o -w 'avx2\|avx512f\|avx512_vnni\|avx_vnni\|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ' |
  sed 's/^/fuzz: cpu flags: /; s/ $/\n/'
echo "fuzz: commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)," \
     "$SECONDS_EACH s per target, $JOBS at a time, load $(cut -d' ' -f1-3 /proc/loadavg)"

run_one() {
  local t=$1
  mkdir -p "$FUZZ/corpus/$t" "$FUZZ/crashes/$t"
  # -rss_limit_mb: a reader that allocates what a file declares is a finding.
  # -timeout: one input taking 30 s is a finding (a hang).
  "$FUZZ/fuzz_$t" "$FUZZ/corpus/$t" "$FUZZ/seeds/$t" -max_total_time="$SECONDS_EACH" \
    -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 -artifact_prefix="$FUZZ/crashes/$t/" \
    >"$FUZZ/logs/$t.log" 2>&1
  local rc=$?
  local stats
  stats=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$FUZZ/logs/$t.log" | tail -1)
  local execs
  execs=$(grep -E '^stat::number_of_executed_units' "$FUZZ/logs/$t.log" | awk '{print $2}')
  local crashes
  crashes=$(find "$FUZZ/crashes/$t" -type f | wc -l)
  echo "fuzz_$t: exit $rc, $execs executions, last status: $stats, crash files: $crashes"
  return $rc
}

status=0
pids=()
names=()
for t in $TARGETS; do
  run_one "$t" > "$FUZZ/logs/$t.summary" &
  pids+=($!)
  names+=("$t")
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || status=1
  cat "$FUZZ/logs/${names[$i]}.summary"
done
exit $status
