// Recurrent decode step of decayed linear attention, one workgroup per (sequence, head, block of
// CW columns of S); within it, thread (r, c) walks rows r, r+RG, ... of the four columns 4c.. of
// the block (one vec4), so the state is read and written once with many rows in flight, and the
// partial o_j are summed in a fixed order (rows ≡ r mod RG in order, then the RG partials in order,
// the same for every block width):
//   q, k = act(q), act(k);  LRPE: q' = [q·cos(θ·pos), q·sin(θ·pos)] (likewise k)
//   S ← λ·S + k'ᵀ v;   o = q'·S        (S is [dk, dv] f32, read and written once)

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
@group(0) @binding(4) var<storage, read_write> state: array<vec4<f32>>;   // dv ≡ 0 mod 8
@group(0) @binding(5) var<storage, read_write> o: array<vec4<f32>>;       // [B, H]
@group(0) @binding(6) var<storage, read> decay: array<f32>;    // [heads] λ
//#if LRPE
@group(0) @binding(7) var<storage, read> theta: array<f32>;    // [heads, hd]
//#endif

//#include lrpe

const ROW_WORDS: u32 = {{ROW_WORDS}}u;
const RG: u32 = {{RG}}u;            // row groups: thread (r, c) updates rows i ≡ r (mod RG)
const CT: u32 = {{CT}}u;            // column threads: a block is CW = 4·CT columns of S
const WG: u32 = RG * CT;
var<workgroup> qs: array<f32, {{MAX_DK}}>;
var<workgroup> ks: array<f32, {{MAX_DK}}>;
var<workgroup> part: array<vec4<f32>, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let b = P.batch_base + wid.y;
  let hd = P.head_dim;
  let blocks = hd / (4u * CT);
  let h = wid.x / blocks;
  let cb = wid.x % blocks;
  if (b >= ctl[0]) { return; }
  if (rows[b * ROW_WORDS + 9u] != 0u) { return; }   // the row stopped: its state stays put
  let slot = rows[b * ROW_WORDS];
  let pos = rows[b * ROW_WORDS + 1u];
  let base = b * 4u * P.hidden + h * hd;
  for (var i = tid; i < hd; i += WG) {
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
  let r = tid / CT;
  let j = cb * 4u * CT + (tid % CT) * 4u;   // first of this thread's four columns
  let vb = base + 2u * P.hidden + j;
  let v = vec4<f32>(qkvu[vb], qkvu[vb + 1u], qkvu[vb + 2u], qkvu[vb + 3u]);
  let sbase = (slot * P.slot_stride + h * P.dk * hd + j) / 4u;
  let row4 = hd / 4u;   // vec4 per row of S
  var acc = vec4<f32>(0.0);
  // Four rows at a time: the loads are issued before the stores so they overlap.
  var i = r;
  for (; i + 3u * RG < P.dk; i += 4u * RG) {
    let i0 = sbase + i * row4;
    let i1 = i0 + RG * row4;
    let i2 = i1 + RG * row4;
    let i3 = i2 + RG * row4;
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
    let idx = sbase + i * row4;
    let s = lambda * state[idx] + ks[i] * v;
    state[idx] = s;
    acc += qs[i] * s;
  }
  part[tid] = acc;
  workgroupBarrier();
  if (r == 0u) {
    var o_j = vec4<f32>(0.0);
    for (var g = 0u; g < RG; g++) { o_j += part[g * CT + tid]; }
    o[(b * P.hidden + h * hd + j) / 4u] = o_j;
  }
}
