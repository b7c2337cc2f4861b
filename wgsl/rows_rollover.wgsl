// Continue a sampled decode call on the device (the host has not read the last call back yet):
// each row of the call before, as it stood at that call's end (`prev`, copied in its submission),
// becomes the row of the next call: position, pending token and RNG counter carry over; the tokens
// it sampled come off what it may still sample (left -= outCount) and its ring starts empty.
// A row that ended stays stopped: its last token is end-of-sequence (when it stops there) or the
// broken-logits marker, or it sampled nothing in that call; so does a row the caller left out of
// the call that continues (keep = 0: its tokens are discarded). The others may sample min(left, steps of this call) tokens; one with
// nothing left stays stopped.

struct Params {
  ring: u32,   // ring capacity per row: no call samples more
  eos: u32,    // end-of-sequence id
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ctl: array<u32>;             // [0] rows, [1] steps
@group(0) @binding(2) var<storage, read_write> seqs: array<u32>;
@group(0) @binding(3) var<storage, read> prev: array<u32>;
@group(0) @binding(4) var<storage, read> ring: array<u32>;            // the call before's tokens
@group(0) @binding(5) var<storage, read> keep: array<u32>;            // 0: the row is left out

const ROW_WORDS: u32 = {{ROW_WORDS}}u;
const BROKEN: u32 = 0xffffffffu;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let b = gid.x;
  if (b >= ctl[0]) { return; }
  let r = b * ROW_WORDS;
  for (var w = 0u; w < ROW_WORDS; w++) { seqs[r + w] = prev[r + w]; }
  let n = prev[r + {{ROW_OUT_COUNT}}u];
  let left = prev[r + {{ROW_LEFT}}u] - n;
  seqs[r + {{ROW_LEFT}}u] = left;
  seqs[r + {{ROW_OUT_COUNT}}u] = 0u;
  var ended = true;   // it sampled nothing in that call (stopped all along), or is left out
  if (n > 0u && keep[b] != 0u) {
    let last = ring[b * P.ring + min(n, P.ring) - 1u];
    let at_eos = (prev[r + {{ROW_FLAGS}}u] & {{ROW_FLAG_STOP_AT_EOS}}u) != 0u && last == P.eos;
    ended = last == BROKEN || at_eos;
  }
  let budget = select(min(left, min(ctl[1], P.ring)), 0u, ended);
  seqs[r + {{ROW_BUDGET}}u] = budget;
  seqs[r + {{ROW_DONE}}u] = select(0u, 1u, budget == 0u);
}
