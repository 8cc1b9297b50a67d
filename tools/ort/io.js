// What run_model.js and latency.js share: loading onnxruntime-node, one-line errors,
// and the inputs manifest (INPUTS.json naming raw little-endian files, see run_model.js).
'use strict';

const fs = require('fs');
const path = require('path');

const kArrays = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array,
  int16: Int16Array, uint16: Uint16Array, int32: Int32Array, uint32: Uint32Array,
  int64: BigInt64Array, uint64: BigUint64Array, bool: Uint8Array, float16: Uint16Array,
};

// Exits with `code` after one line on stderr (whitespace runs collapsed).
function fail(code, message) {
  process.stderr.write(String(message).replace(/\s+/g, ' ').trim() + '\n');
  process.exit(code);
}

// onnxruntime-node, or exit 3 when it is not installed.
function loadOrt() {
  try {
    return require('onnxruntime-node');
  } catch (e) {
    fail(3, `cannot load onnxruntime-node: ${e.message}`);
  }
}

// [{name (may be undefined: by position), tensor}] from an inputs manifest.
function readInputs(ort, manifestPath) {
  const manifest = JSON.parse(fs.readFileSync(manifestPath, 'utf8'));
  const dir = path.dirname(manifestPath);
  return manifest.inputs.map((spec, k) => {
    const Arr = kArrays[spec.dtype];
    if (!Arr) throw new Error(`input ${k}: unsupported dtype ${spec.dtype}`);
    const bytes = fs.readFileSync(path.join(dir, spec.file));
    const count = spec.shape.reduce((a, b) => a * b, 1);
    if (bytes.length !== count * Arr.BYTES_PER_ELEMENT) {
      throw new Error(`input ${k}: ${spec.file} has ${bytes.length} bytes, ` +
                      `expected ${count * Arr.BYTES_PER_ELEMENT} for ${spec.dtype} [${spec.shape}]`);
    }
    // Copy into a fresh, aligned buffer (Buffer slices may be unaligned).
    const data = new Arr(count);
    new Uint8Array(data.buffer).set(bytes);
    return { name: spec.name, tensor: new ort.Tensor(spec.dtype, data, spec.shape) };
  });
}

// The feeds of `session`: inputs by name when given, else by position.
function feedsFor(session, inputs) {
  const feeds = {};
  inputs.forEach((inp, k) => { feeds[inp.name || session.inputNames[k]] = inp.tensor; });
  return feeds;
}

module.exports = { fail, loadOrt, readInputs, feedsFor };
