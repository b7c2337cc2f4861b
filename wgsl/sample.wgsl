// Token sampling on the GPU, one workgroup per sequence, the same semantics as the CPU sampler
// (bias, penalties and the arg-max of each block of ids come from wgsl/sample_prep.wgsl):
//   z = logits + bias; repetition penalty (z>0: z/r, else z·r) on tokens seen; z -= presence·[n>0]
//   + frequency·n on generated counts n;  temperature 0 → arg-max (lowest id on ties);
//   else w = exp((z - max)/T); keep w ≥ τ, τ = max(τ_k, τ_p, τ_min-p) where
//   τ_k = k-th largest w, τ_p = largest τ with Σ_{w≥τ} w ≥ top_p·Σw (both found exactly by a
//   (SPLITS+1)-ary search over the bit patterns of non-negative f32: the count and the computed
//   mass only grow as τ falls, so any search order finds the same boundary; COMPACT: once the
//   values at or above a pass's lower end fit in CAND, later passes read a copy of them, with the
//   same sums), τ_min-p = min_p (the largest w is 1);
//   u = uniform(seed, counter) (MurmurHash3, see src/engine/rng.ts); walk ids upward accumulating
//   kept w until the sum exceeds u·Σkept.
// A row whose logits hold a NaN (flagged by the first stage) or whose largest logit is not finite
// samples nothing: the marker 0xffffffff (-1 as i32) goes to the ring and the row is done; the
// host fails that request alone (the CPU engine's rule for broken logits).
// Then: next token written to the row, appended to the ring, position and counters advanced, and
// the row marked done at end-of-sequence or when its budget is spent (later steps skip it).

