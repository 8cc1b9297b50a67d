#!/usr/bin/env node
// Compares the latency of several ONNX models in ONNX Runtime (onnxruntime-node, CPU
// execution provider, graph optimizations 'all') on the same inputs, in one process so
// that the models are timed under the same conditions: every session is created and
// warmed up first, then `rounds` rounds each time every model for `runs` runs, the
// models' order rotating from round to round, so that a slow stretch of the machine (a
// neighbour's burst, frequency changes) falls on all of them alike rather than on
// whichever model happened to run then. mcompress spawns it for quantize's
// latency_fallback (compress/io/ort_runner.cpp, CompareOrtLatency).
//
// Usage: node latency.js INPUTS.json OUT.json [--threads T] [--rounds R] [--runs N]
//          [--warmup W] MODEL.onnx [MODEL.onnx ...]
// INPUTS.json as run_model.js reads it. OUT.json: {"ort_version": "...", "models":
// [{"model": path, "latencies_ms": [rounds × runs, in run order]}, ...]} in the models'
// order; written last (a missing file is a failed run).
// Exit codes: 0 ok, 1 ONNX Runtime or input error (one line on stderr), 2 bad usage,
// 3 onnxruntime-node is not installed.
'use strict';

const fs = require('fs');
const { fail, loadOrt, readInputs, feedsFor } = require('./io');

function parseArgs(argv) {
  const positional = [];
  const opts = { threads: 1, rounds: 5, runs: 20, warmup: 5 };
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const key = a.slice(2);
      if (!(key in opts)) fail(2, `latency.js: unknown option ${a}`);
      if (i + 1 >= argv.length) fail(2, `latency.js: ${a} needs a value`);
      opts[key] = Number(argv[++i]);
      const min = key === 'warmup' ? 0 : 1;
      if (!Number.isInteger(opts[key]) || opts[key] < min) {
        fail(2, `latency.js: ${a} must be an integer >= ${min}`);
      }
    } else {
      positional.push(a);
    }
  }
  if (positional.length < 3) {
    fail(2, 'usage: latency.js INPUTS.json OUT.json [--threads T] [--rounds R] [--runs N] ' +
            '[--warmup W] MODEL.onnx...');
  }
  [opts.inputs, opts.out] = positional;
  opts.models = positional.slice(2);
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const ort = loadOrt();
  const inputs = readInputs(ort, opts.inputs);
  const sessions = [];
  for (const model of opts.models) {
    let session;
    try {
      session = await ort.InferenceSession.create(model, {
        executionProviders: ['cpu'], intraOpNumThreads: opts.threads, interOpNumThreads: 1,
        graphOptimizationLevel: 'all',
      });
    } catch (e) {
      fail(1, `ONNX Runtime cannot load ${model}: ${e.message}`);
    }
    if (session.inputNames.length !== inputs.length) {
      fail(1, `${model} has ${session.inputNames.length} inputs, ${inputs.length} given`);
    }
    const feeds = feedsFor(session, inputs);
    try {
      for (let i = 0; i < Math.max(1, opts.warmup); ++i) await session.run(feeds);
    } catch (e) {
      fail(1, `ONNX Runtime failed to run ${model}: ${e.message}`);
    }
    sessions.push({ model, session, feeds, ms: [] });
  }
  for (let r = 0; r < opts.rounds; ++r) {
    for (let k = 0; k < sessions.length; ++k) {
      const s = sessions[(k + r) % sessions.length];
      for (let i = 0; i < opts.runs; ++i) {
        const t0 = process.hrtime.bigint();
        await s.session.run(s.feeds);
        s.ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
    }
  }
  const out = {
    ort_version: require('onnxruntime-node/package.json').version,
    models: sessions.map((s) => ({ model: s.model, latencies_ms: s.ms })),
  };
  fs.writeFileSync(opts.out, JSON.stringify(out));
}

main().catch((e) => fail(1, e && e.message ? e.message : e));
