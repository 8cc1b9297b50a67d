#!/usr/bin/env node
// ONNX Runtime latency of exported models (onnxruntime-node, CPU EP): for each model and
// batch size, `warmup` runs and then `runs` timed runs on one seeded random input; prints
// the median and p90 in milliseconds as a Markdown table, and the ratio of each model's
// median to the first model's. Input shape: the model's first input with the batch
// dimension replaced (symbolic dims become the batch size).
// Usage: node bench/ort_latency.js [--batch 1,32] [--runs 50] [--warmup 10]
//          [--threads 2] [--reps 5] MODEL.onnx [MODEL.onnx ...]
'use strict';

const path = require('path');
const ort = require(path.join(__dirname, '..', 'tools', 'ort', 'node_modules', 'onnxruntime-node'));

function parse(argv) {
  const o = { batch: [1, 32], runs: 50, warmup: 10, threads: 2, reps: 5, models: [] };
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    if (a === '--batch') o.batch = argv[++i].split(',').map(Number);
    else if (a === '--runs') o.runs = Number(argv[++i]);
    else if (a === '--warmup') o.warmup = Number(argv[++i]);
    else if (a === '--threads') o.threads = Number(argv[++i]);
    else if (a === '--reps') o.reps = Number(argv[++i]);
    else o.models.push(a);
  }
  if (o.models.length === 0) {
    process.stderr.write('usage: ort_latency.js [--batch 1,32] [--runs N] [--warmup W] [--threads T] [--reps R] MODEL.onnx...\n');
    process.exit(2);
  }
  return o;
}

// Deterministic pseudo-random normal-ish values (sum of uniforms), no dependency.
function fill(n, seed) {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  const next = () => ((s = (s * 1664525 + 1013904223) >>> 0) / 4294967296);
  for (let i = 0; i < n; ++i) a[i] = next() + next() + next() - 1.5;
  return a;
}

function median(xs) {
  const t = [...xs].sort((x, y) => x - y);
  return t[Math.floor(t.length / 2)];
}

// One repetition: `warmup` untimed runs, then the median of `runs` timed runs, in ms.
async function timeOnce(session, feeds, o) {
  for (let i = 0; i < o.warmup; ++i) await session.run(feeds);
  const t = [];
  for (let i = 0; i < o.runs; ++i) {
    const start = process.hrtime.bigint();
    await session.run(feeds);
    t.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  return median(t);
}

async function main() {
  const o = parse(process.argv.slice(2));
  const sessions = [];
  for (const model of o.models) {
    const session = await ort.InferenceSession.create(model, {
      executionProviders: ['cpu'], intraOpNumThreads: o.threads, interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
    });
    // onnxruntime-node does not expose input shapes before 1.17 everywhere: read them
    // from the metadata when available, else assume Fashion-MNIST's [N,1,28,28].
    let dims = [1, 1, 28, 28];
    const meta = session.inputMetadata && session.inputMetadata[0];
    if (meta && Array.isArray(meta.shape)) dims = meta.shape.map((d) => (typeof d === 'number' ? d : 1));
    sessions.push({ model, session, name: session.inputNames[0], dims });
  }
  // Repetitions interleave the models (A B C, A B C, ...), so that a change of machine
  // load between repetitions reaches every model alike; each ratio is taken within one
  // repetition (pair by pair) before its median and range are reported.
  const reps = {};  // `${model}|${batch}` -> medians, one per repetition
  for (const b of o.batch) {
    for (let r = 0; r < o.reps; ++r) {
      for (const s of sessions) {
        const shape = [b, ...s.dims.slice(1)];
        const n = shape.reduce((x, y) => x * y, 1);
        const feeds = { [s.name]: new ort.Tensor('float32', fill(n, 42), shape) };
        const key = `${s.model}|${b}`;
        (reps[key] = reps[key] || []).push(await timeOnce(s.session, feeds, o));
      }
    }
  }
  console.log(`ONNX Runtime ${ort.env.versions ? ort.env.versions.common : ''}, ${o.threads} threads, ` +
              `${o.reps} repetitions (models interleaved) of ${o.runs} runs after ${o.warmup} warm-up`);
  console.log('| model | batch | median ms | min–max ms (repetitions) | first model / this: median (min–max) |');
  console.log('|---|---:|---:|---:|---:|');
  for (const b of o.batch) {
    const base = reps[`${o.models[0]}|${b}`];
    for (const m of o.models) {
      const t = reps[`${m}|${b}`];
      const ratios = t.map((x, i) => base[i] / x);
      const ratio = m === o.models[0] ? '1' :
        `${median(ratios).toFixed(2)}× (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`;
      console.log(`| ${m} | ${b} | ${median(t).toFixed(3)} | ${Math.min(...t).toFixed(3)}–${Math.max(...t).toFixed(3)} | ${ratio} |`);
    }
  }
}

main().catch((e) => { process.stderr.write(String(e.message || e).split('\n')[0] + '\n'); process.exit(1); });
