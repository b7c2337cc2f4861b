// Weight accessors for bf16 weights, two per u32 (`//#weights`; see src/gpu/shaders.ts).
@group(0) @binding({{BINDING}}) var<storage, read> {{W}}: array<vec4<u32>>;
fn {{W}}_scale(row: u32) -> f32 { return 1.0; }
fn {{W}}_get(e: u32, s: f32) -> f32 {
  let w = {{W}}[e >> 3u][(e >> 1u) & 3u];
  return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (e & 1u) == 1u));
}
fn {{W}}_get8(i: u32, s: f32) -> array<vec4<f32>, 2> {
  let w = {{W}}[i];
  let lo = bitcast<vec4<f32>>(w << vec4<u32>(16u));
  let hi = bitcast<vec4<f32>>(w & vec4<u32>(0xffff0000u));
  return array<vec4<f32>, 2>(vec4<f32>(lo.x, hi.x, lo.y, hi.y), vec4<f32>(lo.z, hi.z, lo.w, hi.w));
}
