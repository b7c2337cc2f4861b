// Weight accessors for f32 weights (`//#weights` directive; see src/gpu/shaders.ts): {{W}}_scale(row)
// (1), {{W}}_get(e, s) (element e), {{W}}_get8(i, s) (elements 8i..8i+7).
@group(0) @binding({{BINDING}}) var<storage, read> {{W}}: array<vec4<f32>>;
fn {{W}}_scale(row: u32) -> f32 { return 1.0; }
fn {{W}}_get(e: u32, s: f32) -> f32 { return {{W}}[e >> 2u][e & 3u]; }
fn {{W}}_get8(i: u32, s: f32) -> array<vec4<f32>, 2> { return array<vec4<f32>, 2>({{W}}[2u * i], {{W}}[2u * i + 1u]); }
