// Weight accessors for int8 weights with one f32 scale per row (`//#weights`; see
// src/gpu/shaders.ts). Little-endian bytes: element k of a word is byte k; shifting it to the top
// and back (arithmetic shift) sign-extends it. q·s is one correctly rounded f32 product.
@group(0) @binding({{BINDING}}) var<storage, read> {{W}}: array<vec2<u32>>;
@group(0) @binding({{SCALES}}) var<storage, read> {{W}}_scales: array<f32>;
fn {{W}}_scale(row: u32) -> f32 { return {{W}}_scales[row]; }
fn {{W}}_bytes(w: u32) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(w) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}
fn {{W}}_get(e: u32, s: f32) -> f32 {
  let w = {{W}}[e >> 3u][(e >> 2u) & 1u];
  return f32(bitcast<i32>(w << (24u - 8u * (e & 3u))) >> 24u) * s;
}
fn {{W}}_get8(i: u32, s: f32) -> array<vec4<f32>, 2> {
  let w = {{W}}[i];
  return array<vec4<f32>, 2>({{W}}_bytes(w.x) * s, {{W}}_bytes(w.y) * s);
}
