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
// Workgroup of 128 threads over the dk·hd/64 items of one (block, head): a thread computes 8
// consecutive key dims i0.. × 2 vec4 columns, 4·c4.. and 4·(c4 + hd/8).. (c4 < hd/8; consecutive
// threads take consecutive c4, then the next 8 key dims, so the two loads of v in a step read the
// two halves of a row, coalesced). Each step over the block's tokens makes 64 products from two
// vec4 of k' (one row for the whole warp) and two of v. The accumulators are named registers, never
// an array indexed in a loop (which a compiler may put in local memory). The head dim is a multiple
// of 8 (the backend checks), so dk is too (a thread's 8 key dims are all live or none) and a row
// of v is two halves of hd/8 whole vec4.
@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let n = wid.y;
  let h = wid.z;
  let dv4 = P.head_dim / 4u;
  let dv8 = P.head_dim / 8u;   // vec4 columns in half a row
  let item = wid.x * 128u + tid;
  let i0 = (item / dv8) * 8u;
  if (i0 >= P.dk) { return; }
  let c4 = item % dv8;
  let s = n * BLK;
  let m = block_len(n);
  let rate = rates[h];
  // a_K: key dim i0 + K, columns 4·c4..; b_K: the same, columns 4·(c4 + hd/8)..
//#for K in 0..8
  var a{{K}} = vec4<f32>(0.0);
  var b{{K}} = vec4<f32>(0.0);
//#endfor
  for (var t = 0u; t < m; t++) {
    let d = exp(-rate * f32(m - 1u - t));
    let ka = ((h * P.tokens + s + t) * P.dk + i0) / 4u;
    let lo = d * kp[ka];
    let hi = d * kp[ka + 1u];
    let vr = ((s + t) * 4u * P.hidden + 2u * P.hidden + h * P.head_dim) / 4u + c4;
    let va = qkvu[vr];
    let vb = qkvu[vr + dv8];
//#for K in 0..4
    a{{K}} += lo[{{K}}u] * va;
//#endfor
//#for K in 0..4
    a{{K+4}} += hi[{{K}}u] * va;
//#endfor
//#for K in 0..4
    b{{K}} += lo[{{K}}u] * vb;
//#endfor
//#for K in 0..4
    b{{K+4}} += hi[{{K}}u] * vb;
//#endfor
  }
  let base = ((h * P.nblocks + n) * P.dk + i0) * dv4 + c4;
//#for K in 0..8
  kvs[base + {{K}}u * dv4] = a{{K}};
//#endfor
//#for K in 0..8
  kvs[base + dv8 + {{K}}u * dv4] = b{{K}};
//#endfor
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
// Workgroup of 128 threads (4 warps) per (block, head). First the decayed, masked scores q'_t·k'_j
// of the block into workgroup memory: a thread computes 2 consecutive tokens × 4 consecutive keys
// (two vec4 registers, vec4 dot products over the key dims: a step reads 2 vec4 of q' and 4 of k'
// for 8 dot products), a warp a 16 × 16 tile of the scores (a tile wholly past the causal mask
// only writes zeros); zero past the mask and the block's end. Then a thread computes 8 consecutive
// tokens × 4 consecutive columns (named vec4 registers): o_t = Σ_{j≤t} A[t][j]·v_j, 4 keys a step
// (4 vec4 of rows of V, coalesced over the 32 lanes, and one vec4 of A per token, the same for the
// whole warp), then + Σ_i λ^(t-s_n+1)·q'_t[i]·S_before(n)[i], 4 key dims a step (8 vec4 of q', the
// same for the whole warp, and 4 coalesced vec4 of rows of S_before(n) for 32 vec4 FMAs). Items of
// 8 tokens × 32 vec4 columns go to the 4 warps in turn. The head dim is a multiple of 8 (the
// backend checks), so dk and the offsets of the vec4 views are too. Workgroup arrays stay small:
// llvmpipe's GL compile time grows steeply with their size.
const QB: u32 = BLK / 4u;   // 4-wide groups of keys (vec4 of a row of A) in a block
const TB: u32 = BLK / 8u;   // 8-token items in a block
const TILES: u32 = BLK / 16u;   // 16 × 16 score tiles in a row of A (BLK is 16 or 32)
var<workgroup> amat: array<vec4<f32>, {{BLK2_4}}>;   // [BLK][BLK] decayed, masked q'·k'

