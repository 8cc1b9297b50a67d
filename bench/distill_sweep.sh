#!/usr/bin/env bash
# Distillation settings chosen on the validation split (issue 13): the half-width lenet5
# student of bench/distill.sh (3 epochs, SGD momentum 0.9, lr 0.05, cosine), trained
# alone and distilled with the pass's safe defaults (1 warm-up epoch, gradient norm 5)
# at each temperature T, soft weight alpha, warm-up length, gradient-norm clip and
# warm-up/schedule combination, over seeds. Prints per run the validation top-1 (the last
# epoch's), the test top-1 and the steps the clip scaled down, then per setting the mean
# validation top-1 and the mean/min/max test gain over alone, and which setting the
# validation picks. TERMS adds feature-hint and attention-transfer terms (issue 13) on
# top of the default KD settings, one variant per name of TERM_SET below.
# Usage: bench/distill_sweep.sh [BUILD_DIR]
#   (TEMPS="2 4 8" ALPHAS="0.5 0.9" WARMUPS="1" CLIPS="5" AFTERS="false" SEEDS="0 1 2"
#   TERMS="" by default; an empty TEMPS="" runs no T/alpha grid, e.g.
#   TEMPS= TERMS="at-relu hint-pool")
set -u
BUILD_DIR=${1:-build}
read -r -a TEMPS <<< "${TEMPS-2 4 8}"
read -r -a ALPHAS <<< "${ALPHAS:-0.5 0.9}"
read -r -a WARMUPS <<< "${WARMUPS:-1}"
read -r -a CLIPS <<< "${CLIPS:-5}"
# schedule_after_warmup: false (the warm-up scales the cosine from step 0) and/or true
# (the cosine starts at the full rate when the warm-up ends); true adds "-after" to names.
read -r -a AFTERS <<< "${AFTERS:-false}"
read -r -a SEEDS <<< "${SEEDS:-0 1 2}"
read -r -a TERMS <<< "${TERMS:-}"
# Student/teacher value pairs of the half-width lenet5 and the convnet: Relu [N,3,28,28] /
# [N,32,28,28], MaxPool [N,3,14,14] / [N,32,14,14] (hints through a learned 1x1 adapter),
# fc1 [N,60] / [N,128] (a linear adapter).
declare -A TERM_SET=(
  [at-relu]='stages[0].attention=[{"student":"Relu","teacher":"Relu","weight":2}]'
  [at-pool]='stages[0].attention=[{"student":"MaxPool","teacher":"MaxPool","weight":2}]'
  [hint-pool]='stages[0].features=[{"student":"MaxPool","teacher":"MaxPool","weight":1}]'
  [hint-fc1]='stages[0].features=[{"student":"fc1","teacher":"fc1","weight":0.5}]'
)
MC="$(cd "$(dirname "$BUILD_DIR/bin/mcompress")" && pwd)/mcompress"
OUT=$(realpath -m "${BENCH_OUT:-$BUILD_DIR/bench-out}/distill_sweep")
TEACHER_DIR=$(realpath -m "${BENCH_OUT:-$BUILD_DIR/bench-out}/distill/teacher")
mkdir -p "$OUT"
echo "$("$MC" cpu | head -1)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ ! -f $TEACHER_DIR/teacher.onnx ]]; then
  "$MC" run bench/recipes/distill_teacher.json --out "$TEACHER_DIR" --cache-dir "$BUILD_DIR/cache" \
    > "$OUT/teacher.log" 2>&1 || { echo "teacher failed: $(tail -1 "$OUT/teacher.log")"; exit 1; }
fi
result() {  # report.json -> "test_top1 val_top1" in %, then the clipped steps of the run
  node -e 'const r=require(require("path").resolve(process.argv[1])); const s=r.stages[0];
    console.log((100*r.stages[r.stages.length-1].metrics.top1).toFixed(2), (100*s.stats.val_accuracy).toFixed(2),
      s.stats.clipped_steps || 0)' "$1"
}
rows="$OUT/rows.txt"
: > "$rows"
run() {  # name seed sets...
  local name=$1 seed=$2
  shift 2
  local dir="$OUT/$name.$seed"
  if "$MC" run bench/recipes/distill_student.json --out "$dir" --set "seed=$seed" \
       --set "teacher=$TEACHER_DIR/teacher.onnx" "$@" > "$dir.log" 2>&1; then
    read -r test val clipped < <(result "$dir/report.json")
    echo "$name $seed $val $test $clipped" | tee -a "$rows"
  else
    echo "$name $seed failed: $(tail -1 "$dir.log")"
  fi
}
echo "setting seed val% test% clipped-steps"
for seed in "${SEEDS[@]}"; do run alone "$seed"; done
for t in "${TEMPS[@]}"; do
  for a in "${ALPHAS[@]}"; do
    for w in "${WARMUPS[@]}"; do
      for c in "${CLIPS[@]}"; do
        for after in "${AFTERS[@]}"; do
          for seed in "${SEEDS[@]}"; do
            run "kd-T$t-a$a-w$w-c$c$([[ $after == true ]] && echo -after)" "$seed" \
              --set 'stages[0].pass=distill' --set "stages[0].temperature=$t" \
              --set "stages[0].alpha=$a" --set "stages[0].warmup_epochs=$w" \
              --set "stages[0].max_grad_norm=$c" --set "stages[0].schedule_after_warmup=$after"
          done
        done
      done
    done
  done
done
for term in "${TERMS[@]}"; do
  [[ -n ${TERM_SET[$term]:-} ]] || { echo "unknown TERMS entry $term (known: ${!TERM_SET[*]})"; exit 2; }
  for seed in "${SEEDS[@]}"; do
    run "kd-$term" "$seed" --set 'stages[0].pass=distill' --set "${TERM_SET[$term]}"
  done
done
echo
node -e '
  const lines = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => l.split(" "));
  const by = {};
  for (const [name, seed, val, test] of lines) (by[name] = by[name] || {})[seed] = { val: +val, test: +test };
  const alone = by.alone || {};
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  console.log("| setting | mean val % | mean test % | test gain over alone: mean (min, max) pt |");
  console.log("|---|---:|---:|---|");
  let best = null;
  for (const [name, seeds] of Object.entries(by)) {
    const ks = Object.keys(seeds);
    const gains = ks.filter((k) => alone[k]).map((k) => seeds[k].test - alone[k].test);
    const v = mean(ks.map((k) => seeds[k].val)), t = mean(ks.map((k) => seeds[k].test));
    console.log(`| ${name} | ${v.toFixed(2)} | ${t.toFixed(2)} | ${name === "alone" ? "—" : `${mean(gains) >= 0 ? "+" : ""}${mean(gains).toFixed(2)} (${Math.min(...gains).toFixed(2)}, ${Math.max(...gains).toFixed(2)})`} |`);
    if (name !== "alone" && (!best || v > best.v)) best = { name, v };
  }
  console.log(`validation picks: ${best ? best.name : "none"}`);' "$rows"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
