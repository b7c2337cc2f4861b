// Tiled matrix product for prefill: Y[t, r] = epilogue(Σ_i A[t, i]·W[r, i] + bias[r]) for T tokens.
//
// A is f32 [T, in_stride] (already normalized); W is [rows, cols] in its stored dtype. A workgroup
// computes a 64×64 tile of Y (tokens × rows) with 256 threads, each a 4×4 block, stepping through
// the inner dimension 16 columns at a time via workgroup memory. Each output is summed in the same
// order whatever T is, so a prompt gives the same numbers however it is chunked.
// Epilogues: OUT_ADD adds into Y (residual); OUT_MUL multiplies into Y (the SGLU product: the
// first projection is written, the second multiplies it).

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
//#weights W 5 9
//#if BIAS
@group(0) @binding(7) var<storage, read> bias: array<f32>;
//#endif

const TM: u32 = 64u;   // tokens per tile
const TN: u32 = 64u;   // rows per tile
const TK: u32 = 16u;   // inner columns per step

// Tiles as vec4 (four consecutive tokens or rows); small workgroup arrays keep GL compiles fast.
var<workgroup> As: array<vec4<f32>, 256>;   // [TK][TM / 4]
var<workgroup> Ws: array<vec4<f32>, 256>;   // [TK][TN / 4]

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let r0 = wid.x * TN;
  let t0 = wid.y * TM;
  let tr = (tid / 16u) * 4u;   // this thread's first token within the tile
  let tc = (tid % 16u) * 4u;   // this thread's first row within the tile
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < P.cols; k0 += TK) {
//#if VEC16
    // Stage the tiles with wide loads (cols is a multiple of 16): A as 4 floats per thread, W as
    // 8 weights (one 16-byte load) per thread for the first 128 threads.
    {
      let tt = tid / 4u;
      let kq = (tid % 4u) * 4u;
      let t = t0 + tt;
      var a = vec4<f32>(0.0);
      if (t < P.tokens) {
        let i = t * P.in_stride + P.in_off + k0 + kq;
        a = vec4<f32>(A[i], A[i + 1u], A[i + 2u], A[i + 3u]);
      }
      for (var c = 0u; c < 4u; c++) { As[((kq + c) * TM + tt) / 4u][tt % 4u] = a[c]; }
      if (tid < 128u) {
        let rr = tid / 2u;
        let kh = (tid % 2u) * 8u;
        let r = r0 + rr;
        var w = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
        if (r < P.rows) {
          w = W_get8((r * P.cols + k0 + kh) / 8u, W_scale(P.row_base + r));
        }
        for (var c = 0u; c < 8u; c++) {
          Ws[((kh + c) * TN + rr) / 4u][rr % 4u] = w[c / 4u][c % 4u];
        }
      }
    }
//#else
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
      if (r < P.rows && k < P.cols) {
        w = W_get(r * P.cols + k, W_scale(P.row_base + r));
      }
      Ws[(kk * TN + tt) / 4u][tt % 4u] = w;
    }
//#endif
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      let a = As[(kk * TM + tr) / 4u];
      let w = Ws[(kk * TN + tc) / 4u];
      acc[0] += a.x * w;
      acc[1] += a.y * w;
      acc[2] += a.z * w;
      acc[3] += a.w * w;
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
      let o = t * P.out_stride + P.out_off + gr;
//#if OUT_ADD
      Y[o] = Y[o] + v;
//#else
//#if OUT_MUL
      Y[o] = Y[o] * v;
//#else
      Y[o] = v;
//#endif
//#endif
    }
  }
}
