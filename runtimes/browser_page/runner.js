// edgeship's browser runner: one page load per artifact of a bundle (?i=K), so each artifact's cold
// start is a real one: page, runtime and model loaded from nothing. The page
//   1. reads /job.json (written by edgeship.runtimes._browser from the bundle),
//   2. applies the preprocessing the file records to the bundle's raw inputs, quantizes them for an
//      int8-input file, runs every sample at batch 1 and dequantizes the first output,
//   3. times `warmup` + `runs` calls on the first sample with performance.now(),
//   4. POSTs the outputs and timings to /result, then opens ?i=K+1 (or POSTs /done).
// .tflite files run in LiteRT.js through its lower-level bindings (getGlobalLiteRt().liteRtWasm):
// its public API refuses int8 tensors and a -1 batch dimension (LiteRT.js 2.5.3, pinned in the lock
// file). .onnx files run in onnxruntime-web's WASM build. Both on one thread.

const TYPED = { float32: Float32Array, int8: Int8Array, uint8: Uint8Array, int32: Int32Array, int64: BigInt64Array };
const LITERT_TYPES = { float32: 1, int32: 2, uint8: 3, int64: 4, int8: 9 };  // LiteRtElementType values
const LITERT_NAMES = Object.fromEntries(Object.entries(LITERT_TYPES).map(([k, v]) => [v, k]));

