// Greedy token choice on the GPU: arg-max of each sequence's logits (ties go to the lowest id),
// written as the next input token, appended to the output ring, position advanced.
// One workgroup per sequence; each thread scans a contiguous range, then a fixed tree reduces.

struct Params {
  vocab: u32,
  ring: u32,      // output ring capacity per sequence
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ctl: array<u32>;
@group(0) @binding(2) var<storage, read_write> seqs: array<u32>;
@group(0) @binding(3) var<storage, read> logits: array<f32>;
@group(0) @binding(4) var<storage, read_write> ring: array<u32>;

const ROW_WORDS: u32 = {{ROW_WORDS}}u;
var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let b = wid.x;
  if (b >= ctl[0]) { return; }
  let per = (P.vocab + 255u) / 256u;
  let lo = tid * per;
  let hi = min(lo + per, P.vocab);
  var bv = -3.4e38;
  var bi = 0xffffffffu;
  for (var i = lo; i < hi; i++) {
    let v = logits[b * P.vocab + i];
    if (v > bv) { bv = v; bi = i; }
  }
  best_v[tid] = bv;
  best_i[tid] = bi;
  workgroupBarrier();
  var s = 128u;
  loop {
    if (s == 0u) { break; }
    if (tid < s) {
      let ov = best_v[tid + s];
      let oi = best_i[tid + s];
      if (ov > best_v[tid] || (ov == best_v[tid] && oi < best_i[tid])) {
        best_v[tid] = ov;
        best_i[tid] = oi;
      }
    }
    workgroupBarrier();
    s = s / 2u;
  }
  if (tid == 0u) {
    let r = b * ROW_WORDS;
    let tok = select(best_i[0], 0u, best_i[0] == 0xffffffffu);
    seqs[r + 2u] = tok;
    seqs[r + 1u] = seqs[r + 1u] + 1u;
    let n = seqs[r + 5u];
    if (n < P.ring) { ring[b * P.ring + n] = tok; }
    seqs[r + 5u] = n + 1u;
  }
}
