// Recurrent decode step of decayed linear attention, one workgroup per (sequence, head):
//   q, k = act(q), act(k);  LRPE: q' = [q·cos(θ·pos), q·sin(θ·pos)] (likewise k)
//   S ← λ·S + k'ᵀ v;   o = q'·S        (S is [dk, dv] f32, read and written once)
// Thread j owns column j of S (dv ≤ 1024 threads), so rows are read coalesced.

struct Params {
  heads: u32,
  head_dim: u32,      // dv = hd
  dk: u32,            // hd, or 2·hd with LRPE
  hidden: u32,        // H
  slot_stride: u32,   // floats per slot in the state buffer (heads·dk·dv)
  lrpe: u32,
  batch_base: u32,
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ctl: array<u32>;      // [0] = batch size
@group(0) @binding(2) var<storage, read> rows: array<u32>;     // per sequence: slot, pos, ...
@group(0) @binding(3) var<storage, read> qkvu: array<f32>;     // [B, 4H]
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read_write> o: array<f32>;  // [B, H]
@group(0) @binding(6) var<storage, read> decay: array<f32>;    // [heads] λ
//#if LRPE
@group(0) @binding(7) var<storage, read> theta: array<f32>;    // [heads, hd]
//#endif

//#include lrpe

const ROW_WORDS: u32 = {{ROW_WORDS}}u;
var<workgroup> qs: array<f32, {{MAX_DK}}>;
var<workgroup> ks: array<f32, {{MAX_DK}}>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let b = P.batch_base + wid.y;
  let h = wid.x;
  if (b >= ctl[0]) { return; }
  if (rows[b * ROW_WORDS + 9u] != 0u) { return; }   // the row stopped: its state stays put
  let slot = rows[b * ROW_WORDS];
  let pos = rows[b * ROW_WORDS + 1u];
  let hd = P.head_dim;
  let base = b * 4u * P.hidden + h * hd;
  for (var i = tid; i < hd; i += {{WG}}u) {
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
  let sbase = slot * P.slot_stride + h * P.dk * hd;
  for (var j = tid; j < hd; j += {{WG}}u) {
    let v = qkvu[base + 2u * P.hidden + j];
    var acc = 0.0;
    for (var i = 0u; i < P.dk; i++) {
      let idx = sbase + i * hd + j;
      let s = lambda * state[idx] + ks[i] * v;
      state[idx] = s;
      acc += qs[i] * s;
    }
    o[b * P.hidden + h * hd + j] = acc;
  }
}
