#!/usr/bin/env bash
# Distillation (issue 13): a half-width lenet5 trained alone vs distilled from a convnet
# teacher (T = 4, alpha = 0.9), same epochs and optimizer (SGD momentum 0.9, lr 0.05,
# cosine), over seeds; "textbook" KD has no warm-up and no clipping, "safe" KD adds the
# pass's defaults (1 warm-up epoch, gradient norm 5). Test and validation top-1 on full
# Fashion-MNIST; nothing here is tuned (the settings are the issue's).
# Usage: bench/distill.sh [BUILD_DIR] [SEEDS...]   (default seeds 0 1 2)
set -u
BUILD_DIR=${1:-build}
shift || true
SEEDS=("$@")
[[ ${#SEEDS[@]} -eq 0 ]] && SEEDS=(0 1 2)
MC="$(cd "$(dirname "$BUILD_DIR/bin/mcompress")" && pwd)/mcompress"
OUT=$(realpath -m "${BENCH_OUT:-$BUILD_DIR/bench-out}/distill")
mkdir -p "$OUT"
status=0
echo "$("$MC" cpu | head -1)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ ! -f $OUT/teacher/teacher.onnx ]]; then
  "$MC" run bench/recipes/distill_teacher.json --out "$OUT/teacher" --cache-dir "$BUILD_DIR/cache" \
    > "$OUT/teacher.log" 2>&1 || { echo "teacher failed: $(tail -1 "$OUT/teacher.log")"; exit 1; }
fi
result() {  # report.json -> "test_top1 stage0_val_top1 stage0_seconds"
  node -e 'const r=require(require("path").resolve(process.argv[1])); const s=r.stages[0];
    const v=s.stats.val_accuracy; console.log((100*r.stages[r.stages.length-1].metrics.top1).toFixed(2),
    v===undefined?"-":(100*v).toFixed(2), s.seconds.toFixed(0))' "$1"
}
echo "teacher (convnet) test top-1 %: $(node -e 'const r=require(require("path").resolve(process.argv[1])); console.log((100*r.stages[r.stages.length-1].metrics.top1).toFixed(2))' "$OUT/teacher/report.json")"
echo
echo "| seed | variant | test top-1 % | val top-1 % (last epoch) | stage s |"
echo "|---:|---|---:|---:|---:|"
for seed in "${SEEDS[@]}"; do
  for variant in alone kd-textbook kd-safe; do
    sets=(--set "seed=$seed" --set "teacher=$OUT/teacher/teacher.onnx")
    case $variant in
      kd-textbook) sets+=(--set 'stages[0].pass=distill' --set 'stages[0].temperature=4' \
                          --set 'stages[0].alpha=0.9' --set 'stages[0].warmup_epochs=0' \
                          --set 'stages[0].max_grad_norm=0') ;;
      kd-safe) sets+=(--set 'stages[0].pass=distill' --set 'stages[0].temperature=4' \
                      --set 'stages[0].alpha=0.9') ;;
    esac
    log="$OUT/$variant.$seed.log"
    if "$MC" run bench/recipes/distill_student.json --out "$OUT/$variant.$seed" "${sets[@]}" > "$log" 2>&1; then
      read -r test val secs < <(result "$OUT/$variant.$seed/report.json")
      echo "| $seed | $variant | $test | $val | $secs |"
    else
      status=1
      echo "| $seed | $variant | failed: $(tail -1 "$log") | | |"
    fi
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
