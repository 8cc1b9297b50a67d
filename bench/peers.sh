#!/usr/bin/env bash
# Ours beside the Python peer (issue 17): the same work on the same split, seed, batch,
# optimizer and thread count, in one script on one machine. Each row: accuracy (test;
# validation where the pipeline reads it), the saved file's size, the pipeline's wall
# time and peak memory (/usr/bin/time -v), and ours/peer. Ours: `mcompress run` of
# bench/recipes/peer_*.json (train, compress, export AND verify every file in ONNX
# Runtime); the peer: bench/peers/peer.py on Debian's python3-torch (stock PyTorch tools;
# it saves TorchScript, and verifies nothing). "peer, 1 BLAS thread" is the peer run
# with OPENBLAS_NUM_THREADS=1, the thread setting ours uses (docs/speed.md).
# Usage: bench/peers.sh [BUILD_DIR] [--quick]   (--quick: 10k training images, fewer epochs)
set -u
BUILD_DIR=${1:-build}
QUICK=0
[[ ${2:-} == --quick ]] && QUICK=1
MC="$(cd "$(dirname "$BUILD_DIR/bin/mcompress")" && pwd)/mcompress"
OUT=$(realpath -m "${BENCH_OUT:-$BUILD_DIR/bench-out}/peers")
PEER="$(cd "$(dirname "$0")" && pwd)/peers/peer.py"
PY=/usr/bin/python3
mkdir -p "$OUT"
for tool in /usr/bin/time "$PY" node; do
  command -v "$tool" >/dev/null || { echo "peers.sh: $tool not found (make deps installs it)" >&2; exit 2; }
done
"$PY" "$PEER" --self-test >/dev/null || exit 2

if ((QUICK)); then
  LIMIT=10000; E=1; FT=1; KD_T=1; KD_E=1
else
  LIMIT=0; E=5; FT=2; KD_T=3; KD_E=3
fi
status=0
echo "$("$MC" cpu | head -1)"
echo "$("$MC" cpu | tail -1)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); python3-torch $(dpkg-query -W -f='${Version}' python3-torch 2>/dev/null); date: $(date -u '+%Y-%m-%d %H:%M UTC'); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "work: $( ((LIMIT)) && echo "$LIMIT" || echo 55000) training images, train $E epochs, fine-tune/QAT $FT, KD teacher $KD_T + student $KD_E"
echo

