// SGLU and the down projection in one dispatch, for up to 4 sequences per workgroup:
//   a = srms(x);  g = (a·W1ᵀ + b1) ⊙ (a·W2ᵀ + b2);  x ← x + g·W3ᵀ + b3
// W1, W2 are [G, D], W3 is [D, G], each in its stored dtype (weights as in matvec.wgsl).
// Workgroup w computes the R rows w·R .. w·R + R of g (L = 256/R lanes per row, lane l taking the
// 8-column chunks l, l + L, ... in order, then the lanes summed in order), then the partial of every
// output row of the down projection over those R columns of W3. The partials are summed by the
// workgroups that finish last, without waiting: the last of each group of F workgroups (an atomic
// counter per group) sums its group's partials in workgroup order, and the last group to finish
// sums the NG group sums in group order and adds them into x. Every sum of a sequence follows the
// matrix shape only (R, L, F), never the batch: the same bits at every batch size. The counters are
// left at 0 for the next dispatch.

struct Params {
  dim: u32,   // D: columns of W1/W2, rows of W3, width of x
  glu: u32,   // G: rows of W1/W2, columns of W3
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ctl: array<u32>;        // [0] = sequences in the batch
@group(0) @binding(2) var<storage, read_write> xres: array<f32>; // [B, D] input and residual
//#weights W1 3 4
//#weights W2 5 6
//#weights W3 7 8
//#if BIAS12
@group(0) @binding(9) var<storage, read> bias1: array<f32>;
@group(0) @binding(10) var<storage, read> bias2: array<f32>;
//#endif
//#if BIAS3
@group(0) @binding(11) var<storage, read> bias3: array<f32>;
//#endif
@group(0) @binding(12) var<storage, read_write> parts: array<f32>;   // [B, NWG, D]
@group(0) @binding(13) var<storage, read_write> sums: array<f32>;    // [B, NG, D] group sums
@group(0) @binding(14) var<storage, read_write> count: array<atomic<u32>>;  // [tiles, NG + 1]

const NB: u32 = 4u;               // sequences per workgroup
const R: u32 = {{R}}u;            // rows of g per workgroup (a multiple of 8)
const L: u32 = 256u / R;          // lanes per row
const CHUNKS: u32 = {{CHUNKS}}u;  // 8-column chunks per lane: ceil(D / (8·L))
const NWG: u32 = {{NWG}}u;        // workgroups along x: ceil(G / R)
const F: u32 = {{F}}u;            // workgroups per group of the first sum
const NG: u32 = {{NG}}u;          // groups: ceil(NWG / F)
const RPT: u32 = {{RPT}}u;        // output rows per thread: ceil(D / 256)

var<workgroup> pa: array<vec4<f32>, 256>;  // per thread: W1 sums of the 4 sequences
var<workgroup> pb: array<vec4<f32>, 256>;  // W2 sums
var<workgroup> ps: array<vec4<f32>, 256>;  // squares of x
var<workgroup> gw: array<vec4<f32>, R>;    // g of the R rows, the 4 sequences
var<workgroup> flag: u32;

// Input chunk (8 columns from c0) of sequence b, zero past the batch.
fn x8(b: u32, nseq: u32, c0: u32, live: bool) -> array<vec4<f32>, 2> {
  if (b >= nseq || !live) { return array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0)); }
  let i = b * P.dim + c0;
  return array<vec4<f32>, 2>(
    vec4<f32>(xres[i], xres[i + 1u], xres[i + 2u], xres[i + 3u]),
    vec4<f32>(xres[i + 4u], xres[i + 5u], xres[i + 6u], xres[i + 7u]),
  );
}

fn dot8(w: array<vec4<f32>, 2>, x: array<vec4<f32>, 2>) -> f32 {
  return dot(w[0], x[0]) + dot(w[1], x[1]);
}

