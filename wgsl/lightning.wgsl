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
// Workgroup per (block, head). Thread: token t = tid / 8 of the block, columns j ≡ tid mod 8.
var<workgroup> amat: array<f32, {{BLK2}}>;     // [BLK][BLK] decayed, masked q'·k'
var<workgroup> tile: array<f32, 4096>;         // V block, then S rows
var<workgroup> qt: array<f32, {{BLK2}}>;       // [BLK][BLK] scaled q' columns

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let n = wid.x;
  let h = wid.y;
  let s = n * BLK;
  let m = block_len(n);
  let rate = rates[h];
  let dv = P.head_dim;
  // Intra-block scores with decay and causal mask.
  for (var e = tid; e < BLK * BLK; e += 256u) {
    let t = e / BLK;
    let j = e % BLK;
    var v = 0.0;
    if (j <= t && t < m) {
      var d = 0.0;
      let qa = (h * P.tokens + s + t) * P.dk;
      let ka = (h * P.tokens + s + j) * P.dk;
      for (var i = 0u; i < P.dk; i++) { d += qp[qa + i] * kp[ka + i]; }
      v = d * exp(-rate * f32(t - j));
    }
    amat[e] = v;
  }
  // V block into workgroup memory.
  for (var e = tid; e < BLK * dv; e += 256u) {
    let j = e / dv;
    let c = e % dv;
    var v = 0.0;
    if (j < m) { v = qkvu[(s + j) * 4u * P.hidden + 2u * P.hidden + h * dv + c]; }
    tile[e] = v;
  }
  workgroupBarrier();
  let t = tid / 8u;
  let cg = tid % 8u;
  var acc: array<f32, 32>;   // columns cg, cg+8, ... (dv ≤ 256)
  if (t < m) {
    for (var j = 0u; j <= t; j++) {
      let a = amat[t * BLK + j];
      for (var k = 0u; k * 8u + cg < dv; k++) { acc[k] += a * tile[j * dv + k * 8u + cg]; }
    }
  }
  workgroupBarrier();
  // Inter-block: λ^(t+1)·q'_t·S_before(n), S streamed through workgroup memory in row tiles.
  let rows_per_tile = min(4096u / dv, BLK);
  let sbase = (h * P.nblocks + n) * P.dk * dv;
  for (var i0 = 0u; i0 < P.dk; i0 += rows_per_tile) {
    let nr = min(rows_per_tile, P.dk - i0);
    for (var e = tid; e < nr * dv; e += 256u) { tile[e] = kvs[sbase + i0 * dv + e]; }
    for (var e = tid; e < BLK * rows_per_tile; e += 256u) {
      let tt = e / rows_per_tile;
      let ii = e % rows_per_tile;
      var v = 0.0;
      if (tt < m && ii < nr) { v = qp[(h * P.tokens + s + tt) * P.dk + i0 + ii] * exp(-rate * f32(tt + 1u)); }
      qt[tt * rows_per_tile + ii] = v;
    }
    workgroupBarrier();
    if (t < m) {
      for (var ii = 0u; ii < nr; ii++) {
        let q = qt[t * rows_per_tile + ii];
        for (var k = 0u; k * 8u + cg < dv; k++) { acc[k] += q * tile[ii * dv + k * 8u + cg]; }
      }
    }
    workgroupBarrier();
  }
  if (t < m) {
    for (var k = 0u; k * 8u + cg < dv; k++) {
      o[(s + t) * P.hidden + h * dv + k * 8u + cg] = acc[k];
    }
  }
}
//#endif
