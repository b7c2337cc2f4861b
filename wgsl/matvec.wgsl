// Matrix-vector products for decode: out[b, r] = epilogue(scale_b · Σ_i W[r, i]·in_b[i] + bias[r])
// for NB sequences per workgroup (weights read once, applied to NB inputs).
//
// W is [rows, cols] row-major in its stored dtype (f32, bf16/f16 packed two per u32, or q8: int8
// four per u32 with row scales, rebuilt as q·s before use, exactly as the CPU reference). A group of
// LANES threads computes RPG rows: lane l takes the 8-column chunks l, l+LANES, ... in order, reading
// the inputs straight from memory (cached; no staging, so the loop has no barriers), then the partial
// sums go through workgroup memory (ROUND sums at a time) and one fixed tree over the lanes: pairs
// (l, l + s) for s = LANES/2, ..., 1. With few sums the lanes step through the tree together; with
// many (SERIAL) each thread reduces whole sums with the same additions written out as one
// expression, which needs no barrier per level; where the lanes of a group fit in one subgroup
// (SUBGROUP tilings), pairs of lanes exchange halves of their sums by subgroup shuffles: the same
// additions once more. Each (row, sequence) sum therefore depends on LANES only (a function of the matrix
// shape), never on NB, RPG, ROUND or SERIAL: decode is batch-invariant.
// The loops over the accumulators (rows R, sequences J) are unrolled as text by //#for
// (src/gpu/shaders.ts); the numbers come from the tiling (src/gpu/matvec_tiling.ts), which also
// generates the reduction (ROUNDS, below).
// Input transforms (fused so no separate normalization pass is needed):
//   RMS_SCALE: scale_b = 1/sqrt(mean(in_b²) + 1e-6)   (SimpleRMSNorm of the input, eq. srms;
//              srms(x)·W = scale·(x·W), so the norm is a per-sequence factor; every lane group sums
//              the squares of the columns it reads, in the same order as the products)
//   GATE:      the input is multiplied elementwise by in2 (u ⊙ srms(o): scale from o, gate u)
// Epilogues: OUT_ADD adds into out (residual); GLU multiplies the products of W and W2.