struct Params {
  vocab: u32,
  ring: u32,
  eos: u32,
  max_bias: u32,
  seen_words: u32,   // u32 words per slot in the seen bitset
  blocks: u32,       // arg-max blocks per row from the first stage
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ctl: array<u32>;
@group(0) @binding(2) var<storage, read_write> seqs: array<u32>;
@group(0) @binding(3) var<storage, read_write> logits: array<f32>;   // rewritten in place
@group(0) @binding(4) var<storage, read_write> ring: array<u32>;
@group(0) @binding(5) var<storage, read> sp: array<f32>;             // sampling params per row
@group(0) @binding(7) var<storage, read_write> counts: array<u32>;   // [slot][vocab] generated
@group(0) @binding(8) var<storage, read_write> seen: array<u32>;     // [slot][seen_words] bitset
@group(0) @binding(9) var<storage, read> best: array<u32>;           // [row][blocks][f32 bits, id]

const ROW_WORDS: u32 = {{ROW_WORDS}}u;
const SW: u32 = {{SAMPLING_WORDS}}u;
const WG: u32 = {{WG}}u;   // threads per sequence (src/gpu/sample_code.ts)

//#include argmax
var<workgroup> bcast: array<u32, 4>;
var<workgroup> nan_seen: atomic<u32>;
var<workgroup> broken: u32;

fn rotl(x: u32, r: u32) -> u32 { return (x << r) | (x >> (32u - r)); }

fn absorb(h0: u32, k0: u32) -> u32 {
  var k = k0 * 0xcc9e2d51u;
  k = rotl(k, 15u);
  k = k * 0x1b873593u;
  var h = h0 ^ k;
  h = rotl(h, 13u);
  return h * 5u + 0xe6546b64u;
}

fn rng_u32(s_lo: u32, s_hi: u32, c_lo: u32, c_hi: u32) -> u32 {
  var h = absorb(0u, s_lo);
  h = absorb(h, s_hi);
  h = absorb(h, c_lo);
  h = absorb(h, c_hi);
  h = h ^ 16u;
  h = h ^ (h >> 16u);
  h = h * 0x85ebca6bu;
  h = h ^ (h >> 13u);
  h = h * 0xc2b2ae35u;
  h = h ^ (h >> 16u);
  return h;
}

fn sum_f(v: f32, tid: u32) -> f32 {
  red_f[tid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (tid < s) { red_f[tid] = red_f[tid] + red_f[tid + s]; }
    workgroupBarrier();
  }
  let r = red_f[0];
  workgroupBarrier();
  return r;
}

const UNROLL: u32 = {{UNROLL}}u;   // logits per thread per search iteration (src/gpu/sample_code.ts)
const SPLITS: u32 = {{SPLITS}}u;   // thresholds tested per search pass
//#if COMPACT
const CAND: u32 = {{CAND}}u;       // values the searches may compact
//#endif
const HALF: u32 = WG / 2u;
// Per-threshold partial sums of the threshold searches, [SPLITS + 1][HALF]: counts or masses, both
// f32 (counts of at most 2^24 values are exact in f32: the op checks the vocabulary); slot SPLITS
// counts the values at or above the pass's lower end (the compaction's size).
var<workgroup> red_k: array<f32, ({{SPLITS}} + 1) * {{WG}} / 2>;
// (lower end, upper end, values at or above the pass's lower end) after a pass.
var<workgroup> bounds: vec4<u32>;
//#if COMPACT
// Compaction: each thread's values at or above a search's lower end, in its index order, at
// [cbase, cbase + ccount) (see compact_values).
var<workgroup> cand: array<f32, {{CAND}}>;
//#endif

// The end of a search pass, once each threshold's partial sums of the lower half of the threads
// are in red_k: the tree over them (the same tree as sum_f), then the narrowed interval, the same
// for every thread: from the largest tested threshold whose total reaches the goal (count ≥ k, or
// mass ≥ top_p·Σw) to the smallest that does not. The totals are monotone in the threshold.
fn narrow(lo: u32, hi: u32, step: u32, tid: u32, goal: f32) -> vec4<u32> {
  for (var s = HALF / 2u; s > 0u; s = s / 2u) {
    if (tid < s) {
      for (var j = 0u; j <= SPLITS; j++) {
        red_k[j * HALF + tid] = red_k[j * HALF + tid] + red_k[j * HALF + tid + s];
      }
    }
    workgroupBarrier();
  }
  if (tid == 0u) {
    var nlo = lo;
    var nhi = hi;
    for (var j = 1u; j <= SPLITS; j++) {
      let c = lo + j * step;
      if (c < hi) {
        if (red_k[(j - 1u) * HALF] >= goal) { nlo = c; } else if (c < nhi) { nhi = c; }
      }
    }
    bounds = vec4<u32>(nlo, max(nhi, nlo + 1u), u32(red_k[SPLITS * HALF]), 0u);
  }
  return workgroupUniformLoad(&bounds);
}

//#if COMPACT
// Compaction, once a pass found at most CAND values at or above its lower end tl (this thread
// counted n of them): each thread copies its own, in its index order, to cand from its offset
// (an exclusive scan of n over the threads), which it returns. A value below tl is never counted
// by a later threshold (all above tl), and a mass pass added +0 for it: later passes over the
// copies give the very sums of passes over the logits.
fn compact_values(base: u32, V: u32, tl: f32, n: u32, tid: u32) -> u32 {
  red_u[tid] = n;
  workgroupBarrier();
  for (var s = 1u; s < WG; s = s * 2u) {
    var add = 0u;
    if (tid >= s) { add = red_u[tid - s]; }
    workgroupBarrier();
    red_u[tid] = red_u[tid] + add;
    workgroupBarrier();
  }
  let off = red_u[tid] - n;
  workgroupBarrier();
  var c = off;
  for (var i = tid; i < V; i += WG) {
    let w = logits[base + i];
    if (w >= tl) {
      cand[c] = w;
      c++;
    }
  }
  return off;
}
//#endif

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let b = wid.x;
  if (b >= ctl[0]) { return; }
  let r = b * ROW_WORDS;
  if (seqs[r + 9u] != 0u) { return; }   // done: this row sits out
  let V = P.vocab;
  let slot = seqs[r];
  let flags = seqs[r + 10u];
  let base = b * V;
  let temp = sp[b * SW + {{SAMPLING_TEMPERATURE}}u];
  let top_k = bitcast<u32>(sp[b * SW + {{SAMPLING_TOPK}}u]);
  let top_p = sp[b * SW + {{SAMPLING_TOPP}}u];
  let min_p = sp[b * SW + {{SAMPLING_MINP}}u];
  let per = (V + WG - 1u) / WG;
  let lo = min(tid * per, V);
  let hi = min(lo + per, V);

