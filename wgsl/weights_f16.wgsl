// Weight accessors for f16 weights, two per u32 (`//#weights`; see src/gpu/shaders.ts).
@group(0) @binding({{BINDING}}) var<storage, read> {{W}}: array<vec4<u32>>;
fn {{W}}_scale(row: u32) -> f32 { return 1.0; }
fn {{W}}_get(e: u32, s: f32) -> f32 {
  let w = unpack2x16float({{W}}[e >> 3u][(e >> 1u) & 3u]);
  return select(w.x, w.y, (e & 1u) == 1u);
}
fn {{W}}_get8(i: u32, s: f32) -> array<vec4<f32>, 2> {
  let w = {{W}}[i];
  let a = unpack2x16float(w.x); let b = unpack2x16float(w.y);
  let c = unpack2x16float(w.z); let d = unpack2x16float(w.w);
  return array<vec4<f32>, 2>(vec4<f32>(a, b), vec4<f32>(c, d));
}
