// Workgroup arg-max over the WG threads' (value, id) pairs (WG: a constant of the including
// kernel, a power of two): the largest value, the lowest id on ties; id 0xffffffff means "none"
// and never wins. Declares the reduction arrays (red_f, red_u) that the including kernel may reuse
// for its own reductions.

var<workgroup> red_f: array<f32, WG>;
var<workgroup> red_u: array<u32, WG>;

struct ArgMax {
  value: f32,
  id: u32,
};

fn argmax_wg(v: f32, id: u32, tid: u32) -> ArgMax {
  red_f[tid] = v;
  red_u[tid] = id;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (tid < s) {
      let ov = red_f[tid + s];
      let oi = red_u[tid + s];
      if (oi != 0xffffffffu && (red_u[tid] == 0xffffffffu || ov > red_f[tid] || (ov == red_f[tid] && oi < red_u[tid]))) {
        red_f[tid] = ov;
        red_u[tid] = oi;
      }
    }
    workgroupBarrier();
  }
  let r = ArgMax(red_f[0], red_u[0]);
  workgroupBarrier();
  return r;
}