  let penalties = (flags & 2u) != 0u;
  // Arg-max over the blocks' arg-maxes (the lowest id wins ties: blocks and ids rise together).
  var bv = -3.4e38;
  var bi = 0xffffffffu;
  for (var k = tid; k < P.blocks; k += WG) {
    let o = (b * P.blocks + k) * 2u;
    let v = bitcast<f32>(best[o]);
    let id = best[o + 1u];
    // NaN tested on the bits: WGSL lets compilers assume floats are never NaN.
    if ((best[o] & 0x7fffffffu) > 0x7f800000u) {
      atomicOr(&nan_seen, 1u);
    } else if (id != 0xffffffffu && (bi == 0xffffffffu || v > bv)) { bv = v; bi = id; }
  }
  let m = argmax_wg(bv, bi, tid);
  let zmax = m.value;
  var token = m.id;
  if (tid == 0u) {
    broken = select(0u, 1u, atomicLoad(&nan_seen) != 0u || (bitcast<u32>(zmax) & 0x7f800000u) == 0x7f800000u);
  }
  if (workgroupUniformLoad(&broken) != 0u) {
    if (tid == 0u) {
      seqs[r + 1u] = seqs[r + 1u] + 1u;
      let n = seqs[r + 5u];
      if (n < P.ring) { ring[b * P.ring + n] = 0xffffffffu; }
      seqs[r + 5u] = n + 1u;
      seqs[r + 9u] = 1u;
    }
    return;
  }