struct Params {
  rows: u32,       // rows of this weight chunk
  cols: u32,
  row_base: u32,   // first output row of this chunk
  in_stride: u32,
  in_off: u32,
  in2_stride: u32, // GATE: the gate u
  in2_off: u32,
  out_stride: u32,
  out_off: u32,
  batch_base: u32, // first sequence of this dispatch
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ctl: array<u32>;   // ctl[0] = sequences in the batch
//#if X4
@group(0) @binding(2) var<storage, read> inp: array<vec4<f32>>;   // offsets and strides ≡ 0 mod 4
//#if GATE
@group(0) @binding(3) var<storage, read> inp2: array<vec4<f32>>;
//#endif
//#else
@group(0) @binding(2) var<storage, read> inp: array<f32>;
//#if GATE
@group(0) @binding(3) var<storage, read> inp2: array<f32>;
//#endif
//#endif
@group(0) @binding(4) var<storage, read_write> outp: array<f32>;
//#weights W 5 9
//#if GLU
//#weights W2 6 10
//#endif
//#if BIAS
@group(0) @binding(7) var<storage, read> bias: array<f32>;
//#if GLU
@group(0) @binding(8) var<storage, read> bias2: array<f32>;
//#endif
//#endif

const LANES: u32 = {{LANES}}u;
const WG: u32 = 256u;
const GROUPS: u32 = WG / LANES;   // lane groups per workgroup
const RPG: u32 = {{RPG}}u;        // rows per lane group
const NB: u32 = {{NB}}u;
const OUTS: u32 = RPG * NB;
const CHUNKS: u32 = {{CHUNKS}}u;  // 8-column chunks per lane: ceil(cols / (8·LANES))
//#if GLU
const SUMS: u32 = 2u * OUTS + NB; // per lane group: products of W, of W2, squares of each input
//#else
const SUMS: u32 = OUTS + NB;
//#endif
const ROUND: u32 = {{ROUND}}u;    // sums per round through workgroup memory
// Partial sums of one round, [ROUND][PS]: sum k of lane l of group g at k·PS + g·(LANES+1) + l.
// The padding makes both the lane writes and the SERIAL reads (thread ↔ (k, g), k·GROUPS + g
// consecutive) hit distinct banks: PS ≡ GROUPS and LANES ≡ 0 (mod 32).
const PS: u32 = WG + GROUPS;
var<workgroup> parts: array<f32, {{PARTS}}>;
// Reduced sums, [SUMS][GROUPS].
var<workgroup> red: array<f32, SUMS * GROUPS>;

// acc + w·x over one 8-column chunk as a chain of fused multiply-adds, in column order (8
// instructions where two dot products and two additions took 10; on the H200 at batch 64 with the
// butterfly reduction, 31.6 against 43.7 µs on 4096 × 1024: bench/matvec_micro.ts, 2026-12-05).
fn fma8(w0: vec4<f32>, w1: vec4<f32>, x0: vec4<f32>, x1: vec4<f32>, acc: f32) -> f32 {
  var a = fma(w0.x, x0.x, acc);
  a = fma(w0.y, x0.y, a);
  a = fma(w0.z, x0.z, a);
  a = fma(w0.w, x0.w, a);
  a = fma(w1.x, x1.x, a);
  a = fma(w1.y, x1.y, a);
  a = fma(w1.z, x1.z, a);
  return fma(w1.w, x1.w, a);
}

//#if X4
//#else
// Input element k of sequence b.
fn x_at(b: u32, k: u32) -> f32 {
  return inp[b * P.in_stride + P.in_off + k];
}
//#endif

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let nseq = ctl[0];
  let b0 = P.batch_base + wid.y * NB;
  let lane = tid % LANES;
  let grp = tid / LANES;
  let row0 = (wid.x * GROUPS + grp) * RPG;
  let last_row = P.rows - 1u;
  // Accumulators as named scalars, the loops over rows R and sequences J unrolled as text (//#for):
  // a private array indexed in a loop can end up in local memory.
  // a_R_J: row row0 + R times sequence b0 + J; g_R_J: the same with W2 (GLU); s_J: squares.
//#for R in 0..RPG
//#for J in 0..NB
  var a_{{R}}_{{J}} = 0.0;
//#endfor
//#endfor
//#if GLU
//#for R in 0..RPG
//#for J in 0..NB
  var g_{{R}}_{{J}} = 0.0;
//#endfor
//#endfor
//#endif
//#for J in 0..NB
  var s_{{J}} = 0.0;
//#endfor
  // Row scales of q8 weights (1 for other dtypes; the shader compiler folds them away).
//#for R in 0..RPG
  let ws_{{R}} = W_scale(P.row_base + min(row0 + {{R}}u, last_row));
//#if GLU
  let vs_{{R}} = W2_scale(P.row_base + min(row0 + {{R}}u, last_row));
//#endif
//#endfor
  // Rows past the end read the last row (valid memory) and are never written.
//#if VEC8
  // A compile-time trip count lets the compiler unroll and issue every weight load up front.
  // Chunks past the end re-read the last chunk and meet zero inputs.
  for (var i = 0u; i < CHUNKS; i++) {
    let c_real = (i * LANES + lane) * 8u;
    let live = c_real < P.cols;
    let c0 = min(c_real, P.cols - 8u);
//#for R in 0..RPG
    let w_{{R}} = W_get8((min(row0 + {{R}}u, last_row) * P.cols + c0) / 8u, ws_{{R}});
//#if GLU
    let v_{{R}} = W2_get8((min(row0 + {{R}}u, last_row) * P.cols + c0) / 8u, vs_{{R}});
//#endif
//#endfor
//#for J in 0..NB
    {
      var x0 = vec4<f32>(0.0);
      var x1 = vec4<f32>(0.0);
//#if X4
      if (live && b0 + {{J}}u < nseq) {
        let xi = ((b0 + {{J}}u) * P.in_stride + P.in_off + c0) / 4u;
        x0 = inp[xi];
        x1 = inp[xi + 1u];
      }
//#else
      if (live && b0 + {{J}}u < nseq) {
        x0 = vec4<f32>(x_at(b0 + {{J}}u, c0 + 0u), x_at(b0 + {{J}}u, c0 + 1u), x_at(b0 + {{J}}u, c0 + 2u), x_at(b0 + {{J}}u, c0 + 3u));
        x1 = vec4<f32>(x_at(b0 + {{J}}u, c0 + 4u), x_at(b0 + {{J}}u, c0 + 5u), x_at(b0 + {{J}}u, c0 + 6u), x_at(b0 + {{J}}u, c0 + 7u));
      }
//#endif
      s_{{J}} += dot(x0, x0) + dot(x1, x1);
//#if GATE
//#if X4
      if (live && b0 + {{J}}u < nseq) {
        let gi = ((b0 + {{J}}u) * P.in2_stride + P.in2_off + c0) / 4u;
        x0 *= inp2[gi];
        x1 *= inp2[gi + 1u];
      }
//#else
      if (live && b0 + {{J}}u < nseq) {
        let gb = (b0 + {{J}}u) * P.in2_stride + P.in2_off + c0;
        x0 *= vec4<f32>(inp2[gb + 0u], inp2[gb + 1u], inp2[gb + 2u], inp2[gb + 3u]);
        x1 *= vec4<f32>(inp2[gb + 4u], inp2[gb + 5u], inp2[gb + 6u], inp2[gb + 7u]);
      }
//#endif
//#endif
//#for R in 0..RPG
      a_{{R}}_{{J}} = fma8(w_{{R}}[0], w_{{R}}[1], x0, x1, a_{{R}}_{{J}});
//#if GLU
      g_{{R}}_{{J}} = fma8(v_{{R}}[0], v_{{R}}[1], x0, x1, g_{{R}}_{{J}});
//#endif
//#endfor
    }
//#endfor
  }
//#else
  for (var c0 = lane * 8u; c0 < P.cols; c0 += LANES * 8u) {
    for (var e = 0u; e < 8u; e++) {
      let k = c0 + e;
      if (k < P.cols) {
//#for J in 0..NB
        {
          var x = 0.0;
          if (b0 + {{J}}u < nseq) { x = x_at(b0 + {{J}}u, k); }
          s_{{J}} += x * x;
//#if GATE
          if (b0 + {{J}}u < nseq) { x *= inp2[(b0 + {{J}}u) * P.in2_stride + P.in2_off + k]; }
//#endif
//#for R in 0..RPG
          a_{{R}}_{{J}} += W_get(min(row0 + {{R}}u, last_row) * P.cols + k, ws_{{R}}) * x;
//#if GLU
          g_{{R}}_{{J}} += W2_get(min(row0 + {{R}}u, last_row) * P.cols + k, vs_{{R}}) * x;
//#endif
//#endfor
        }
//#endfor
      }
    }
  }
//#endif
  // Each sum is reduced over the lanes of its group into red[k·GROUPS + grp]; k in kernel order:
  // a_R_J at R·NB + J, g_R_J at OUTS + R·NB + J, s_J at SUMS - NB + J. ROUNDS is generated
  // (src/gpu/matvec_tiling.ts), the unrolled form of
  //   for (r0 = 0; r0 < SUMS; r0 += ROUND) {              // n = min(ROUND, SUMS - r0) sums
  //     for (k < n) { parts[k·PS + slot] = sum[r0 + k]; }
  //     workgroupBarrier();
  //     SERIAL: for (t = tid; t < n·GROUPS; t += WG) {    // (k, g) = (t / GROUPS, t % GROUPS)
  //               red[(r0 + k)·GROUPS + g] = the tree over parts[k·PS + g·(LANES + 1) + l], l < LANES
  //             }                                        // (one expression: laneTreeExpression)
  //     else:   for (s = LANES/2; s > 0; s /= 2) { lanes l < s: parts[k·PS + slot] += parts[.. + s];
  //                                                 workgroupBarrier(); }
  //             lane 0: red[(r0 + k)·GROUPS + grp] = parts[k·PS + slot]   (k < n)
  //     workgroupBarrier();
  //   }
  // or, SUBGROUP: the same tree as a butterfly of subgroup shuffles (each level splits the list of
  //   sums between the two lanes of a pair while it is even; see butterfly() in
  //   src/gpu/matvec_tiling.ts), then one workgroupBarrier().
  // It stays generated: sum[r0 + k] names a scalar (a private array indexed in a loop can end up
  // in local memory), and which round a sum falls in depends on ROUND, which //#for cannot compute.
  // The same additions written as WGSL helpers (stash(k, r0, n, ...) with constant arguments, the
  // tree as functions treeN(q, s) = tree(N/2)(q, 2s) + tree(N/2)(q + s, 2s)) gave the same bits on
  // llvmpipe but change what the H200's compiler is given, and could not be measured there yet.
  let slot = grp * (LANES + 1u) + lane;
{{ROUNDS}}
  // Lane o of the group writes output o = (rr, j).
  for (var o = lane; o < OUTS; o += LANES) {
    let rr = o / NB;
    let j = o % NB;
    let row = row0 + rr;
    let b = b0 + j;
    if (row < P.rows && b < nseq) {
//#if RMS_SCALE
      let scale = 1.0 / sqrt(red[(SUMS - NB + j) * GROUPS + grp] / f32(P.cols) + 1e-6);
//#else
      let scale = 1.0;
//#endif
      let r = P.row_base + row;
      var v = red[o * GROUPS + grp] * scale;
//#if BIAS
      v += bias[r];
//#endif
//#if GLU
      var v2 = red[(OUTS + o) * GROUPS + grp] * scale;
//#if BIAS
      v2 += bias2[r];
//#endif
      v = v * v2;
//#endif
      let oi = b * P.out_stride + P.out_off + r;
//#if OUT_ADD
      outp[oi] = outp[oi] + v;
//#else
      outp[oi] = v;
//#endif
    }
  }
}
