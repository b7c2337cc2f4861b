// Tiled matrix product for prefill: Y[t, r] = epilogue(Σ_i A[t, i]·W[r, i] + bias[r]) for T tokens.
//
// A is f32 [T, in_stride] (already normalized); W is [rows, cols] in its stored dtype. A workgroup
// of WG threads computes a BM×BN tile of Y (tokens × rows), each thread a register block of
// 4·(BM/NTY/4) tokens × 4·(BN/NTX/4) rows (the code for the block is generated in
// src/gpu/gemm_tiling.ts). The inner dimension goes BK columns per step through two workgroup
// buffers: while the threads multiply out one, the next step's tiles are loaded (VEC: into
// registers, stored after the products; otherwise straight into the other buffer), so each step
// needs one barrier. Each output is summed in one thread in the order of the columns, whatever the
// tile or T: a prompt gives the same numbers however it is chunked and whichever tile runs.
// VEC: cols % 8 == 0 and in_stride, in_off % 4 == 0: A read as vec4, W as 8 weights per load.
// Epilogues: OUT_ADD adds into Y (residual). GLU: the SGLU pair in one product,
// Y[t, r] = (Σ_i A[t, i]·W[r, i] + bias[r]) · (Σ_i A[t, i]·W2[r, i] + bias2[r]): a tile's BN
// weight rows cover RN = BN/2 output rows, interleaved by fours (rows r, r+1 of W, then rows r, r+1
// of W2), so each vec4 of a thread's register block holds two outputs' pair of sums.
// SPLIT: workgroup z sums only inner columns [z·split_cols, (z+1)·split_cols) (split_cols a
// multiple of 32, so of BK) and writes the partial sums, with no epilogue, to plane z of Y
// ([splits][T][out_stride]); `gemm_reduce.wgsl` adds the planes in order, the bias and the residual.

struct Params {
  rows: u32,
  cols: u32,
  row_base: u32,
  tokens: u32,
  in_stride: u32,
  in_off: u32,
  out_stride: u32,
  out_off: u32,
//#if SPLIT
  split_cols: u32,  // inner columns per split
//#endif
};

@group(0) @binding(0) var<uniform> P: Params;
//#if VEC
@group(0) @binding(2) var<storage, read> A: array<vec4<f32>>;
//#else
@group(0) @binding(2) var<storage, read> A: array<f32>;
//#endif
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;
//#weights W 5 9
//#if BIAS
@group(0) @binding(7) var<storage, read> bias: array<f32>;
//#endif
//#if GLU
//#weights W2 6 10
//#if BIAS
@group(0) @binding(8) var<storage, read> bias2: array<f32>;
//#endif
//#endif

const BM: u32 = {{BM}}u;    // tokens per tile
const BN: u32 = {{BN}}u;    // weight rows per tile
const RN: u32 = {{RN}}u;    // output rows per tile (BN; BN/2 with GLU)

//#if GLU
// Tile row v of the interleaved SGLU pair: W2 (else W), output row 2·(v / 4) + v % 2 of the tile.
fn glu_second(v: u32) -> bool { return (v & 2u) != 0u; }
fn glu_row(v: u32) -> u32 { return (v / 4u) * 2u + (v & 1u); }
//#endif
const BK: u32 = {{BK}}u;    // inner columns per step
const NTX: u32 = {{NTX}}u;  // threads along the rows
const NTY: u32 = {{NTY}}u;  // threads along the tokens
const WG: u32 = {{WG}}u;

// The end of this workgroup's inner columns (P.cols, or its split's end).
var<private> k_end: u32;
//#if SPLIT
var<private> plane: u32;
//#endif

// Two buffers of [BK][BM] and [BK][BN] floats as vec4 (four consecutive tokens or rows).
var<workgroup> As: array<vec4<f32>, {{AS}}>;
var<workgroup> Ws: array<vec4<f32>, {{WS}}>;

// Four consecutive rows r.. of token t, through the epilogue.
fn out4(t: u32, r: u32, v: vec4<f32>) {
  if (t >= P.tokens) { return; }
  for (var j = 0u; j < 4u; j++) {
    if (r + j >= P.rows) { return; }
    let gr = P.row_base + r + j;
//#if SPLIT
    Y[(plane * P.tokens + t) * P.out_stride + P.out_off + gr] = v[j];
//#else
    var x = v[j];
//#if BIAS
    x += bias[gr];
//#endif
    let o = t * P.out_stride + P.out_off + gr;
//#if OUT_ADD
    Y[o] = Y[o] + x;
//#else
    Y[o] = x;
//#endif
//#endif
  }
}

//#if GLU
// Two consecutive output rows r.. of token t: the sums of W (v) and of W2 (v2).
fn out2_glu(t: u32, r: u32, v: vec2<f32>, v2: vec2<f32>) {
  if (t >= P.tokens) { return; }
  for (var j = 0u; j < 2u; j++) {
    if (r + j >= P.rows) { return; }
    let gr = P.row_base + r + j;
    var x = v[j];
    var x2 = v2[j];
//#if BIAS
    x += bias[gr];
    x2 += bias2[gr];
//#endif
    Y[t * P.out_stride + P.out_off + gr] = x * x2;
  }
}
//#endif

