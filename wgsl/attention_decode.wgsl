// Recurrent decode step of decayed linear attention, one workgroup per (sequence, head, block of
// CB columns of S); within it, thread (r, c) walks rows r, r+RG, ... of column c, so the state is
// read and written once with many rows in flight, and the partial o_c are summed in a fixed order:
//   q, k = act(q), act(k);  LRPE: q' = [q·cos(θ·pos), q·sin(θ·pos)] (likewise k)
//   S ← λ·S + k'ᵀ v;   o = q'·S        (S is [dk, dv] f32, read and written once)
// OUT_PROJ fuses the output projection with its srms gate and the residual (a dispatch less):
//   x ← x + srms(o)·(u ⊙ o)·Wᵀ  (+ bias)     srms over the whole hidden width H
// Each workgroup multiplies its CB gated columns by the matching CB columns of W (a partial of
// every output row, f32, in a fixed order) and adds its squares of o; the workgroup that finishes
// last for a sequence (an atomic counter per sequence, no waiting) sums the NWG partials and the
// squares in workgroup order, scales and adds into x, and resets the counter. The sums per
// sequence follow the head layout only: the same bits at every batch size.

struct Params {
  heads: u32,
  head_dim: u32,      // dv = hd
  dk: u32,            // hd, or 2·hd with LRPE
  hidden: u32,        // H
  slot_stride: u32,   // floats per slot in the state buffer (heads·dk·dv)
  lrpe: u32,
  batch_base: u32,
  dim: u32,           // OUT_PROJ: output rows D of W [D, H]
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ctl: array<u32>;      // [0] = batch size
@group(0) @binding(2) var<storage, read> rows: array<u32>;     // per sequence: slot, pos, ...
@group(0) @binding(3) var<storage, read> qkvu: array<f32>;     // [B, 4H]
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
//#if !OUT_PROJ
@group(0) @binding(5) var<storage, read_write> o: array<f32>;  // [B, H]
//#endif
@group(0) @binding(6) var<storage, read> decay: array<f32>;    // [heads] λ
//#if LRPE
@group(0) @binding(7) var<storage, read> theta: array<f32>;    // [heads, hd]
//#endif
//#if OUT_PROJ
//#weights W 8 9
@group(0) @binding(10) var<storage, read_write> xres: array<f32>;   // [B, D] residual
@group(0) @binding(11) var<storage, read_write> parts: array<f32>;  // [B, NWG, D] partials
@group(0) @binding(12) var<storage, read_write> sqs: array<f32>;    // [B, NWG] squares of o
@group(0) @binding(13) var<storage, read_write> count: array<atomic<u32>>;  // [B], left at 0
//#if BIAS
@group(0) @binding(14) var<storage, read> bias: array<f32>;    // [D]
//#endif
const NWG: u32 = {{NWG}}u;          // workgroups per sequence: heads · hd / CB
const RPT: u32 = {{RPT}}u;          // output rows per thread: ceil(D / 256)
var<workgroup> gw: array<f32, {{CB}}>;    // u ⊙ o of this workgroup's columns
var<workgroup> sqw: array<f32, {{CB}}>;   // o² of them
var<workgroup> is_last: u32;
//#endif

//#include lrpe

const ROW_WORDS: u32 = {{ROW_WORDS}}u;
const CB: u32 = {{CB}}u;            // columns of S per workgroup
const RG: u32 = 256u / CB;          // row groups: thread (r, c) updates rows i ≡ r (mod RG)
var<workgroup> qs: array<f32, {{MAX_DK}}>;
var<workgroup> ks: array<f32, {{MAX_DK}}>;
var<workgroup> part: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let b = P.batch_base + wid.y;
  let hd = P.head_dim;
  let blocks = hd / CB;
  let h = wid.x / blocks;
  let cb = wid.x % blocks;
  if (b >= ctl[0]) { return; }
  if (rows[b * ROW_WORDS + 9u] != 0u) { return; }   // the row stopped: its state stays put
  let slot = rows[b * ROW_WORDS];
  let pos = rows[b * ROW_WORDS + 1u];
  let base = b * 4u * P.hidden + h * hd;
  for (var i = tid; i < hd; i += 256u) {
    let q = act(qkvu[base + i]);
    let k = act(qkvu[base + P.hidden + i]);
    if (P.lrpe == 1u) {
//#if LRPE
      let cs = lrpe_cos_sin(theta[h * hd + i], pos);
      qs[i] = q * cs.x;
      qs[hd + i] = q * cs.y;
      ks[i] = k * cs.x;
      ks[hd + i] = k * cs.y;
//#endif
    } else {
      qs[i] = q;
      ks[i] = k;
    }
  }
  workgroupBarrier();
  let lambda = decay[h];
  let r = tid / CB;
  let j = cb * CB + tid % CB;
  let v = qkvu[base + 2u * P.hidden + j];
  let sbase = slot * P.slot_stride + h * P.dk * hd + j;
  var acc = 0.0;
  // Four rows at a time: the loads are issued before the stores so they overlap.
  var i = r;
  for (; i + 3u * RG < P.dk; i += 4u * RG) {
    let i0 = sbase + i * hd;
    let i1 = i0 + RG * hd;
    let i2 = i1 + RG * hd;
    let i3 = i2 + RG * hd;
    let s0 = lambda * state[i0] + ks[i] * v;
    let s1 = lambda * state[i1] + ks[i + RG] * v;
    let s2 = lambda * state[i2] + ks[i + 2u * RG] * v;
    let s3 = lambda * state[i3] + ks[i + 3u * RG] * v;
    state[i0] = s0;
    state[i1] = s1;
    state[i2] = s2;
    state[i3] = s3;
    acc += qs[i] * s0;
    acc += qs[i + RG] * s1;
    acc += qs[i + 2u * RG] * s2;
    acc += qs[i + 3u * RG] * s3;
  }
  for (; i < P.dk; i += RG) {
    let idx = sbase + i * hd;
    let s = lambda * state[idx] + ks[i] * v;
    state[idx] = s;
    acc += qs[i] * s;
  }
  part[tid] = acc;
  workgroupBarrier();
  if (r == 0u) {
    var o_j = 0.0;
    for (var g = 0u; g < RG; g++) { o_j += part[g * CB + tid]; }
//#if OUT_PROJ
    gw[tid] = o_j * qkvu[base + 3u * P.hidden + j];
    sqw[tid] = o_j * o_j;
//#else
    o[b * P.hidden + h * hd + j] = o_j;
//#endif
  }
//#if OUT_PROJ
  workgroupBarrier();
  // Partial of every output row d over this workgroup's columns col0 .. col0 + CB.
  let col0 = h * hd + cb * CB;
  let pbase = (b * NWG + wid.x) * P.dim;
  // RPT rows per thread, a compile-time count: the loads of every row can be issued up front.
  // Rows past the end read the last row and are not written.
  for (var k = 0u; k < RPT; k++) {
    let d = tid + k * 256u;
    let dr = min(d, P.dim - 1u);
    let ws = W_scale(dr);
    let at = (dr * P.hidden + col0) / 8u;
    var p = 0.0;
    for (var c = 0u; c < CB / 8u; c++) {
      let w = W_get8(at + c, ws);
      let g0 = vec4<f32>(gw[8u * c], gw[8u * c + 1u], gw[8u * c + 2u], gw[8u * c + 3u]);
      let g1 = vec4<f32>(gw[8u * c + 4u], gw[8u * c + 5u], gw[8u * c + 6u], gw[8u * c + 7u]);
      p += dot(w[0], g0) + dot(w[1], g1);
    }
    if (d < P.dim) { parts[pbase + d] = p; }
  }
  if (tid == 0u) {
    var s = 0.0;
    for (var c = 0u; c < CB; c++) { s += sqw[c]; }
    sqs[b * NWG + wid.x] = s;
  }
  // Partials out before the count; the last workgroup of the sequence reads them after it.
  storageBarrier();
  if (tid == 0u) { is_last = select(0u, 1u, atomicAdd(&count[b], 1u) == NWG - 1u); }
  workgroupBarrier();
  storageBarrier();
  if (is_last == 0u) { return; }
  var ss = 0.0;
  for (var g = 0u; g < NWG; g++) { ss += sqs[b * NWG + g]; }
  let scale = 1.0 / sqrt(ss / f32(P.hidden) + 1e-6);
  for (var k = 0u; k < RPT; k++) {
    let d = tid + k * 256u;
    if (d < P.dim) {
      var acc = 0.0;
      for (var g = 0u; g < NWG; g++) { acc += parts[(b * NWG + g) * P.dim + d]; }
      var v = acc * scale;
//#if BIAS
      v += bias[d];
//#endif
      xres[b * P.dim + d] = xres[b * P.dim + d] + v;
    }
  }
  if (tid == 0u) { atomicStore(&count[b], 0u); }
//#endif
}
