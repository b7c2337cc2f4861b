// Embedding gather with scale: x[b, :] = embed_scale · E[token_b, :], one workgroup per row.
// Tokens are read at tok[b·tok_stride + tok_off] (the decode rows, or a plain prefill list).
// E may be split into row chunks (tensors over the binding limit); a chunk writes only the rows
// whose token falls inside it.

struct Params {
  dim: u32,
  row_base: u32,
  rows: u32,
  scale: f32,
  tok_stride: u32,
  tok_off: u32,
  count_from_ctl: u32,  // 1: rows to fill = ctl[0] (decode), 0: P.count
  count: u32,
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ctl: array<u32>;
@group(0) @binding(2) var<storage, read> seqs: array<u32>;   // token list
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
//#weights E 4 5

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let b = wid.x + wid.y * 65535u;
  if (b >= select(P.count, ctl[0], P.count_from_ctl == 1u)) { return; }
  let tok = seqs[b * P.tok_stride + P.tok_off];
  if (tok < P.row_base || tok >= P.row_base + P.rows) { return; }
  let src = (tok - P.row_base) * P.dim;
  let s = E_scale(tok);
  for (var i = tid; i < P.dim; i += 256u) {
    x[b * P.dim + i] = P.scale * E_get(src + i, s);
  }
}
