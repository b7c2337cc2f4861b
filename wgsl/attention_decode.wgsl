// Recurrent decode step of decayed linear attention, one workgroup per (sequence, head, block of
// CW columns of S); within it, thread (r, c) walks rows r, r+RG, ... of the VW columns VW·c.. of
// the block (one vec4, or one column where VEC4 is off), so the state is read and written once
// with many rows in flight, and the partial o_j are summed in a fixed order (rows ≡ r mod RG in
// order, then the RG partials in order, the same for every block width and VW):
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
@group(0) @binding(4) var<storage, read_write> state: array<VT>;   // dv ≡ 0 mod 8
@group(0) @binding(5) var<storage, read_write> o: array<VT>;       // [B, H]
@group(0) @binding(6) var<storage, read> decay: array<f32>;    // [heads] λ
//#if LRPE
@group(0) @binding(7) var<storage, read> theta: array<f32>;    // [heads, hd]
//#endif

//#include lrpe

//#if VEC4
alias VT = vec4<f32>;
const VW: u32 = 4u;                // columns per thread
//#else
alias VT = f32;
const VW: u32 = 1u;
//#endif
const ROW_WORDS: u32 = {{ROW_WORDS}}u;
const RG: u32 = {{RG}}u;            // row groups: thread (r, c) updates rows i ≡ r (mod RG)
const CT: u32 = {{CT}}u;            // column threads: a block is CW = VW·CT columns of S
const DK: u32 = {{DK}}u;            // rows of S: hd, or 2·hd with LRPE (P.dk)
const U: u32 = {{U}}u;              // rows of S a thread loads before it updates them
const WG: u32 = RG * CT;
var<workgroup> qs: array<f32, DK>;
var<workgroup> ks: array<f32, DK>;
var<workgroup> part: array<VT, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let b = P.batch_base + wid.y;
  let hd = P.head_dim;
  let blocks = hd / (VW * CT);
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
  let j = cb * VW * CT + (tid % CT) * VW;   // first of this thread's columns
  let vb = base + 2u * P.hidden + j;
//#if VEC4
  let v = vec4<f32>(qkvu[vb], qkvu[vb + 1u], qkvu[vb + 2u], qkvu[vb + 3u]);
//#else
  let v = qkvu[vb];
//#endif
  let sbase = (slot * P.slot_stride + h * DK * hd + j) / VW;
  let row4 = hd / VW;   // elements of VT per row of S
  var acc = VT(0.0);
  // U rows at a time: all their loads are issued before any of their stores (which, as far as a
  // compiler can tell, might alias later loads), so they are in flight together; then the rows
  // left one at a time. The rows, and so the additions into acc, go in increasing order whatever U
  // is. Whole blocks need no bounds checks.
  var i0 = r;
  for (; i0 + (U - 1u) * RG < DK; i0 += U * RG) {
//#for R in 0..U
    var s_{{R}} = state[sbase + (i0 + {{R}}u * RG) * row4];
//#endfor
//#for R in 0..U
    s_{{R}} = lambda * s_{{R}} + ks[i0 + {{R}}u * RG] * v;
    state[sbase + (i0 + {{R}}u * RG) * row4] = s_{{R}};
    acc += qs[i0 + {{R}}u * RG] * s_{{R}};
//#endfor
  }
  for (; i0 < DK; i0 += RG) {
    let s = lambda * state[sbase + i0 * row4] + ks[i0] * v;
    state[sbase + i0 * row4] = s;
    acc += qs[i0] * s;
  }
  part[tid] = acc;
  workgroupBarrier();
  if (r == 0u) {
    var o_j = VT(0.0);
    for (var g = 0u; g < RG; g++) { o_j += part[g * CT + tid]; }
    o[(b * P.hidden + h * hd + j) / VW] = o_j;
  }
}
