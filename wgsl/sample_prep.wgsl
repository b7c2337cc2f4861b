// First stage of token sampling, wide: workgroup (blk, b) takes logits [blk·BLOCK, (blk+1)·BLOCK)
// of sequence b and, in place, adds the logit bias and applies the penalties (the same rules as
// wgsl/sample.wgsl describes; NaN counts as -inf), then writes the block's arg-max (the lowest id
// on ties) to best[b][blk], its value a NaN when the block held one (the row is then broken). The one-workgroup-per-sequence stage (sample.wgsl) then reduces the
// blocks instead of reading the whole vocabulary.

struct Params {
  vocab: u32,
  ring: u32,
  eos: u32,
  max_bias: u32,
  seen_words: u32,
  blocks: u32,       // ceil(vocab / BLOCK)
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ctl: array<u32>;
@group(0) @binding(2) var<storage, read> seqs: array<u32>;
@group(0) @binding(3) var<storage, read_write> logits: array<f32>;   // rewritten in place
@group(0) @binding(5) var<storage, read> sp: array<f32>;             // sampling params per row
@group(0) @binding(6) var<storage, read> bias: array<u32>;           // [row][max_bias][token, f32 bits]
@group(0) @binding(7) var<storage, read> counts: array<u32>;         // [slot][vocab] generated
@group(0) @binding(8) var<storage, read> seen: array<u32>;           // [slot][seen_words] bitset
@group(0) @binding(9) var<storage, read_write> best: array<u32>;     // [row][blocks][f32 bits, id]

const ROW_WORDS: u32 = {{ROW_WORDS}}u;
const SW: u32 = {{SAMPLING_WORDS}}u;
const WG: u32 = 256u;
const UNROLL: u32 = 8u;
const BLOCK: u32 = WG * UNROLL;   // ids per workgroup
const NONE: u32 = 0xffffffffu;

//#include argmax
// Set when a logit of this block is NaN: the block's arg-max value is then written as a NaN, which
// the second stage reads as "this row's logits are broken" (no token is sampled from them).
var<workgroup> nan_seen: atomic<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let blk = wid.x;
  let b = wid.y;
  if (b >= ctl[0]) { return; }
  let r = b * ROW_WORDS;
  if (seqs[r + 9u] != 0u) { return; }   // done: this row sits out
  let V = P.vocab;
  let slot = seqs[r];
  let base = b * V;
  let lo = blk * BLOCK;
  let hi = min(lo + BLOCK, V);
  let rep = sp[b * SW + {{SAMPLING_REPETITION}}u];
  let pres = sp[b * SW + {{SAMPLING_PRESENCE}}u];
  let freq = sp[b * SW + {{SAMPLING_FREQUENCY}}u];
  let nbias = bitcast<u32>(sp[b * SW + {{SAMPLING_BIASCOUNT}}u]);
  // Logit bias of this block's ids (one entry per id: the host merges duplicates).
  for (var i = tid; i < nbias; i += WG) {
    let e = (b * P.max_bias + i) * 2u;
    let t = bias[e];
    if (t >= lo && t < hi) { logits[base + t] = logits[base + t] + bitcast<f32>(bias[e + 1u]); }
  }
  storageBarrier();
  workgroupBarrier();
  let penalties = (seqs[r + 10u] & 2u) != 0u;
  // Thread t takes ids lo + t + u·WG (coalesced, UNROLL loads in flight); ids rise within a thread.
  var zs: array<f32, UNROLL>;
  for (var u = 0u; u < UNROLL; u++) {
    zs[u] = logits[base + min(lo + tid + u * WG, V - 1u)];
  }
  var bv = -3.4e38;
  var bi = NONE;
  for (var u = 0u; u < UNROLL; u++) {
    let i = lo + tid + u * WG;
    if (i < hi) {
      var z = zs[u];
      // NaN tested on the bits: WGSL lets compilers assume floats are never NaN.
      var changed = (bitcast<u32>(z) & 0x7fffffffu) > 0x7f800000u;
      if (changed) {
        z = -3.4e38;
        atomicOr(&nan_seen, 1u);
      }
      if (penalties) {
        let seen_bit = (seen[slot * P.seen_words + i / 32u] >> (i % 32u)) & 1u;
        if (seen_bit == 1u && rep != 1.0) {
          z = select(z * rep, z / rep, z > 0.0);
          changed = true;
        }
        let n = counts[slot * V + i];
        if (n > 0u) {
          z = z - pres - freq * f32(n);
          changed = true;
        }
      }
      if (changed) { logits[base + i] = z; }
      if (z > bv || bi == NONE) { bv = z; bi = i; }
    }
  }
  let m = argmax_wg(bv, bi, tid);
  if (tid == 0u) {
    let o = (b * P.blocks + blk) * 2u;
    best[o] = select(bitcast<u32>(m.value), 0x7fc00000u, atomicLoad(&nan_seen) != 0u);
    best[o + 1u] = m.id;
  }
}