# timed NAME CMD...: runs CMD under /usr/bin/time -v into $OUT/NAME.{log,time}; prints "wall_s rss_mib"
timed() {
  local name=$1; shift
  if ! /usr/bin/time -v -o "$OUT/$name.time" "$@" > "$OUT/$name.log" 2>&1; then
    echo "$name failed: $(tail -1 "$OUT/$name.log")" >&2
    status=1
    echo "- -"
    return
  fi
  awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; w=s}
              /Maximum resident/ {r=$2/1024} END {printf "%.1f %.0f\n", w, r}' "$OUT/$name.time"
}
# ours NAME RECIPE FILE SETS...: prints "test_top1 bytes wall rss"
ours() {
  local name=$1 recipe=$2 file=$3; shift 3
  rm -rf "$OUT/$name"
  local t
  t=$(timed "$name" "$MC" run "bench/recipes/$recipe" --out "$OUT/$name" --set "data.train_limit=$LIMIT" "$@")
  local acc
  acc=$(node -e 'const r=require(process.argv[1]); const s=r.stages[r.stages.length-1];
    console.log((100*s.metrics.top1).toFixed(2))' "$OUT/$name/report.json" 2>/dev/null || echo -)
  echo "$acc $(stat -c %s "$OUT/$name/$file" 2>/dev/null || echo -) $t"
}
# peer NAME ENV ARGS...: prints "test_top1 bytes wall rss"
peer() {
  local name=$1 envset=$2; shift 2
  mkdir -p "$OUT/$name.files"
  local t
  t=$(timed "$name" env $envset "$PY" "$PEER" "$@" --train-limit "$LIMIT" --out "$OUT/$name.files")
  node -e 'const fs=require("fs"); const l=fs.readFileSync(process.argv[1],"utf8").trim().split("\n").pop();
    const r=JSON.parse(l); const acc=r.final_test!==undefined?r.final_test:r.test;
    const b=r.final_bytes!==undefined?r.final_bytes:r.fp32_bytes;
    console.log(acc.toFixed(2), b, process.argv[2])' "$OUT/$name.log" "$t" 2>/dev/null || echo "- - $t"
}
row() {  # work ours-line peer-line peer1-line
  local work=$1; read -r oa ob ow orr <<<"$2"; read -r pa pb pw prr <<<"$3"
  local ratio
  ratio=$(awk -v a="$ow" -v b="$pw" 'BEGIN {if (a+0>0 && b+0>0) printf "%.2f", a/b; else print "-"}')
  local line="| $work | $oa | $pa | $ob | $pb | $ow | $pw | **$ratio** | $orr | $prr |"
  if [[ -n ${4:-} ]]; then
    read -r qa qb qw qr <<<"$4"
    line+=" $qw ($(awk -v a="$ow" -v b="$qw" 'BEGIN {if (a+0>0 && b+0>0) printf "%.2f", a/b; else print "-"}')) |"
  else
    line+=" |"
  fi
  echo "$line"
}

echo "| work | ours test % | peer test % | ours file bytes | peer file bytes | ours wall s | peer wall s | ours/peer | ours peak MiB | peer peak MiB | peer 1 BLAS thread: wall s (ours/it) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for m in lenet5 mlp-300-100; do
  o=$(ours "train-$m" peer_train.json model.onnx --set "model=zoo:$m" --set "stages[0].epochs=$E")
  p=$(peer "peer-train-$m" "X=1" train "$m" "$E" --save-init)
  q=$(peer "peer1-train-$m" "OPENBLAS_NUM_THREADS=1" train "$m" "$E")
  row "train $m, $E epochs" "$o" "$p" "$q"
  # The very same network: ours imports the peer's initial model (traced TorchScript) and
  # trains it; only the shuffling draws differ from the peer's run.
  o=$(ours "train-$m-peer-init" peer_train.json model.onnx --set "model=$OUT/peer-train-$m.files/peer_init.pt" \
        --set "input_shape=[1,1,28,28]" --set "stages[0].epochs=$E")
  row "train $m, $E epochs, from the peer's initial weights (its traced .pt)" "$o" "$p" "$q"
done
o=$(ours prune-mlp peer_prune.json model.onnx --set "stages[0].epochs=$E" --set "stages[2].epochs=$FT")
p=$(peer peer-prune-mlp "X=1" prune mlp-300-100 "$E" 0.9 "$FT")
row "mlp-300-100: train $E, global 90% magnitude, fine-tune $FT" "$o" "$p"
o=$(ours ptq-lenet5 peer_ptq.json int8.onnx --set "stages[0].epochs=$E")
p=$(peer peer-ptq-lenet5 "X=1" ptq lenet5 "$E" 512)
row "lenet5: train $E, INT8 PTQ (512 calibration images)" "$o" "$p"
o=$(ours qat-lenet5 peer_qat.json int8.onnx --set "stages[0].epochs=$E" --set "stages[1].epochs=$FT")
p=$(peer peer-qat-lenet5 "X=1" qat lenet5 "$E" "$FT")
row "lenet5: train $E, INT8 QAT $FT" "$o" "$p"
# KD: ours is two runs (teacher, then student), their wall times added; the peer is one.
ot=$(ours kd-teacher peer_train.json model.onnx --set model=zoo:convnet --set "stages[0].epochs=$KD_T")
os=$(ours kd-student peer_kd.json model.onnx --set "teacher=$OUT/kd-teacher/model.onnx" --set "stages[0].epochs=$KD_E")
o=$(awk -v t="$ot" -v s="$os" 'BEGIN {split(t,a," "); split(s,b," "); printf "%s %s %.1f %d\n", b[1], b[2], a[3]+b[3], (a[4]>b[4]?a[4]:b[4])}')
p=$(peer peer-kd "X=1" kd convnet "$KD_T" "lenet5?width=0.5" "$KD_E")
row "KD: convnet teacher $KD_T epochs, lenet5 w0.5 student $KD_E" "$o" "$p"

# Phases of the same runs, side by side (issue 18): ours from each report's stage seconds,
# the peer's from the timings its JSON line records.
echo
node - "$OUT" <<'JS' || status=1
const fs = require('fs'), path = require('path');
const out = process.argv[2];
const report = (n) => JSON.parse(fs.readFileSync(path.join(out, n, 'report.json'), 'utf8'));
const peer = (n) => JSON.parse(fs.readFileSync(path.join(out, n + '.log'), 'utf8').trim().split('\n').pop());
const stage = (r, pass) => r.stages.find((s) => s.pass === pass);
const perEpoch = (s) => s.seconds / s.stats.epochs;
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const f = (x) => (x === undefined || Number.isNaN(x) ? '—' : x.toFixed(3));
const q = (a, b) => (a > 0 && b > 0 ? (a / b).toFixed(2) : '—');
const rows = [];
const add = (phase, ours, p, p1) => rows.push([phase, ours, p, p1]);
for (const m of ['lenet5', 'mlp-300-100']) {
  const r = report('train-' + m), p = peer('peer-train-' + m), p1 = peer('peer1-train-' + m);
  add(`${m} training epoch (ours: with its 5k validation pass)`, perEpoch(stage(r, 'train')), mean(p.epoch_s), mean(p1.epoch_s));
  add(`${m} evaluation, 10k test images, FP32`, stage(r, 'evaluate').seconds, p.eval_s, p1.eval_s);
}
const ptq = report('ptq-lenet5'), pp = peer('peer-ptq-lenet5');
add('lenet5 PTQ: calibrate 512 + quantize (peer: prepare + calibrate + convert)', stage(ptq, 'quantize').seconds, pp.phases_s.quantize);
add('lenet5 evaluation, 10k test images, INT8 (ours: fake-quant; peer: its INT8 kernels)', stage(ptq, 'evaluate').seconds, pp.int8_eval_s);
const qat = report('qat-lenet5'), pq = peer('peer-qat-lenet5');
const oq = perEpoch(stage(qat, 'quantize-qat')), pqe = mean(pq.qat_epoch_s);
add('lenet5 QAT epoch (ours: with calibration and validation)', oq, pqe);
const kd = report('kd-student'), pk = peer('peer-kd');
add('KD epoch, lenet5 w0.5 student (ours: teacher logits cached)', perEpoch(stage(kd, 'distill')), mean(pk.epoch_s));
console.log('| phase | ours s | peer s | ours/peer | peer 1 BLAS thread s | ours/it |');
console.log('|---|---:|---:|---:|---:|---:|');
for (const [phase, o, p, p1] of rows) {
  console.log(`| ${phase} | ${f(o)} | ${f(p)} | **${q(o, p)}** | ${f(p1)} | ${p1 === undefined ? '—' : q(o, p1)} |`);
}
const ot = perEpoch(stage(qat, 'train')), pt = mean(pq.epoch_s);
console.log(`\nQAT epoch / FP32 epoch in the QAT runs: ours ${q(oq, ot)}×, peer ${q(pqe, pt)}×`);
JS
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); logs in $OUT"
exit $status