  if (temp > 0.0) {
    // Weights w = exp((z - max)/T) in place; the largest is exactly 1.
    var total = 0.0;
    for (var i0 = tid; i0 < V; i0 += UNROLL * WG) {
//#for U in 0..UNROLL
      let e{{U}} = exp((logits[base + min(i0 + {{U}}u * WG, V - 1u)] - zmax) / temp);
      if (i0 + {{U}}u * WG < V) { logits[base + i0 + {{U}}u * WG] = e{{U}}; total += e{{U}}; }
//#endfor
    }
    total = sum_f(total, tid);
    // τ = max(τ_k, τ_p, min_p), so each search starts at what is already known to be kept: a
    // threshold below it never decides the result.
    var tau = min_p;
//#if COMPACT
    // Compaction state (see compact_values); `compact` is the same in every thread.
    var compact = false;
    var cbase = 0u;
    var ccount = 0u;
//#endif
    // Phase 0, top-k: the largest τ (as f32 bits) with count(w ≥ τ) ≥ k, the k-th largest weight.
    // Phase 1, top-p: the largest τ with Σ_{w≥τ} w ≥ top_p·Σw, the weight of the last token the
    // nucleus needs. Each starts at τ so far (values below it are never kept); the values the
    // first phase compacted (all ≥ its lower ends ≤ τ) serve the second.
    for (var phase = 0u; phase < 2u; phase++) {
      let mass = phase == 1u;
      if (select(top_k == 0u || top_k >= V, top_p >= 1.0, mass)) { continue; }
      let goal = select(f32(top_k), top_p * total, mass);
      var lo = select(bitcast<u32>(tau), 0u, tau <= 0.0);   // -0 → +0
      var hi = 0x3f800001u;
      for (var round = 0u; round < 32u; round++) {
        if (hi - lo <= 1u) { break; }
        let step = max((hi - lo) / (SPLITS + 1u), 1u);
        let tl = bitcast<f32>(lo);
//#for J in 1..=SPLITS
        let t{{J}} = bitcast<f32>(lo + {{J}}u * step);
//#endfor
//#for J in 1..=SPLITS
        var a{{J}} = 0.0;
//#endfor
        var kc = 0u;   // this thread's values ≥ tl
//#if COMPACT
        if (compact) {
          for (var c = cbase; c < cbase + ccount; c++) {
            let w = cand[c];
            let x = select(1.0, w, mass);
//#for J in 1..=SPLITS
            a{{J}} += select(0.0, x, w >= t{{J}});
//#endfor
          }
        } else {
//#else
        {
//#endif
          for (var i0 = tid; i0 < V; i0 += UNROLL * WG) {
//#for U in 0..UNROLL
            let w{{U}} = select(-1.0, logits[base + min(i0 + {{U}}u * WG, V - 1u)], i0 + {{U}}u * WG < V);
//#endfor
//#for U in 0..UNROLL
            let x{{U}} = select(1.0, w{{U}}, mass);
            kc += select(0u, 1u, w{{U}} >= tl);
//#for J in 1..=SPLITS
            a{{J}} += select(0.0, x{{U}}, w{{U}} >= t{{J}});
//#endfor
//#endfor
          }
        }
        if (tid >= HALF) {
//#for J in 1..=SPLITS
          red_k[{{J-1}}u * HALF + tid - HALF] = a{{J}};
//#endfor
          red_k[SPLITS * HALF + tid - HALF] = f32(kc);
        }
        workgroupBarrier();
        if (tid < HALF) {
//#for J in 1..=SPLITS
          red_k[{{J-1}}u * HALF + tid] = a{{J}} + red_k[{{J-1}}u * HALF + tid];
//#endfor
          red_k[SPLITS * HALF + tid] = f32(kc) + red_k[SPLITS * HALF + tid];
        }
        workgroupBarrier();
        let nb = narrow(lo, hi, step, tid, goal);
        lo = nb.x;
        hi = nb.y;
//#if COMPACT
        if (!compact && nb.z <= CAND && hi - lo > 1u) {
          cbase = compact_values(base, V, tl, kc, tid);
          ccount = kc;
          compact = true;
        }
//#endif
      }
      tau = bitcast<f32>(lo);
    }
    // The threshold, for tests and diagnostics (ROW.tau).
    if (tid == 0u) { seqs[r + 11u] = bitcast<u32>(tau); }
    // Kept mass of this thread's range, then an exclusive scan over threads.
    // Also the last kept id + 1 (0 if none), the fallback should rounding keep the walk from
    // ever passing the goal.
    var kept = 0.0;
    var lastk = 0u;
    for (var i0 = lo; i0 < hi; i0 += UNROLL) {
//#for U in 0..UNROLL
      let v{{U}} = select(-1.0, logits[base + min(i0 + {{U}}u, V - 1u)], i0 + {{U}}u < hi);
//#endfor
//#for U in 0..UNROLL
      kept += select(0.0, v{{U}}, v{{U}} >= tau);
      lastk = select(lastk, i0 + {{U+1}}u, v{{U}} >= tau);
//#endfor
    }
    red_f[tid] = kept;
    workgroupBarrier();
    for (var s = 1u; s < WG; s = s * 2u) {
      var add = 0.0;
      if (tid >= s) { add = red_f[tid - s]; }
      workgroupBarrier();
      red_f[tid] = red_f[tid] + add;
      workgroupBarrier();
    }
    let incl = red_f[tid];
    var excl = 0.0;
    if (tid > 0u) { excl = red_f[tid - 1u]; }
    let kept_total = red_f[WG - 1u];
    let u = f32(rng_u32(seqs[r + 6u], seqs[r + 7u], seqs[r + 3u], seqs[r + 4u]) >> 8u) * 5.9604644775390625e-8;
    let goal = u * kept_total;
    if (tid == 0u) { bcast[0] = 0xffffffffu; }
    workgroupBarrier();
    // Exactly one range holds the goal (the ranges [excl, incl) tile [0, total)); it walks its ids.
    if (kept > 0.0 && excl <= goal && goal < incl) {
      var acc = excl;
      var pick = 0xffffffffu;
      for (var i = lo; i < hi; i++) {
        let w = logits[base + i];
        if (w >= tau) {
          acc += w;
          pick = i;
          if (acc > goal) { break; }
        }
      }
      bcast[0] = pick;
    }
    workgroupBarrier();
    // Rounding fallback: the last kept token.
    red_u[tid] = lastk;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
      if (tid < s) { red_u[tid] = max(red_u[tid], red_u[tid + s]); }
      workgroupBarrier();
    }
    token = select(bcast[0], red_u[0] - 1u, bcast[0] == 0xffffffffu);
    if (tid == 0u) {
      // One draw per sampled token.
      let c = seqs[r + 3u] + 1u;
      seqs[r + 3u] = c;
      if (c == 0u) { seqs[r + 4u] = seqs[r + 4u] + 1u; }
    }
  }
  if (tid == 0u) {
    seqs[r + 2u] = token;
    seqs[r + 1u] = seqs[r + 1u] + 1u;
    let n = seqs[r + 5u];
    if (n < P.ring) { ring[b * P.ring + n] = token; }
    seqs[r + 5u] = n + 1u;
    if (penalties) {
      counts[slot * V + token] = counts[slot * V + token] + 1u;
      let wi = slot * P.seen_words + token / 32u;
      seen[wi] = seen[wi] | (1u << (token % 32u));
    }
    if (((flags & 1u) != 0u && token == P.eos) || n + 1u >= seqs[r + 8u]) { seqs[r + 9u] = 1u; }
  }
}