function decode({ dtype, shape, b64 }) {
  const text = atob(b64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return { dtype, shape, data: new TYPED[dtype](bytes.buffer) };
}

function encode(values) {
  const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

// One sample (batch 1) of an input array.
function sample(array, n) {
  const per = array.shape.slice(1).reduce((a, b) => a * b, 1);
  return { dtype: array.dtype, shape: [1, ...array.shape.slice(1)], data: array.data.slice(n * per, (n + 1) * per) };
}

// The preprocessing spec (edgeship.preprocess), in float32 as numpy computes it, then the layouts.
function preprocess(x, spec) {
  if (!spec) return x;
  const f = Math.fround;
  const out = new Float32Array(x.data.length);
  const channels = x.shape[x.shape.length - 1];
  const per = (values, i) => f(values.length === 1 ? values[0] : values[i % channels]);
  for (let i = 0; i < out.length; i++) {
    let v = f(Number(x.data[i]));
    if (spec.scale !== 1) v = f(v * f(spec.scale));
    if (spec.offset) v = f(v + f(spec.offset));
    if (spec.mean.length) v = f(v - per(spec.mean, i));
    if (spec.std.length) v = f(v / per(spec.std, i));
    out[i] = v;
  }
  const y = { dtype: 'float32', shape: x.shape, data: out };
  return spec.layout === 'nchw' ? moveAxis(y, -1, 1) : y;
}

// A 4-D sample's channels moved: (N, H, W, C) -> (N, C, H, W) for from=-1, to=1, and back for from=1, to=-1.
function moveAxis(x, from, to) {
  if (x.shape.length !== 4) throw new Error(`a layout change needs 4-D samples; received shape ${x.shape}`);
  const [n, a, b, c] = x.shape;
  const out = new x.data.constructor(x.data.length);
  if (from === -1 && to === 1) {
    for (let h = 0; h < a; h++) for (let w = 0; w < b; w++) for (let k = 0; k < c; k++) out[(k * a + h) * b + w] = x.data[(h * b + w) * c + k];
    return { dtype: x.dtype, shape: [n, c, a, b], data: out };
  }
  for (let k = 0; k < a; k++) for (let h = 0; h < b; h++) for (let w = 0; w < c; w++) out[(h * c + w) * a + k] = x.data[(k * b + h) * c + w];
  return { dtype: x.dtype, shape: [n, b, c, a], data: out };
}

// As edgeship's Session: q = clip(rint(x / scale) + zero_point), rint rounding half to even.
function rint(v) {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 ? 2 * Math.round(v / 2) : r;
}

function toModel(x, spec) {
  const Typed = TYPED[spec.dtype];
  if (spec.scale) {  // a quantized input takes floats through its scale and zero point
    const info = { int8: [-128, 127], uint8: [0, 255] }[spec.dtype];
    const out = new Typed(x.data.length);
    const scale = Math.fround(spec.scale);
    for (let i = 0; i < out.length; i++) {
      const q = Math.fround(rint(Math.fround(Number(x.data[i]) / scale)) + spec.zero_point);
      out[i] = Math.min(info[1], Math.max(info[0], q));
    }
    return { dtype: spec.dtype, shape: x.shape, data: out };
  }
  if (x.dtype === spec.dtype) return x;
  const data = spec.dtype === 'int64' ? BigInt64Array.from(x.data, (v) => BigInt(v)) : Typed.from(x.data, Number);
  return { dtype: spec.dtype, shape: x.shape, data };
}

function toFloat(y, spec) {
  if (!spec.scale) return Float32Array.from(y.data, Number);
  const out = new Float32Array(y.data.length);
  const scale = Math.fround(spec.scale), zero = Math.fround(spec.zero_point);
  for (let i = 0; i < out.length; i++) out[i] = Math.fround(Math.fround(y.data[i] - zero) * scale);
  return out;
}

async function litert(artifact) {
  const lrt = await import('@litertjs/core');
  await lrt.loadLiteRt('/node_modules/@litertjs/core/wasm/');
  const version = (await (await fetch('/node_modules/@litertjs/core/package.json')).json()).version;
  const bytes = new Uint8Array(await (await fetch(artifact.url)).arrayBuffer());
  const global = lrt.getGlobalLiteRt();
  const w = global.liteRtWasm;
  const env = global.getDefaultEnvironment();
  const pointer = w._malloc(bytes.byteLength);  // the model's bytes stay alive while it runs
  w.HEAPU8.set(bytes, pointer);
  const model = w.loadModel(env.liteRtEnvironment, pointer, bytes.byteLength);
  const compiled = await w.compileModel(env.liteRtEnvironment, model, {
    environment: env, accelerator: 'wasm', cpuOptions: { numThreads: 1 }, gpuOptions: {}, webNNOptions: {},
  });
  const run = async (inputs) => {
    const buffers = inputs.map((x) => {
      const dims = new w.VectorInt32();
      x.shape.forEach((d) => dims.push_back(d));
      const layout = w.LiteRtLayout.create(dims);
      const type = w.LiteRtRankedTensorType.create({ value: LITERT_TYPES[x.dtype] }, layout);
      const buffer = w.LiteRtTensorBuffer.createManaged(env.liteRtEnvironment, w.LiteRtTensorBufferType.HOST_MEMORY, type, type.bytes());
      const at = buffer.lock(w.LiteRtTensorBufferLockMode.WRITE);
      w.HEAPU8.set(new Uint8Array(x.data.buffer, x.data.byteOffset, x.data.byteLength), at);
      buffer.unlock();
      dims.delete(); layout.delete(); type.delete();
      return buffer;
    });
    const outs = await compiled.run(0, buffers);
    const first = outs[0];
    const type = first.tensorType();
    const dtype = LITERT_NAMES[type.elementType().value];
    type.delete();
    const at = first.lock(w.LiteRtTensorBufferLockMode.READ);
    const data = new TYPED[dtype](w.HEAPU8.slice(at, at + first.packedSize()).buffer);
    first.unlock();
    outs.forEach((o) => o.delete());
    buffers.forEach((b) => b.delete());
    return { dtype, data };
  };
  return { runtime: 'litert.js', version, run };
}

async function onnxruntime(artifact) {
  const ort = await import('onnxruntime-web');
  ort.env.wasm.wasmPaths = '/node_modules/onnxruntime-web/dist/';
  ort.env.wasm.numThreads = 1;
  const session = await ort.InferenceSession.create(artifact.url, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  const run = async (inputs) => {
    const feeds = Object.fromEntries(inputs.map((x, i) => [artifact.inputs[i].name, new ort.Tensor(x.dtype, x.data, x.shape)]));
    const result = await session.run(feeds);
    const first = result[session.outputNames[0]];
    return { dtype: first.type, data: first.data };
  };
  return { runtime: 'onnxruntime-web', version: ort.env.versions.web, run };
}

const RUNTIMES = { 'litert.js': litert, 'onnxruntime-web': onnxruntime };

async function post(path, body) {
  await fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
}

async function webgpu() {
  if (!navigator.gpu) return 'no WebGPU in this browser';
  try {
    const adapter = await navigator.gpu.requestAdapter();
    return adapter ? `a WebGPU adapter (${adapter.info?.architecture || adapter.info?.vendor || 'unnamed'}), not used: WASM ran` : 'no WebGPU adapter';
  } catch (e) { return `WebGPU: ${e}`; }
}

async function main() {
  const index = Number(new URLSearchParams(location.search).get('i') || 0);
  const job = await (await fetch('/job.json')).json();
  const artifact = job.artifacts[index];
  const result = { index, name: artifact.name };
  try {
    const inputs = job.inputs.map(decode);
    const backend = await RUNTIMES[artifact.runtime](artifact);
    result.cold_start_ms = performance.now();  // from navigation start: page, runtime and model
    Object.assign(result, { runtime: backend.runtime, runtime_version: backend.version });
    const count = inputs[0].shape[0];
    const prepared = (n) => artifact.order.map((k, i) => {
      let x = preprocess(sample(inputs[k], n), artifact.preprocess);
      if (artifact.layout === 'nhwc') x = moveAxis(x, 1, -1);
      return toModel(x, artifact.inputs[i]);
    });
    const outputs = [];
    let started = performance.now();
    for (let n = 0; n < count; n++) {
      outputs.push(toFloat(await backend.run(prepared(n)), artifact.outputs[0]));
      if (n === 0) result.first_inference_ms = performance.now() - started;
    }
    const first = prepared(0);
    const times = [];
    for (let r = 0; r < job.warmup + job.runs; r++) {
      started = performance.now();
      await backend.run(first);
      if (r >= job.warmup) times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    const at = (p) => times[Math.min(times.length - 1, Math.floor(p * times.length))];
    Object.assign(result, { p50_ms: at(0.5), p90_ms: at(0.9), runs: times.length });
    const flat = new Float32Array(outputs.reduce((a, o) => a + o.length, 0));
    outputs.reduce((offset, o) => (flat.set(o, offset), offset + o.length), 0);
    result.output = { shape: [count, flat.length / count], b64: encode(flat) };
  } catch (e) {
    result.error = String(e && e.message ? e.message : e).split('\n')[0];
  }
  if (index === job.artifacts.length - 1) result.webgpu = await webgpu();
  document.getElementById('log').textContent = `${artifact.name}: ${result.error || 'done'}`;
  await post('/result', result);
  if (index + 1 < job.artifacts.length) location.search = `?i=${index + 1}`;
  else await post('/done', {});
}

main().catch((e) => post('/result', { index: -1, error: String(e) }));
