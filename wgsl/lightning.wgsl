// Lightning Attention prefill of decayed linear attention, in blocks of BLK tokens, parallel over
// blocks (four stages, chosen by a define):
//   PREP: q', k' = LRPE(act(q)), LRPE(act(k)), head-major [h][t][dk]
//   KV:   per block n: KV_n = Σ_{t∈n} λ^(e_n-1-t) k'_tᵀ v_t                     ([dk, dv])
//   SCAN: S_before(n) = λ^(m_{n-1})·S_before(n-1) + KV_{n-1}; the slot ends at the final S
//   OUT:  o_t = Σ_{s_n≤j≤t} λ^(t-j)(q'_t·k'_j)v_j + λ^(t-s_n+1) q'_t·S_before(n)  (intra + inter)
// λ^x is exp(-rate·x) computed directly, as the official code does.

struct Params {
  tokens: u32,
  heads: u32,
  head_dim: u32,   // dv = hd
  dk: u32,
  hidden: u32,     // H
  pos0: u32,       // absolute position of token 0 (LRPE)
  slot_off: u32,   // first float of the slot's state for this layer
  nblocks: u32,
  lrpe: u32,
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> rates: array<f32>;        // [heads] decay rates
//#if STAGE_PREP
@group(0) @binding(2) var<storage, read> qkvu: array<f32>;         // [T, 4H]
@group(0) @binding(3) var<storage, read_write> qp: array<f32>;     // [h][T][dk]
@group(0) @binding(4) var<storage, read_write> kp: array<f32>;     // [h][T][dk]
//#if LRPE
@group(0) @binding(5) var<storage, read> theta: array<f32>;        // [h, hd]
//#endif
//#include lrpe
//#endif
//#if STAGE_KV
@group(0) @binding(2) var<storage, read> qkvu: array<f32>;
@group(0) @binding(4) var<storage, read> kp: array<f32>;
@group(0) @binding(6) var<storage, read_write> kvs: array<f32>;    // [h][nblocks][dk][dv]
//#endif
//#if STAGE_SCAN
@group(0) @binding(6) var<storage, read_write> kvs: array<f32>;
@group(0) @binding(7) var<storage, read_write> state: array<f32>;  // the layer's slot pool
//#endif
//#if STAGE_OUT
@group(0) @binding(2) var<storage, read> qkvu: array<f32>;
@group(0) @binding(3) var<storage, read> qp: array<f32>;
@group(0) @binding(4) var<storage, read> kp: array<f32>;
@group(0) @binding(6) var<storage, read> kvs: array<f32>;
@group(0) @binding(8) var<storage, read_write> o: array<f32>;      // [T, H]
//#endif

const BLK: u32 = {{BLK}}u;

fn block_len(n: u32) -> u32 {
  return min(BLK, P.tokens - n * BLK);
}

//#if STAGE_PREP
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let e = gid.x + gid.y * 65535u * 256u;
  if (e >= P.tokens * P.hidden) { return; }
  let t = e / P.hidden;
  let c = e % P.hidden;
  let h = c / P.head_dim;
  let i = c % P.head_dim;
  let q = act(qkvu[t * 4u * P.hidden + c]);
  let k = act(qkvu[t * 4u * P.hidden + P.hidden + c]);
  let dst = (h * P.tokens + t) * P.dk;
  if (P.lrpe == 1u) {
//#if LRPE
    let cs = lrpe_cos_sin(theta[h * P.head_dim + i], P.pos0 + t);
    qp[dst + i] = q * cs.x;
    qp[dst + P.head_dim + i] = q * cs.y;
    kp[dst + i] = k * cs.x;
    kp[dst + P.head_dim + i] = k * cs.y;
//#endif
  } else {
    qp[dst + i] = q;
    kp[dst + i] = k;
  }
}
//#endif

