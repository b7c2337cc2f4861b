// Row normalization for paths that cannot fold the norm into a product (LayerNorm, prefill):
//   LAYER_NORM: y = (x - mean)/sqrt(var + 1e-5)·w + b     (PyTorch LayerNorm)
//   otherwise:  y = x/sqrt(mean(x²) + 1e-6)                (SimpleRMSNorm)
//   GATE:       y is then multiplied elementwise by a gate row (u ⊙ norm(o))
// One workgroup per row.

struct Params {
  dim: u32,
  in_stride: u32,
  in_off: u32,
  out_stride: u32,
  out_off: u32,
  rows_from_ctl: u32,   // 1: the row count is ctl[0] (decode), 0: P.rows
  rows: u32,
  gate_stride: u32,
  gate_off: u32,
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ctl: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
//#if LAYER_NORM
@group(0) @binding(4) var<storage, read> w: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
//#endif
//#if GATE
@group(0) @binding(6) var<storage, read> gate: array<f32>;
//#endif

fn gate_at(row: u32, i: u32) -> f32 {
//#if GATE
  return gate[row * P.gate_stride + P.gate_off + i];
//#else
  return 1.0;
//#endif
}

var<workgroup> red: array<f32, 256>;

fn reduce_sum(v: f32, tid: u32) -> f32 {
  red[tid] = v;
  workgroupBarrier();
  var s = 128u;
  loop {
    if (s == 0u) { break; }
    if (tid < s) { red[tid] = red[tid] + red[tid + s]; }
    workgroupBarrier();
    s = s / 2u;
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let row = wid.x + wid.y * 65535u;
  let n = select(P.rows, ctl[0], P.rows_from_ctl == 1u);
  if (row >= n) { return; }
  let src = row * P.in_stride + P.in_off;
  let dst = row * P.out_stride + P.out_off;
//#if LAYER_NORM
  var s = 0.0;
  for (var i = tid; i < P.dim; i += 256u) { s += x[src + i]; }
  let mean = reduce_sum(s, tid) / f32(P.dim);
  var v = 0.0;
  for (var i = tid; i < P.dim; i += 256u) { let d = x[src + i] - mean; v += d * d; }
  let inv = 1.0 / sqrt(reduce_sum(v, tid) / f32(P.dim) + 1e-5);
  for (var i = tid; i < P.dim; i += 256u) { y[dst + i] = ((x[src + i] - mean) * inv * w[i] + bias[i]) * gate_at(row, i); }
//#else
  var s = 0.0;
  for (var i = tid; i < P.dim; i += 256u) { let a = x[src + i]; s += a * a; }
  let inv = 1.0 / sqrt(reduce_sum(s, tid) / f32(P.dim) + 1e-6);
  for (var i = tid; i < P.dim; i += 256u) { y[dst + i] = x[src + i] * inv * gate_at(row, i); }
//#endif
}
