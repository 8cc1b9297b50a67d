#!/usr/bin/env node
// Runs an ONNX model in ONNX Runtime (onnxruntime-node, CPU execution provider) on
// tensors read from raw files, and writes the outputs the same way. mcompress spawns it
// to verify exports (compress/ort_runner.cpp); benchmarks use --bench.
//
// Usage: node run_model.js MODEL.onnx INPUTS.json OUT_DIR [--threads T]
//          [--opt disabled|basic|extended|layout|all] [--bench N --warmup W]
//          [--optimized OPTIMIZED.onnx]
//
// INPUTS.json: {"inputs": [{"name": "input" (optional; else by position),
//   "dtype": "float32", "shape": [2,1,28,28], "file": "input_0.bin"}, ...]}; files are
// raw little-endian element data, relative to INPUTS.json's folder.
// OUT_DIR/outputs.json: {"ort_version": "...", "outputs": [{name, dtype, shape, file}]}
// with one raw little-endian file per output; with --bench also
// "bench": {runs, warmup, median_ms, mean_ms, min_ms, max_ms, p90_ms, latencies_ms}.
// --optimized: after the run, a second session on the same model at level 'extended'
// writes the graph ONNX Runtime executes to OPTIMIZED.onnx (QDQ groups fused into
// QLinearConv, QGemm, ...; fused nodes keep the original node's name), so the caller
// can tell which quantized layers run on integer kernels. At 'extended', the level that
// holds the QDQ fusions; the layout level above it only adds CPU-specific rewrites.
// Exit codes: 0 ok, 1 ONNX Runtime or input error (one line on stderr), 2 bad usage,
// 3 onnxruntime-node is not installed.
'use strict';

const fs = require('fs');
const path = require('path');
const { fail, loadOrt, readInputs, feedsFor } = require('./io');

function parseArgs(argv) {
  const positional = [];
  const opts = { threads: 1, opt: 'all', bench: 0, warmup: 0, optimized: '' };
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(2, `run_model.js: ${a} needs a value`);
      return argv[++i];
    };
    if (a === '--threads') opts.threads = Number(value());
    else if (a === '--opt') opts.opt = value();
    else if (a === '--bench') opts.bench = Number(value());
    else if (a === '--warmup') opts.warmup = Number(value());
    else if (a === '--optimized') opts.optimized = value();
    else if (a.startsWith('--')) fail(2, `run_model.js: unknown option ${a}`);
    else positional.push(a);
  }
  if (positional.length !== 3) {
    fail(2, 'usage: run_model.js MODEL.onnx INPUTS.json OUT_DIR [--threads T] [--opt LEVEL] ' +
            '[--bench N --warmup W] [--optimized PATH]');
  }
  for (const k of ['threads', 'bench', 'warmup']) {
    if (!Number.isInteger(opts[k]) || opts[k] < 0) fail(2, `run_model.js: --${k} must be a non-negative integer`);
  }
  if (!['disabled', 'basic', 'extended', 'layout', 'all'].includes(opts.opt)) {
    fail(2, `run_model.js: --opt ${opts.opt} is not one of disabled, basic, extended, layout, all`);
  }
  [opts.model, opts.inputs, opts.out] = positional;
  return opts;
}

function median(sorted) {
  const n = sorted.length;
  return n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

function sessionOptions(opts, level) {
  return {
    executionProviders: ['cpu'],
    intraOpNumThreads: opts.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: level,
  };
}

// The graph ONNX Runtime runs, written to `file` by creating (not running) a session.
async function writeOptimized(ort, opts, file) {
  const options = {
    ...sessionOptions(opts, 'extended'),
    optimizedModelFilePath: file,
    logSeverityLevel: 3,  // ORT warns that an optimized file may be CPU-specific
  };
  try {
    const session = await ort.InferenceSession.create(opts.model, options);
    await session.release();
  } catch (e) {
    fail(1, `ONNX Runtime cannot write the optimized graph of ${opts.model} to ${file}: ${e.message}`);
  }
  if (!fs.existsSync(file)) fail(1, `ONNX Runtime wrote no optimized graph to ${file}`);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const ort = loadOrt();
  let session;
  try {
    session = await ort.InferenceSession.create(opts.model, sessionOptions(opts, opts.opt));
  } catch (e) {
    fail(1, `ONNX Runtime cannot load ${opts.model}: ${e.message}`);
  }
  const inputs = readInputs(ort, opts.inputs);
  if (inputs.length !== session.inputNames.length) {
    fail(1, `${opts.model} has ${session.inputNames.length} inputs ` +
            `(${session.inputNames.join(', ')}), ${inputs.length} given`);
  }
  const feeds = feedsFor(session, inputs);

  let results;
  try {
    results = await session.run(feeds);
  } catch (e) {
    fail(1, `ONNX Runtime failed to run ${opts.model}: ${e.message}`);
  }

  if (opts.optimized) await writeOptimized(ort, opts, opts.optimized);

  const out = { ort_version: require('onnxruntime-node/package.json').version, outputs: [] };
  if (opts.bench > 0) {
    for (let i = 0; i < opts.warmup; ++i) await session.run(feeds);
    const ms = [];
    for (let i = 0; i < opts.bench; ++i) {
      const t0 = process.hrtime.bigint();
      await session.run(feeds);
      ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    const sorted = [...ms].sort((a, b) => a - b);
    out.bench = {
      runs: opts.bench, warmup: opts.warmup, median_ms: median(sorted),
      mean_ms: ms.reduce((a, b) => a + b, 0) / ms.length, min_ms: sorted[0],
      max_ms: sorted[sorted.length - 1],
      p90_ms: sorted[Math.min(sorted.length - 1, Math.ceil(0.9 * sorted.length) - 1)],
      latencies_ms: ms,
    };
  }

  fs.mkdirSync(opts.out, { recursive: true });
  session.outputNames.forEach((name, k) => {
    const t = results[name];
    const file = `output_${k}.bin`;
    const d = t.data;
    fs.writeFileSync(path.join(opts.out, file), Buffer.from(d.buffer, d.byteOffset, d.byteLength));
    out.outputs.push({ name, dtype: t.type, shape: t.dims.map(Number), file });
  });
  // Written last: the caller treats a missing outputs.json as a failed run.
  fs.writeFileSync(path.join(opts.out, 'outputs.json'), JSON.stringify(out));
  if (out.bench) process.stdout.write(JSON.stringify(out.bench) + '\n');
}

main().catch((e) => fail(1, e && e.message ? e.message : e));
