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
@group(0) @binding(4) var<storage, read> kp: array<vec4<f32>>;   // dk ≡ 0 mod 4
@group(0) @binding(6) var<storage, read_write> kvs: array<f32>;    // [h][nblocks][dk][dv]
//#endif
//#if STAGE_SCAN
@group(0) @binding(6) var<storage, read_write> kvs: array<f32>;
@group(0) @binding(7) var<storage, read_write> state: array<f32>;  // the layer's slot pool
//#endif
//#if STAGE_OUT
@group(0) @binding(2) var<storage, read> qkvu: array<f32>;
@group(0) @binding(3) var<storage, read> qp: array<vec4<f32>>;   // dk ≡ 0 mod 4
@group(0) @binding(4) var<storage, read> kp: array<vec4<f32>>;
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
// Workgroup per (row tile of 64 key dims, block, head). Thread: 8 consecutive key dims (two vec4 of
// k', the same for the 32 threads of a column group) × CW columns j ≡ tid mod 32 (coalesced rows of
// v), so each step over the block's tokens makes 8·CW products from 2 + CW loads. The head dim is a
// multiple of 8 (the backend checks), so dk is too and a thread's 8 key dims are all live or none.
const CW: u32 = ({{HD}}u + 31u) / 32u;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let n = wid.y;
  let h = wid.z;
  let i0 = wid.x * 64u + (tid / 32u) * 8u;
  if (i0 >= P.dk) { return; }
  let c = tid % 32u;
  let s = n * BLK;
  let m = block_len(n);
  let rate = rates[h];
  var lo: array<vec4<f32>, CW>;   // lo[k][r]: key dim i0 + r, column c + 32k
  var hi: array<vec4<f32>, CW>;   // hi[k][r]: key dim i0 + 4 + r
  for (var t = 0u; t < m; t++) {
    let d = exp(-rate * f32(m - 1u - t));
    let ka = ((h * P.tokens + s + t) * P.dk + i0) / 4u;
    let wlo = d * kp[ka];
    let whi = d * kp[ka + 1u];
    let vrow = (s + t) * 4u * P.hidden + 2u * P.hidden + h * P.head_dim + c;
    for (var k = 0u; k < CW; k++) {
      if (c + 32u * k < P.head_dim) {
        let v = qkvu[vrow + 32u * k];
        lo[k] += wlo * v;
        hi[k] += whi * v;
      }
    }
  }
  let base = ((h * P.nblocks + n) * P.dk + i0) * P.head_dim + c;
  for (var k = 0u; k < CW; k++) {
    if (c + 32u * k < P.head_dim) {
      for (var r = 0u; r < 4u; r++) {
        kvs[base + r * P.head_dim + 32u * k] = lo[k][r];
        kvs[base + (4u + r) * P.head_dim + 32u * k] = hi[k][r];
      }
    }
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
// Workgroup per (block, head). The decayed, masked scores q'_t·k'_j live in workgroup memory (each
// thread JPT of them, as vec4 dot products over the key dims). Then thread: TPT consecutive tokens of
// the block × CW columns c + 32k (c = tid mod 32): each step reads one row of V or S_before(n)
// (coalesced, CW loads) and TPT scores or q' values (the same for the whole warp) for TPT·CW
// products. The head dim is a multiple of 8 (the backend checks), so dk ≡ 0 mod 4. Workgroup
// arrays stay small: llvmpipe's GL compile time grows steeply with their size.
const CW: u32 = ({{HD}}u + 31u) / 32u;
const TPT: u32 = BLK / 8u;          // tokens per thread (8 token groups)
const JPT: u32 = BLK * BLK / 256u;  // scores per thread
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
  let dk4 = P.dk / 4u;
  // Intra-block scores with decay and causal mask: token st, keys sj0..sj0+JPT-1.
  {
    let st = tid / (BLK / JPT);
    let sj0 = (tid % (BLK / JPT)) * JPT;
    var d: array<f32, JPT>;
    if (st < m && sj0 <= st) {
      let qa = (h * P.tokens + s + st) * dk4;
      for (var i = 0u; i < dk4; i++) {
        let q4 = qp[qa + i];
        // Keys past the token (masked below) read the token's own row: always in bounds.
        for (var c = 0u; c < JPT; c++) {
          d[c] += dot(q4, kp[(h * P.tokens + s + min(sj0 + c, st)) * dk4 + i]);
        }
      }
    }
    for (var c = 0u; c < JPT; c++) {
      let j = sj0 + c;
      let e = st * BLK + j;
      var v = 0.0;
      if (j <= st && st < m) { v = d[c] * exp(-rate * f32(st - j)); }
      amat[e / 4u][e % 4u] = v;
    }
  }
  workgroupBarrier();
  let t0 = (tid / 32u) * TPT;
  let c = tid % 32u;
  if (t0 >= m) { return; }
  let tn = min(TPT, m - t0);   // live tokens of this thread
  var acc: array<array<f32, CW>, TPT>;
  // Intra: Σ_{j≤t} A[t][j]·v_j.
  for (var j = 0u; j < t0 + tn; j++) {
    let vrow = (s + j) * 4u * P.hidden + 2u * P.hidden + h * dv + c;
    var v: array<f32, CW>;
    for (var k = 0u; k < CW; k++) {
      if (c + 32u * k < dv) { v[k] = qkvu[vrow + 32u * k]; }
    }
    for (var r = 0u; r < TPT; r++) {
      if (j <= t0 + r) {
        let a = score(t0 + r, j);
        for (var k = 0u; k < CW; k++) { acc[r][k] += a * v[k]; }
      }
    }
  }
  // Inter: λ^(t+1)·q'_t·S_before(n).
  let sbase = (h * P.nblocks + n) * P.dk * dv + c;
  var qscale: array<f32, TPT>;
  for (var r = 0u; r < TPT; r++) { qscale[r] = exp(-rate * f32(t0 + r + 1u)); }
  for (var i4 = 0u; i4 < dk4; i4++) {
    var q: array<vec4<f32>, TPT>;
    for (var r = 0u; r < TPT; r++) {
      q[r] = qp[(h * P.tokens + s + min(t0 + r, m - 1u)) * dk4 + i4];
    }
    for (var e = 0u; e < 4u; e++) {
      let srow = sbase + (i4 * 4u + e) * dv;
      var sv: array<f32, CW>;
      for (var k = 0u; k < CW; k++) {
        if (c + 32u * k < dv) { sv[k] = kvs[srow + 32u * k]; }
      }
      for (var r = 0u; r < TPT; r++) {
        let qs = q[r][e] * qscale[r];
        for (var k = 0u; k < CW; k++) { acc[r][k] += qs * sv[k]; }
      }
    }
  }
  // Constant trip counts on every loop over acc (guards inside): a loop bound known only at run
  // time makes the array indexed dynamically, which puts it in local memory instead of registers.
  for (var r = 0u; r < TPT; r++) {
    if (r < tn) {
      for (var k = 0u; k < CW; k++) {
        if (c + 32u * k < dv) { o[(s + t0 + r) * P.hidden + h * dv + c + 32u * k] = acc[r][k]; }
      }
    }
  }
}
//#endif
