// Continue a sampled decode call on the device (the host has not read the last call back yet):
// each row of the call before, as it stood at that call's end (`prev`, copied in its submission),
// becomes the row of the next call: position, pending token and RNG counter carry over; the tokens
// it sampled come off what it may still sample (left -= outCount) and its ring starts empty.
// A row that ended (done = 2: end-of-sequence, broken logits) stays stopped; the others may sample
// min(left, steps of this call) tokens, and one with nothing left stays stopped (done = 1).

struct Params {
  ring: u32,   // ring capacity per row: no call samples more
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ctl: array<u32>;             // [0] rows, [1] steps
@group(0) @binding(2) var<storage, read_write> seqs: array<u32>;
@group(0) @binding(3) var<storage, read> prev: array<u32>;

const ROW_WORDS: u32 = {{ROW_WORDS}}u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let b = gid.x;
  if (b >= ctl[0]) { return; }
  let r = b * ROW_WORDS;
  for (var w = 0u; w < ROW_WORDS; w++) { seqs[r + w] = prev[r + w]; }
  let left = prev[r + {{ROW_LEFT}}u] - prev[r + {{ROW_OUT_COUNT}}u];
  seqs[r + {{ROW_LEFT}}u] = left;
  seqs[r + {{ROW_OUT_COUNT}}u] = 0u;
  if (prev[r + {{ROW_DONE}}u] == 2u) { return; }
  let budget = min(left, min(ctl[1], P.ring));
  seqs[r + {{ROW_BUDGET}}u] = budget;
  seqs[r + {{ROW_DONE}}u] = select(0u, 1u, budget == 0u);
}
