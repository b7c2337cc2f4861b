// Shared helpers: the q/k activation and the LRPE rotation angles.

// Activation on q and k (linear_act_fun).
fn act(x: f32) -> f32 {
//#if ACT_SILU
  return x / (1.0 + exp(-x));
//#endif
//#if ACT_RELU
  return max(x, 0.0);
//#endif
//#if ACT_ELU
  return select(x, exp(x) - 1.0, x < 0.0);
//#endif
//#if ACT_1ELU
  return select(1.0 + x, exp(x), x < 0.0);
//#endif
//#if ACT_2ELU
  return select(2.0 + x, 1.0 + exp(x), x < 0.0);
//#endif
//#if ACT_SIGMOID
  return 1.0 / (1.0 + exp(-x));
//#endif
//#if ACT_GELU
  // erf by Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7).
  let z = abs(x) * 0.70710678118654752;
  let t = 1.0 / (1.0 + 0.3275911 * z);
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-z * z);
  return 0.5 * x * (1.0 + sign(x) * y);
//#endif
//#if ACT_NONE
  return x;
//#endif
}

// cos and sin of a = θ·pos (a rounded to f32 as the official code computes it), with a
// Cody-Waite reduction by 2π so large positions keep full accuracy.
fn lrpe_cos_sin(theta: f32, pos: u32) -> vec2<f32> {
  let a = theta * f32(pos);
  let k = round(a * 0.15915494309189535);
  // 2π = C1 + C2 + C3 with C1 (5 bits) and C2 (10 bits) short, so k·C1 and k·C2 are exact in f32
  // for |k| < 2^14 (a < 1e5 rad); beyond that the error stays far below f32's own rounding of a.
  let r = ((a - k * 6.25) - k * 0.03314208984375) - k * 4.321733649703674e-05;
  return vec2<f32>(cos(r), sin(r));
}