// True when this workgroup is the last of `n` to add to counter `k` (which it then resets).
fn arrive(k: u32, n: u32, tid: u32) -> bool {
  storageBarrier();
  if (tid == 0u) {
    flag = select(0u, 1u, atomicAdd(&count[k], 1u) == n - 1u);
    if (flag == 1u) { atomicStore(&count[k], 0u); }
  }
  let last = workgroupUniformLoad(&flag) == 1u;
  storageBarrier();
  return last;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let nseq = ctl[0];
  let b0 = wid.y * NB;
  let rr = tid / L;
  let lane = tid % L;
  let row = min(wid.x * R + rr, P.glu - 1u);
  let s1 = W1_scale(row);
  let s2 = W2_scale(row);
  // SGLU rows: every lane group also sums the squares of the columns it reads (group 0's are used).
  var a = vec4<f32>(0.0);
  var g = vec4<f32>(0.0);
  var s = vec4<f32>(0.0);
  for (var i = 0u; i < CHUNKS; i++) {
    let c_real = (i * L + lane) * 8u;
    let live = c_real < P.dim;
    let c0 = min(c_real, P.dim - 8u);
    let w1 = W1_get8((row * P.dim + c0) / 8u, s1);
    let w2 = W2_get8((row * P.dim + c0) / 8u, s2);
    let x0 = x8(b0, nseq, c0, live);
    let x1 = x8(b0 + 1u, nseq, c0, live);
    let x2 = x8(b0 + 2u, nseq, c0, live);
    let x3 = x8(b0 + 3u, nseq, c0, live);
    a += vec4<f32>(dot8(w1, x0), dot8(w1, x1), dot8(w1, x2), dot8(w1, x3));
    g += vec4<f32>(dot8(w2, x0), dot8(w2, x1), dot8(w2, x2), dot8(w2, x3));
    s += vec4<f32>(dot8(x0, x0), dot8(x1, x1), dot8(x2, x2), dot8(x3, x3));
  }
  pa[tid] = a;
  pb[tid] = g;
  ps[tid] = s;
  workgroupBarrier();
  if (tid < R) {
    var sa = vec4<f32>(0.0);
    var sb = vec4<f32>(0.0);
    var ss = vec4<f32>(0.0);
    for (var l = 0u; l < L; l++) {
      sa += pa[tid * L + l];
      sb += pb[tid * L + l];
      ss += ps[l];
    }
    let scale = 1.0 / sqrt(ss / f32(P.dim) + 1e-6);
    let r = wid.x * R + tid;
    var v1 = sa * scale;
    var v2 = sb * scale;
//#if BIAS12
    v1 += bias1[min(r, P.glu - 1u)];
    v2 += bias2[min(r, P.glu - 1u)];
//#endif
    gw[tid] = select(vec4<f32>(0.0), v1 * v2, r < P.glu);
  }
  workgroupBarrier();
  // Partial of every output row d over columns i0 .. i0 + R of W3 (chunks past G contribute 0).
  let i0 = wid.x * R;
  for (var k = 0u; k < RPT; k++) {
    let d = tid + k * 256u;
    let dr = min(d, P.dim - 1u);
    let s3 = W3_scale(dr);
    var p = vec4<f32>(0.0);
    for (var c = 0u; c < R / 8u; c++) {
      if (i0 + 8u * c < P.glu) {
        let w = W3_get8((dr * P.glu + i0) / 8u + c, s3);
        let q = 8u * c;
        p += w[0].x * gw[q] + w[0].y * gw[q + 1u] + w[0].z * gw[q + 2u] + w[0].w * gw[q + 3u];
        p += w[1].x * gw[q + 4u] + w[1].y * gw[q + 5u] + w[1].z * gw[q + 6u] + w[1].w * gw[q + 7u];
      }
    }
    if (d < P.dim) {
      let at = (b0 * NWG + wid.x) * P.dim + d;
      if (b0 < nseq) { parts[at] = p.x; }
      if (b0 + 1u < nseq) { parts[at + NWG * P.dim] = p.y; }
      if (b0 + 2u < nseq) { parts[at + 2u * NWG * P.dim] = p.z; }
      if (b0 + 3u < nseq) { parts[at + 3u * NWG * P.dim] = p.w; }
    }
  }
  // First sum: the last workgroup of the group adds the group's partials in order.
  let grp = wid.x / F;
  let first = grp * F;
  let members = min(F, NWG - first);
  if (!arrive(wid.y * (NG + 1u) + grp, members, tid)) { return; }
  for (var k = 0u; k < RPT; k++) {
    let d = tid + k * 256u;
    if (d < P.dim) {
      for (var j = 0u; j < NB; j++) {
        let b = b0 + j;
        if (b < nseq) {
          var acc = 0.0;
          for (var m = 0u; m < members; m++) { acc += parts[(b * NWG + first + m) * P.dim + d]; }
          sums[(b * NG + grp) * P.dim + d] = acc;
        }
      }
    }
  }
  // Second sum: the last group adds the group sums in order into x.
  if (!arrive(wid.y * (NG + 1u) + NG, NG, tid)) { return; }
  for (var k = 0u; k < RPT; k++) {
    let d = tid + k * 256u;
    if (d < P.dim) {
      for (var j = 0u; j < NB; j++) {
        let b = b0 + j;
        if (b < nseq) {
          var acc = 0.0;
          for (var q = 0u; q < NG; q++) { acc += sums[(b * NG + q) * P.dim + d]; }
//#if BIAS3
          acc += bias3[d];
//#endif
          xres[b * P.dim + d] = xres[b * P.dim + d] + acc;
        }
      }
    }
  }
}