// The row of A of token st, keys sj0..sj0+3: d (Σ of q'·k' over the key dims) decayed, masked.
fn scores(st: u32, sj0: u32, m: u32, rate: f32, d: vec4<f32>) -> vec4<f32> {
  let j = vec4<u32>(sj0) + vec4<u32>(0u, 1u, 2u, 3u);
  let live = j <= vec4<u32>(st) & vec4<bool>(st < m);
  let gap = vec4<f32>(select(vec4<u32>(0u), vec4<u32>(st) - j, live));
  return select(vec4<f32>(0.0), d * exp(-rate * gap), live);
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let n = wid.x;
  let h = wid.y;
  let s = n * BLK;
  let m = block_len(n);
  let rate = rates[h];
  let dv4 = P.head_dim / 4u;
  let dk4 = P.dk / 4u;
  let row0 = h * P.tokens + s;   // first row of the block in q' and k'
  let lane = tid % 32u;
  // Intra-block scores with decay and causal mask: tokens st, st + 1 × keys sj0..sj0+3, the lane's
  // place in its warp's 16 × 16 tile.
  for (var it = tid / 32u; it < TILES * TILES; it += 4u) {
    let st = (it / TILES) * 16u + (lane / 4u) * 2u;
    let sj0 = (it % TILES) * 16u + (lane % 4u) * 4u;
    let tl = min(st + 1u, m - 1u);   // the last live token of the two (when st is live)
    var da = vec4<f32>(0.0);   // token st
    var db = vec4<f32>(0.0);   // token st + 1
    if (st < m && sj0 <= tl) {
      let qa = (row0 + st) * dk4;
      let qb = (row0 + tl) * dk4;
      // Keys past the tokens (masked below) read the last live token's row: always in bounds.
      let k0 = (row0 + min(sj0, tl)) * dk4;
      let k1 = (row0 + min(sj0 + 1u, tl)) * dk4;
      let k2 = (row0 + min(sj0 + 2u, tl)) * dk4;
      let k3 = (row0 + min(sj0 + 3u, tl)) * dk4;
      for (var i = 0u; i < dk4; i++) {
        let qa4 = qp[qa + i];
        let qb4 = qp[qb + i];
        let k0v = kp[k0 + i];
        let k1v = kp[k1 + i];
        let k2v = kp[k2 + i];
        let k3v = kp[k3 + i];
        da += vec4<f32>(dot(qa4, k0v), dot(qa4, k1v), dot(qa4, k2v), dot(qa4, k3v));
        db += vec4<f32>(dot(qb4, k0v), dot(qb4, k1v), dot(qb4, k2v), dot(qb4, k3v));
      }
    }
    amat[(st * BLK + sj0) / 4u] = scores(st, sj0, m, rate, da);
    amat[((st + 1u) * BLK + sj0) / 4u] = scores(st + 1u, sj0, m, rate, db);
  }
  workgroupBarrier();
  for (var w = tid / 32u; w < TB * ((dv4 + 31u) / 32u); w += 4u) {
    let t0 = (w % TB) * 8u;
    let c4 = (w / TB) * 32u + lane;
    if (t0 >= m || c4 >= dv4) { continue; }
    let tn = min(8u, m - t0);   // live tokens of this item
    // a_T: token t0 + T, columns 4·c4..
//#for T in 0..8
    var a{{T}} = vec4<f32>(0.0);
//#endfor
    // Intra: Σ_{j≤t} A[t][j]·v_j, keys j..j+3 a step (A is zero past the mask: the terms added there
    // are +0; rows of V past the block's end are read at its last token, always in bounds).
    let vb = (s * 4u * P.hidden + 2u * P.hidden + h * P.head_dim) / 4u + c4;
    for (var j = 0u; j < t0 + tn; j += 4u) {
      let v0 = qkvu[vb + j * P.hidden];
      let v1 = qkvu[vb + min(j + 1u, m - 1u) * P.hidden];
      let v2 = qkvu[vb + min(j + 2u, m - 1u) * P.hidden];
      let v3 = qkvu[vb + min(j + 3u, m - 1u) * P.hidden];
      let e = (t0 * BLK + j) / 4u;   // A[t0][j..j+3]; token t0 + k is k·QB further
//#for T in 0..8
      let s{{T}} = amat[e + {{T}}u * QB];
//#for C in 0..4
      a{{T}} += s{{T}}[{{C}}u] * v{{C}};
//#endfor
//#endfor
    }
    // Inter: λ^(t+1)·q'_t·S_before(n), t counted from the block's start.
//#for T in 0..8
    let l{{T}} = exp(-rate * f32(t0 + {{T+1}}u));
//#endfor
    // Rows of q' past the block's end are read at its last token (t0 < m: the first is live).
//#for T in 0..8
    let q{{T}} = (row0 + min(t0 + {{T}}u, m - 1u)) * dk4;
//#endfor
    let sb = (h * P.nblocks + n) * P.dk * dv4 + c4;
    for (var i4 = 0u; i4 < dk4; i4++) {
//#for T in 0..8
      let x{{T}} = qp[q{{T}} + i4] * l{{T}};
//#endfor
      let r = sb + i4 * 4u * dv4;
//#for C in 0..4
      let kv{{C}} = kvs[r + {{C}}u * dv4];
//#for T in 0..8
      a{{T}} += x{{T}}[{{C}}u] * kv{{C}};
//#endfor
//#endfor
    }
    let ob = ((s + t0) * P.hidden + h * P.head_dim) / 4u + c4;
    let ostep = P.hidden / 4u;
    o[ob] = a0;
//#for T in 1..8
    if (tn > {{T}}u) { o[ob + {{T}}u * ostep] = a{{T}}; }
//#endfor
  }
}
//#endif
