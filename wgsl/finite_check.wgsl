// Non-finite check of resident states, one layer per dispatch: for each listed slot (workgroup
// row y), flags[y] |= 1 when any value of this layer's state in that slot is NaN or ±Infinity.
// Tested on the bits: WGSL lets compilers assume that floats are never NaN.

struct Params {
  per_slot: u32,  // f32 values of one slot in this layer
  groups: u32,    // workgroups per slot (dispatch x)
  _pad0: u32,
  _pad1: u32,
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read> slots: array<u32>;
@group(0) @binding(3) var<storage, read_write> flags: array<atomic<u32>>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let base = slots[wid.y] * P.per_slot;
  var bad = false;
  for (var i = wid.x * 256u + tid; i < P.per_slot; i += 256u * P.groups) {
    bad = bad || (state[base + i] & 0x7f800000u) == 0x7f800000u;
  }
  if (bad) {
    atomicOr(&flags[wid.y], 1u);
  }
}
