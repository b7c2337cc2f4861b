// Tiled matrix product for prefill: Y[t, r] = epilogue(Σ_i A[t, i]·W[r, i] + bias[r]) for T tokens.
//
// A is f32 [T, in_stride] (already normalized); W is [rows, cols] in its stored dtype. A workgroup
// computes a 64×64 tile of Y (tokens × rows) with 256 threads, each a 4×4 block, stepping through
// the inner dimension 16 columns at a time via workgroup memory. Each output is summed in the same
// order whatever T is, so a prompt gives the same numbers however it is chunked.
// Epilogues: OUT_ADD adds into Y (residual); GLU multiplies the products with W and W2.

struct Params {
  rows: u32,
  cols: u32,
  row_base: u32,
  tokens: u32,
  in_stride: u32,
  in_off: u32,
  out_stride: u32,
  out_off: u32,
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(2) var<storage, read> A: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;
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

const TM: u32 = 64u;   // tokens per tile
const TN: u32 = 64u;   // rows per tile
const TK: u32 = 16u;   // inner columns per step

// Tiles as vec4 (four consecutive tokens or rows); small workgroup arrays keep GL compiles fast.
var<workgroup> As: array<vec4<f32>, 256>;   // [TK][TM / 4]
var<workgroup> Ws: array<vec4<f32>, 256>;   // [TK][TN / 4]
//#if GLU
var<workgroup> W2s: array<vec4<f32>, 256>;
//#endif

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let r0 = wid.x * TN;
  let t0 = wid.y * TM;
  let tr = (tid / 16u) * 4u;   // this thread's first token within the tile
  let tc = (tid % 16u) * 4u;   // this thread's first row within the tile
  var acc: array<vec4<f32>, 4>;
//#if GLU
  var acc2: array<vec4<f32>, 4>;
//#endif
  for (var k0 = 0u; k0 < P.cols; k0 += TK) {
    // Stage A[t0.., k0..] and W[r0.., k0..] (4 elements per thread each), zero outside.
    for (var e = tid; e < TM * TK; e += 256u) {
      let tt = e / TK;
      let kk = e % TK;
      let t = t0 + tt;
      let k = k0 + kk;
      var a = 0.0;
      if (t < P.tokens && k < P.cols) { a = A[t * P.in_stride + P.in_off + k]; }
      As[(kk * TM + tt) / 4u][tt % 4u] = a;
      let r = r0 + tt;
      var w = 0.0;
//#if GLU
      var w2 = 0.0;
//#endif
      if (r < P.rows && k < P.cols) {
        w = W_get(r * P.cols + k);
//#if GLU
        w2 = W2_get(r * P.cols + k);
//#endif
      }
      Ws[(kk * TN + tt) / 4u][tt % 4u] = w;
//#if GLU
      W2s[(kk * TN + tt) / 4u][tt % 4u] = w2;
//#endif
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      let a = As[(kk * TM + tr) / 4u];
      let w = Ws[(kk * TN + tc) / 4u];
      acc[0] += a.x * w;
      acc[1] += a.y * w;
      acc[2] += a.z * w;
      acc[3] += a.w * w;
//#if GLU
      let w2 = W2s[(kk * TN + tc) / 4u];
      acc2[0] += a.x * w2;
      acc2[1] += a.y * w2;
      acc2[2] += a.z * w2;
      acc2[3] += a.w * w2;
//#endif
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let t = t0 + tr + i;
    if (t >= P.tokens) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let r = r0 + tc + j;
      if (r >= P.rows) { continue; }
      let gr = P.row_base + r;
      var v = acc[i][j];
//#if BIAS
      v += bias[gr];
//#endif
//#if GLU
      var v2 = acc2[i][j];
//#if BIAS
      v2 += bias2[gr];
//#endif
      v = v * v2;
//#endif
      let o = t * P.out_stride + P.out_off + gr;
//#if OUT_ADD
      Y[o] = Y[o] + v;
//#else
      Y[o] = v;
//#endif
    }
  }
}
