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
@group(0) @binding(2) var<storage, read> qkvu: array<vec4<f32>>;   // H, hd ≡ 0 mod 8
@group(0) @binding(4) var<storage, read> kp: array<vec4<f32>>;     // dk ≡ 0 mod 8
@group(0) @binding(6) var<storage, read_write> kvs: array<vec4<f32>>;   // [h][nblocks][dk][dv]
//#endif
//#if STAGE_SCAN
@group(0) @binding(6) var<storage, read_write> kvs: array<f32>;
@group(0) @binding(7) var<storage, read_write> state: array<f32>;  // the layer's slot pool
//#endif
//#if STAGE_OUT
@group(0) @binding(2) var<storage, read> qkvu: array<vec4<f32>>;   // H, hd ≡ 0 mod 8
@group(0) @binding(3) var<storage, read> qp: array<vec4<f32>>;     // dk ≡ 0 mod 8
@group(0) @binding(4) var<storage, read> kp: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> kvs: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> o: array<vec4<f32>>;   // [T, H]
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
// Workgroup per (64 key dims, block, head); its 8 warps take 8 key dims each, a lane 4 consecutive
// columns of v (one vec4; lanes 32 vec4 apart when the head dim exceeds 128). Each step over the
// block's tokens makes 32 products from two vec4 of k' (the same for the whole warp) and one of v.
// The accumulators are named registers, never an array indexed in a loop (which a compiler may put
// in local memory). The head dim is a multiple of 8 (the backend checks), so dk is too: a warp's
// 8 key dims are all live or none.
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let n = wid.y;
  let h = wid.z;
  let i0 = wid.x * 64u + (tid / 32u) * 8u;
  if (i0 >= P.dk) { return; }
  let s = n * BLK;
  let m = block_len(n);
  let rate = rates[h];
  let dv4 = P.head_dim / 4u;
  for (var c4 = tid % 32u; c4 < dv4; c4 += 32u) {
    var a0 = vec4<f32>(0.0);   // key dim i0 + 0, columns 4·c4..
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    for (var t = 0u; t < m; t++) {
      let d = exp(-rate * f32(m - 1u - t));
      let ka = ((h * P.tokens + s + t) * P.dk + i0) / 4u;
      let lo = d * kp[ka];
      let hi = d * kp[ka + 1u];
      let v = qkvu[((s + t) * 4u * P.hidden + 2u * P.hidden + h * P.head_dim) / 4u + c4];
      a0 += lo.x * v;
      a1 += lo.y * v;
      a2 += lo.z * v;
      a3 += lo.w * v;
      a4 += hi.x * v;
      a5 += hi.y * v;
      a6 += hi.z * v;
      a7 += hi.w * v;
    }
    let base = ((h * P.nblocks + n) * P.dk + i0) * dv4 + c4;
    kvs[base] = a0;
    kvs[base + dv4] = a1;
    kvs[base + 2u * dv4] = a2;
    kvs[base + 3u * dv4] = a3;
    kvs[base + 4u * dv4] = a4;
    kvs[base + 5u * dv4] = a5;
    kvs[base + 6u * dv4] = a6;
    kvs[base + 7u * dv4] = a7;
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
// Workgroup per (block, head). The decayed, masked scores q'_t·k'_j of the block are computed
// first into workgroup memory (a thread: one token × 4 keys, vec4 dot products over the key dims;
// zero past the causal mask and the block's end). Then a thread computes 4 consecutive tokens × 4
// consecutive columns (named vec4 registers): o_t = Σ_{j≤t} A[t][j]·v_j, then
// + Σ_i λ^(t-s_n+1)·q'_t[i]·S_before(n)[i]; each step reads one vec4 of a row of V or S_before(n)
// (coalesced over the 32 lanes) and 4 coefficients that are the same for the whole warp. Items of
// 4 tokens × 32 vec4 columns go to the 8 warps in turn. The head dim is a multiple of 8 (the backend
// checks), so dk and the offsets of the vec4 views are too. Workgroup arrays stay small: llvmpipe's
// GL compile time grows steeply with their size.
const QB: u32 = BLK / 4u;   // 4-wide groups of tokens (and of keys) in a block
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
  let dv4 = P.head_dim / 4u;
  let dk4 = P.dk / 4u;
  let row0 = h * P.tokens + s;   // first row of the block in q' and k'
  // Intra-block scores with decay and causal mask: token st, keys sj0..sj0+3.
  for (var it = tid; it < BLK * QB; it += 256u) {
    let st = it / QB;
    let sj0 = (it % QB) * 4u;
    var d = vec4<f32>(0.0);
    if (st < m && sj0 <= st) {
      let qa = (row0 + st) * dk4;
      // Keys past the token (masked below) read the token's own row: always in bounds.
      let k0 = (row0 + sj0) * dk4;
      let k1 = (row0 + min(sj0 + 1u, st)) * dk4;
      let k2 = (row0 + min(sj0 + 2u, st)) * dk4;
      let k3 = (row0 + min(sj0 + 3u, st)) * dk4;
      for (var i = 0u; i < dk4; i++) {
        let q4 = qp[qa + i];
        d += vec4<f32>(dot(q4, kp[k0 + i]), dot(q4, kp[k1 + i]), dot(q4, kp[k2 + i]), dot(q4, kp[k3 + i]));
      }
    }
    let j = vec4<u32>(sj0) + vec4<u32>(0u, 1u, 2u, 3u);
    let live = j <= vec4<u32>(st) & vec4<bool>(st < m);
    let gap = vec4<f32>(select(vec4<u32>(0u), vec4<u32>(st) - j, live));
    amat[it] = select(vec4<f32>(0.0), d * exp(-rate * gap), live);
  }
  workgroupBarrier();
  let lane = tid % 32u;
  for (var w = tid / 32u; w < QB * ((dv4 + 31u) / 32u); w += 8u) {
    let t0 = (w % QB) * 4u;
    let c4 = (w / QB) * 32u + lane;
    if (t0 >= m || c4 >= dv4) { continue; }
    let tn = min(4u, m - t0);   // live tokens of this item
    var a0 = vec4<f32>(0.0);    // token t0 + 0, columns 4·c4..
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    // Intra: Σ_{j≤t} A[t][j]·v_j (A is zero past the mask: the terms added there are +0).
    for (var j = 0u; j < t0 + tn; j++) {
      let v = qkvu[((s + j) * 4u * P.hidden + 2u * P.hidden + h * P.head_dim) / 4u + c4];
      a0 += score(t0, j) * v;
      a1 += score(t0 + 1u, j) * v;
      a2 += score(t0 + 2u, j) * v;
      a3 += score(t0 + 3u, j) * v;
    }
    // Inter: λ^(t+1)·q'_t·S_before(n), t counted from the block's start.
    let l0 = exp(-rate * f32(t0 + 1u));
    let l1 = exp(-rate * f32(t0 + 2u));
    let l2 = exp(-rate * f32(t0 + 3u));
    let l3 = exp(-rate * f32(t0 + 4u));
    let q0 = (row0 + t0) * dk4;
    let q1 = (row0 + min(t0 + 1u, m - 1u)) * dk4;
    let q2 = (row0 + min(t0 + 2u, m - 1u)) * dk4;
    let q3 = (row0 + min(t0 + 3u, m - 1u)) * dk4;
    let sb = (h * P.nblocks + n) * P.dk * dv4 + c4;
    for (var i4 = 0u; i4 < dk4; i4++) {
      let x0 = qp[q0 + i4] * l0;
      let x1 = qp[q1 + i4] * l1;
      let x2 = qp[q2 + i4] * l2;
      let x3 = qp[q3 + i4] * l3;
      let r = sb + i4 * 4u * dv4;
      let sx = kvs[r];
      a0 += x0.x * sx;
      a1 += x1.x * sx;
      a2 += x2.x * sx;
      a3 += x3.x * sx;
      let sy = kvs[r + dv4];
      a0 += x0.y * sy;
      a1 += x1.y * sy;
      a2 += x2.y * sy;
      a3 += x3.y * sy;
      let sz = kvs[r + 2u * dv4];
      a0 += x0.z * sz;
      a1 += x1.z * sz;
      a2 += x2.z * sz;
      a3 += x3.z * sz;
      let sw = kvs[r + 3u * dv4];
      a0 += x0.w * sw;
      a1 += x1.w * sw;
      a2 += x2.w * sw;
      a3 += x3.w * sw;
    }
    let ob = ((s + t0) * P.hidden + h * P.head_dim) / 4u + c4;
    let ostep = P.hidden / 4u;
    o[ob] = a0;
    if (tn > 1u) { o[ob + ostep] = a1; }
    if (tn > 2u) { o[ob + 2u * ostep] = a2; }
    if (tn > 3u) { o[ob + 3u * ostep] = a3; }
  }
}
//#endif