//#if STAGE_KV
// Workgroup per (row tile of 32 key dims, block, head); thread: one key dim, columns j ≡ tid mod 8.
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let n = wid.y;
  let h = wid.z;
  let i = wid.x * 32u + tid / 8u;
  if (i >= P.dk) { return; }
  let s = n * BLK;
  let m = block_len(n);
  let rate = rates[h];
  let base = ((h * P.nblocks + n) * P.dk + i) * P.head_dim;
  for (var j = tid % 8u; j < P.head_dim; j += 8u) {
    var acc = 0.0;
    for (var t = 0u; t < m; t++) {
      let w = exp(-rate * f32(m - 1u - t)) * kp[(h * P.tokens + s + t) * P.dk + i];
      acc += w * qkvu[(s + t) * 4u * P.hidden + 2u * P.hidden + h * P.head_dim + j];
    }
    kvs[base + j] = acc;
  }
}
//#endif

//#if STAGE_SCAN
// Thread per state element: walk the blocks in order, leaving S_before(n) in place of KV_n.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let e = gid.x + gid.y * 65535u * 256u;
  let per_head = P.dk * P.head_dim;
  if (e >= P.heads * per_head) { return; }
  let h = e / per_head;
  let ij = e % per_head;
  let rate = rates[h];
  var s = state[P.slot_off + e];
  for (var n = 0u; n < P.nblocks; n++) {
    let idx = (h * P.nblocks + n) * per_head + ij;
    let kv = kvs[idx];
    kvs[idx] = s;
    s = exp(-rate * f32(block_len(n))) * s + kv;
  }
  state[P.slot_off + e] = s;
}
//#endif

//#if STAGE_OUT
// Workgroup per (block, head). Thread: token t = tid / 8 of the block, columns j ≡ tid mod 8, so
// CPT = dv / 8 columns each (the head dim is a multiple of 8; the backend checks). The decayed
// scores live in workgroup memory; V and S_before(n) are read through the cache (every thread of a
// token row reads the same rows). Workgroup arrays stay small: llvmpipe's GL compile time grows
// steeply with their size.
const CPT: u32 = {{HD}}u / 8u;
var<workgroup> amat: array<vec4<f32>, {{BLK2_4}}>;   // [BLK][BLK] decayed, masked q'·k'

fn score(t: u32, j: u32) -> f32 {
  let e = t * BLK + j;
  return amat[e / 4u][e % 4u];
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let n = wid.x;
  let h = wid.y;
  let s = n * BLK;
  let m = block_len(n);
  let rate = rates[h];
  let dv = P.head_dim;
  // Intra-block scores with decay and causal mask, four per entry.
  for (var e4 = tid; e4 < BLK * BLK / 4u; e4 += 256u) {
    var v4 = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
      let e = e4 * 4u + c;
      let t = e / BLK;
      let j = e % BLK;
      if (j <= t && t < m) {
        var d = 0.0;
        let qa = (h * P.tokens + s + t) * P.dk;
        let ka = (h * P.tokens + s + j) * P.dk;
        for (var i = 0u; i < P.dk; i++) { d += qp[qa + i] * kp[ka + i]; }
        v4[c] = d * exp(-rate * f32(t - j));
      }
    }
    amat[e4] = v4;
  }
  workgroupBarrier();
  let t = tid / 8u;
  let cg = tid % 8u;
  if (t >= m) { return; }
  var acc: array<f32, CPT>;
  // Intra: Σ_{j≤t} A[t][j]·v_j.
  for (var j = 0u; j <= t; j++) {
    let a = score(t, j);
    let vrow = (s + j) * 4u * P.hidden + 2u * P.hidden + h * dv + cg;
    for (var k = 0u; k < CPT; k++) { acc[k] += a * qkvu[vrow + k * 8u]; }
  }
  // Inter: λ^(t+1)·q'_t·S_before(n).
  let qa = (h * P.tokens + s + t) * P.dk;
  let qscale = exp(-rate * f32(t + 1u));
  let sbase = (h * P.nblocks + n) * P.dk * dv + cg;
  for (var i = 0u; i < P.dk; i++) {
    let q = qp[qa + i] * qscale;
    for (var k = 0u; k < CPT; k++) { acc[k] += q * kvs[sbase + i * dv + k * 8u]; }
  }
  for (var k = 0u; k < CPT; k++) {
    o[(s + t) * P.hidden + h * dv + k * 8u + cg] = acc[k];
  }
}
//#endif
