// Matrix-vector products for decode: out[b, r] = epilogue(scale_b · Σ_i W[r, i]·in_b[i] + bias[r])
// for NB sequences per workgroup (weights read once, applied to NB inputs).
//
// Layout: W is [rows, cols] row-major in its stored dtype (f32, or bf16/f16 packed two per u32);
// a group of LANES threads computes one row: lane l takes 8-wide chunks l, l+LANES, ... in order,
// then the lanes reduce through a fixed tree, so each (row, sequence) is summed in the same order
// whatever the batch size (decode is batch-invariant).
// Input transforms (fused so no separate normalization pass is needed):
//   RMS_SCALE: scale_b = 1/sqrt(mean(in_b²) + 1e-6)   (SimpleRMSNorm of the input, eq. srms;
//              srms(x)·W = scale·(x·W), so the norm is a per-sequence factor)
//   GATE:      the input is multiplied elementwise by in2 (u ⊙ srms(o): scale from o, gate u)
// Epilogues: OUT_ADD adds into out (residual); GLU multiplies the products of W and W2.

struct Params {
  rows: u32,       // rows of this weight chunk
  cols: u32,
  row_base: u32,   // first output row of this chunk
  in_stride: u32,
  in_off: u32,
  in2_stride: u32, // IN_GATE: the gate u
  in2_off: u32,
  out_stride: u32,
  out_off: u32,
  batch_base: u32, // first sequence of this dispatch
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ctl: array<u32>;   // ctl[0] = sequences in the batch
@group(0) @binding(2) var<storage, read> inp: array<f32>;
//#if GATE
@group(0) @binding(3) var<storage, read> inp2: array<f32>;
//#endif
@group(0) @binding(4) var<storage, read_write> outp: array<f32>;
//#weights W 5
//#if GLU
//#weights W2 6
//#endif
//#if BIAS
@group(0) @binding(7) var<storage, read> bias: array<f32>;
//#if GLU
@group(0) @binding(8) var<storage, read> bias2: array<f32>;
//#endif
//#endif

const LANES: u32 = {{LANES}}u;
const WG: u32 = 256u;
const RPW: u32 = WG / LANES;   // rows per workgroup
const NB: u32 = {{NB}}u;

var<workgroup> red: array<f32, WG>;
//#if GLU
var<workgroup> red2: array<f32, WG>;
//#endif
var<workgroup> scales: array<f32, NB>;

fn input_at(b: u32, i: u32) -> f32 {
//#if GATE
  return inp[b * P.in_stride + P.in_off + i] * inp2[b * P.in2_stride + P.in2_off + i];
//#else
  return inp[b * P.in_stride + P.in_off + i];
//#endif
}

fn input8(b: u32, c: u32) -> array<vec4<f32>, 2> {
  let base = b * P.in_stride + P.in_off + c * 8u;
  var a = vec4<f32>(inp[base], inp[base + 1u], inp[base + 2u], inp[base + 3u]);
  var d = vec4<f32>(inp[base + 4u], inp[base + 5u], inp[base + 6u], inp[base + 7u]);
//#if GATE
  let g = b * P.in2_stride + P.in2_off + c * 8u;
  a = a * vec4<f32>(inp2[g], inp2[g + 1u], inp2[g + 2u], inp2[g + 3u]);
  d = d * vec4<f32>(inp2[g + 4u], inp2[g + 5u], inp2[g + 6u], inp2[g + 7u]);
//#endif
  return array<vec4<f32>, 2>(a, d);
}

// Sum of `v` over the LANES threads of group `grp` (fixed tree), result valid in lane 0.
fn group_sum(v: f32, tid: u32, lane: u32) -> f32 {
  red[tid] = v;
  workgroupBarrier();
  var s = LANES / 2u;
  loop {
    if (s == 0u) { break; }
    if (lane < s) { red[tid] = red[tid] + red[tid + s]; }
    workgroupBarrier();
    s = s / 2u;
  }
  let r = red[tid - lane];
  workgroupBarrier();
  return r;
}

//#if GLU
fn group_sum2(v: f32, tid: u32, lane: u32) -> f32 {
  red2[tid] = v;
  workgroupBarrier();
  var s = LANES / 2u;
  loop {
    if (s == 0u) { break; }
    if (lane < s) { red2[tid] = red2[tid] + red2[tid + s]; }
    workgroupBarrier();
    s = s / 2u;
  }
  let r = red2[tid - lane];
  workgroupBarrier();
  return r;
}
//#endif

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let nseq = ctl[0];
  let b0 = P.batch_base + wid.y * NB;
  let lane = tid % LANES;
  let grp = tid / LANES;
  let row = wid.x * RPW + grp;

  // Per-sequence scale of the fused normalization (every thread of the workgroup helps).
  for (var j = 0u; j < NB; j++) {
    let b = b0 + j;
    var ss = 0.0;
//#if RMS_SCALE
    if (b < nseq) {
      for (var i = tid; i < P.cols; i += WG) {
        let v = inp[b * P.in_stride + P.in_off + i];
        ss += v * v;
      }
    }
//#endif
    red[tid] = ss;
    workgroupBarrier();
    var s = WG / 2u;
    loop {
      if (s == 0u) { break; }
      if (tid < s) { red[tid] = red[tid] + red[tid + s]; }
      workgroupBarrier();
      s = s / 2u;
    }
    if (tid == 0u) {
//#if RMS_SCALE
      scales[j] = 1.0 / sqrt(red[0] / f32(P.cols) + 1e-6);
//#else
      scales[j] = 1.0;
//#endif
    }
    workgroupBarrier();
  }

  var acc: array<f32, NB>;
//#if GLU
  var acc2: array<f32, NB>;
//#endif
  if (row < P.rows) {
//#if VEC8
    let chunks = P.cols / 8u;
    let rbase = row * chunks;
    for (var c = lane; c < chunks; c += LANES) {
      let w = W_get8(rbase + c);
//#if GLU
      let w2 = W2_get8(rbase + c);
//#endif
      for (var j = 0u; j < NB; j++) {
        let x = input8(min(b0 + j, nseq - 1u), c);
        acc[j] += dot(w[0], x[0]) + dot(w[1], x[1]);
//#if GLU
        acc2[j] += dot(w2[0], x[0]) + dot(w2[1], x[1]);
//#endif
      }
    }
//#else
    let rbase = row * P.cols;
    for (var i = lane; i < P.cols; i += LANES) {
      let w = W_get(rbase + i);
//#if GLU
      let w2 = W2_get(rbase + i);
//#endif
      for (var j = 0u; j < NB; j++) {
        let x = input_at(min(b0 + j, nseq - 1u), i);
        acc[j] += w * x;
//#if GLU
        acc2[j] += w2 * x;
//#endif
      }
    }
//#endif
  }
  for (var j = 0u; j < NB; j++) {
    let total = group_sum(acc[j], tid, lane);
//#if GLU
    let total2 = group_sum2(acc2[j], tid, lane);
//#endif
    let b = b0 + j;
    if (lane == 0u && row < P.rows && b < nseq) {
      let r = P.row_base + row;
      var v = total * scales[j];
//#if BIAS
      v += bias[r];
//#endif
//#if GLU
      var v2 = total2 * scales[j];
//#if BIAS
      v2 += bias2[r];
//#endif
      v = v * v2;
//#endif
      let o = b * P.out_stride + P.out_off + r;
//#if OUT_ADD
      outp[o] = outp[o] + v;
//#else
      outp[o] = v;
//#endif
    }
  }
}
