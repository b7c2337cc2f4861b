// The sum of a split matrix product (`gemm.wgsl` SPLIT): Y[t, r] = (Σ_z part[z][t][r]) + bias[r],
// the planes added in order z = 0, 1, ..., then the bias, then (OUT_ADD) added into Y, as the
// unsplit product's epilogue adds its one sum. A thread per output element.

struct Params {
  rows: u32,        // output rows (the planes' row stride)
  tokens: u32,
  splits: u32,
  out_stride: u32,
  out_off: u32,
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;   // [splits][tokens][rows]
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
//#if BIAS
@group(0) @binding(3) var<storage, read> bias: array<f32>;
//#endif

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let e = gid.x + gid.y * 65535u * 256u;
  let n = P.tokens * P.rows;
  if (e >= n) { return; }
  let t = e / P.rows;
  let r = e % P.rows;
  var x = part[e];
  for (var z = 1u; z < P.splits; z++) { x += part[z * n + e]; }
//#if BIAS
  x += bias[r];
//#endif
  let o = t * P.out_stride + P.out_off + r;
//#if OUT_ADD
  Y[o] = Y[o] + x;
//#else
  Y[o] = x;
//#endif
}
