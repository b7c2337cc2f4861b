/**
 * Decayed linear attention of one head on the CPU, in the two forms of TransNormerLLM:
 *
 * - recurrence (decode): S ← λ·S + kᵀv, o = q·S
 * - Lightning Attention blocks (prefill): for a block of m tokens starting after state S,
 *   o_t = λ^(t-s+1)·q_t·S + Σ_{s≤j≤t} λ^(t-j)·(q_t·k_j)·v_j   (intra-block, masked and decayed)
 *   S ← λ^m·S + Σ_j λ^(e-1-j)·k_jᵀ·v_j
 *
 * Both give o_t = Σ_{j≤t} λ^(t-j)(q_t·k_j)v_j; the block size changes rounding only.
 * @module
 */

/** Decay powers λ^n = exp(-rate·n) for n = 0..maxN, computed directly (as the official code does). */
export function decayPowers(rate: number, maxN: number): Float64Array {
  const p = new Float64Array(maxN + 1);
  for (let n = 0; n <= maxN; n++) p[n] = Math.exp(-rate * n);
  return p;
}

/**
 * One recurrent step of one head. `s` is the head's state [dk, dv] at `sOff`; q, k are dk wide at
 * `qOff`/`kOff`, v is dv wide at `vOff`; the output (dv) goes to `o` at `oOff`.
 */
export function recurrentStep(
  s: Float32Array,
  sOff: number,
  dk: number,
  dv: number,
  lambda: number,
  q: Float32Array,
  qOff: number,
  k: Float32Array,
  kOff: number,
  v: Float32Array,
  vOff: number,
  o: Float32Array,
  oOff: number,
  acc: Float64Array,
): void {
  acc.fill(0, 0, dv);
  for (let i = 0; i < dk; i++) {
    const r = sOff + i * dv;
    const ki = k[kOff + i];
    const qi = q[qOff + i];
    for (let j = 0; j < dv; j++) {
      const n = lambda * s[r + j] + ki * v[vOff + j];
      s[r + j] = n;
      acc[j] += qi * Math.fround(n);
    }
  }
  for (let j = 0; j < dv; j++) o[oOff + j] = acc[j];
}

/**
 * Lightning Attention over `T` tokens of one head, in blocks of `block` tokens.
 * q and k rows are `dk` apart starting at `qOff`/`kOff` with row stride `qkStride`; v rows are
 * `dv` wide at `vOff` with stride `vStride`; output rows go to `o` at `oOff` with stride `oStride`.
 * `pw` holds λ^n for n ≤ block.
 */
export function lightningPrefill(
  s: Float32Array,
  sOff: number,
  dk: number,
  dv: number,
  T: number,
  block: number,
  pw: Float64Array,
  q: Float32Array,
  qOff: number,
  k: Float32Array,
  kOff: number,
  qkStride: number,
  v: Float32Array,
  vOff: number,
  vStride: number,
  o: Float32Array,
  oOff: number,
  oStride: number,
  acc: Float64Array,
): void {
  for (let start = 0; start < T; start += block) {
    const m = Math.min(block, T - start);
    for (let t = start; t < start + m; t++) {
      const qr = qOff + t * qkStride;
      acc.fill(0, 0, dv);
      // Inter-block: λ^(t-s+1)·q_t·S.
      const dq = pw[t - start + 1];
      for (let i = 0; i < dk; i++) {
        const qi = q[qr + i] * dq;
        if (qi === 0) continue;
        const r = sOff + i * dv;
        for (let j = 0; j < dv; j++) acc[j] += qi * s[r + j];
      }
      // Intra-block: Σ_{start≤j≤t} λ^(t-j)·(q_t·k_j)·v_j.
      for (let jt = start; jt <= t; jt++) {
        const kr = kOff + jt * qkStride;
        let dot = 0;
        for (let i = 0; i < dk; i++) dot += q[qr + i] * k[kr + i];
        const w = Math.fround(dot) * pw[t - jt];
        const vr = vOff + jt * vStride;
        for (let j = 0; j < dv; j++) acc[j] += w * v[vr + j];
      }
      const or = oOff + t * oStride;
      for (let j = 0; j < dv; j++) o[or + j] = acc[j];
    }
    // State update: S ← λ^m·S + Σ_j λ^(e-1-j)·k_jᵀ·v_j.
    const dm = pw[m];
    for (let i = 0; i < dk; i++) {
      const r = sOff + i * dv;
      for (let j = 0; j < dv; j++) acc[j] = dm * s[r + j];
      for (let jt = start; jt < start + m; jt++) {
        const ki = k[kOff + jt * qkStride + i] * pw[start + m - 1 - jt];
        if (ki === 0) continue;
        const vr = vOff + jt * vStride;
        for (let j = 0; j < dv; j++) acc[j] += ki * v[vr + j];
      }
      for (let j = 0; j < dv; j++) s[r + j] = acc[j];
    }
  }
}