//#if VEC
// Load e of a step's A tile: token e % BM, columns 4·(e / BM).. (zero outside), and its store.
fn load_a(t0: u32, k0: u32, e: u32) -> vec4<f32> {
  let t = t0 + e % BM;
  let k = k0 + (e / BM) * 4u;
  if (t < P.tokens && k < k_end) { return A[(t * P.in_stride + P.in_off + k) / 4u]; }
  return vec4<f32>(0.0);
}

// Stores name every component (no vector or array indexed in a loop: a compiler may put those in
// local memory). BM and BN are multiples of 4, so a column's elements share one vec4 lane.
fn store_a(buf: u32, e: u32, a: vec4<f32>) {
  let tt = e % BM;
  let i = ((buf * BK + (e / BM) * 4u) * BM + tt) / 4u;
  let l = tt % 4u;
  const S: u32 = BM / 4u;
  As[i][l] = a.x;
  As[i + S][l] = a.y;
  As[i + 2u * S][l] = a.z;
  As[i + 3u * S][l] = a.w;
}

// Load e of a step's W tile: tile row e % BN, columns 8·(e / BN).. (one 16-byte load of bf16).
fn load_w(r0: u32, k0: u32, e: u32) -> array<vec4<f32>, 2> {
  let k = k0 + (e / BN) * 8u;
//#if GLU
  let r = r0 + glu_row(e % BN);
  if (r < P.rows && k < k_end) {
    if (glu_second(e % BN)) { return W2_get8((r * P.cols + k) / 8u, W2_scale(P.row_base + r)); }
    return W_get8((r * P.cols + k) / 8u, W_scale(P.row_base + r));
  }
//#else
  let r = r0 + e % BN;
  if (r < P.rows && k < k_end) { return W_get8((r * P.cols + k) / 8u, W_scale(P.row_base + r)); }
//#endif
  return array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
}

fn store_w(buf: u32, e: u32, lo: vec4<f32>, hi: vec4<f32>) {
  let rr = e % BN;
  let i = ((buf * BK + (e / BN) * 8u) * BN + rr) / 4u;
  let l = rr % 4u;
  const S: u32 = BN / 4u;
  Ws[i][l] = lo.x;
  Ws[i + S][l] = lo.y;
  Ws[i + 2u * S][l] = lo.z;
  Ws[i + 3u * S][l] = lo.w;
  Ws[i + 4u * S][l] = hi.x;
  Ws[i + 5u * S][l] = hi.y;
  Ws[i + 6u * S][l] = hi.z;
  Ws[i + 7u * S][l] = hi.w;
}
//#else
// Stage a step's tiles one element per load into buffer `buf` (zero outside).
fn stage(buf: u32, t0: u32, r0: u32, k0: u32, tid: u32) {
  for (var e = tid; e < BM * BK; e += WG) {
    let tt = e % BM;
    let kk = e / BM;
    let t = t0 + tt;
    let k = k0 + kk;
    var a = 0.0;
    if (t < P.tokens && k < k_end) { a = A[t * P.in_stride + P.in_off + k]; }
    As[((buf * BK + kk) * BM + tt) / 4u][tt % 4u] = a;
  }
  for (var e = tid; e < BN * BK; e += WG) {
    let rr = e % BN;
    let kk = e / BN;
    let k = k0 + kk;
    var w = 0.0;
//#if GLU
    let r = r0 + glu_row(rr);
    if (r < P.rows && k < k_end) {
      if (glu_second(rr)) {
        w = W2_get(r * P.cols + k, W2_scale(P.row_base + r));
      } else {
        w = W_get(r * P.cols + k, W_scale(P.row_base + r));
      }
    }
//#else
    let r = r0 + rr;
    if (r < P.rows && k < k_end) { w = W_get(r * P.cols + k, W_scale(P.row_base + r)); }
//#endif
    Ws[((buf * BK + kk) * BN + rr) / 4u][rr % 4u] = w;
  }
}
//#endif

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let r0 = wid.x * RN;
  let t0 = wid.y * BM;
  let tx = tid % NTX;
  let ty = tid / NTX;
//#if SPLIT
  plane = wid.z;
  let k_begin = min(P.cols, wid.z * P.split_cols);
  k_end = min(P.cols, k_begin + P.split_cols);
//#else
  let k_begin = 0u;
  k_end = P.cols;
//#endif
{{DECLS}}
//#if VEC
{{PROLOGUE}}
//#else
  stage(0u, t0, r0, k_begin, tid);
//#endif
  workgroupBarrier();
  let steps = (k_end - k_begin + BK - 1u) / BK;
  for (var s = 0u; s < steps; s++) {
    let cur = s & 1u;
    let nxt = cur ^ 1u;
    let k1 = k_begin + (s + 1u) * BK;
    let more = s + 1u < steps;
//#if VEC
{{FETCH}}
//#else
    if (more) { stage(nxt, t0, r0, k1, tid); }
//#endif
    for (var kk = 0u; kk < BK; kk++) {
      let ab = (cur * BK + kk) * (BM / 4u);
      let wb = (cur * BK + kk) * (BN / 4u);
{{FMA}}
    }
//#if VEC
{{STORE}}
//#endif
    workgroupBarrier();
  }
{{EPILOGUE}}
}
