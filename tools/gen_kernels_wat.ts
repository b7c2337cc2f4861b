/**
 * Generates `src/cpu/wasm/kernels.wat`: the CPU linear kernels for every stored weight dtype (f32,
 * bf16, f16, int8 with per-row scales). The float tiles differ only in how a group of weights is
 * loaded and widened to f32, so they are written once here and expanded per dtype; int8 runs on
 * integers (int8 weights × int16 activations, exact i32 sums per block of columns).
 *
 * ```sh
 * deno run -A tools/gen_kernels_wat.ts && deno run -A tools/build_wasm.ts
 * ```
 * `tests/cpu/wasm/build_test.ts` fails when the committed `.wat` is not this script's output.
 * @module
 */

import { I8_BLOCK } from "../src/cpu/wasm/mod.ts";

/** Path of the generated kernel source, relative to the repository root. */
export const WAT_OUT_PATH = "src/cpu/wasm/kernels.wat";

/**
 * The int8 kernels' activation quantizer (`quant_i16`) is built from these: for the block
 * [$j0, $j1) of row $x, $m = max |x| (NaN if any x is), its scale m / 32767 stored at $c (then $c
 * advances) and $inv = 32767 / m; and the int16 value of x[$j] (round to nearest even, clamped to
 * +-32767; 0 where m = 0).
 */
const I16_BLOCK_SCALE =
  `            (local.set $j1 (i32.add (local.get $j0) (i32.const ${I8_BLOCK})))
            (if (i32.gt_u (local.get $j1) (local.get $n)) (then (local.set $j1 (local.get $n))))
            (local.set $m (f32.const 0))
            (local.set $j (local.get $j0))
            (loop $max
              (local.set $m (f32.max (local.get $m)
                (f32.abs (f32.load (i32.add (local.get $x) (i32.shl (local.get $j) (i32.const 2)))))))
              (local.set $j (i32.add (local.get $j) (i32.const 1)))
              (br_if $max (i32.lt_u (local.get $j) (local.get $j1))))
            (f32.store (local.get $c) (f32.div (local.get $m) (f32.const 32767)))
            (local.set $c (i32.add (local.get $c) (i32.const 4)))
            (local.set $inv (f32.div (f32.const 32767) (local.get $m)))
`;
const I16_VALUE =
  `(i32.trunc_sat_f32_s (f32.nearest (f32.min (f32.const 32767) (f32.max (f32.const -32767)
                  (f32.mul (local.get $inv)
                    (f32.load (i32.add (local.get $x) (i32.shl (local.get $j) (i32.const 2)))))))))`;

/** A stored float weight dtype: its name and element bytes. */
interface Dt {
  name: "f32" | "bf16" | "f16";
  bytes: number;
}

const FLOATS: Dt[] = [
  { name: "f32", bytes: 4 },
  { name: "bf16", bytes: 2 },
  { name: "f16", bytes: 2 },
];

const g = (v: string) => `(local.get $${v})`;
const set = (v: string, e: string) => `(local.set $${v} ${e})`;
/** a·b + c: fused where the CPU has FMA (V8 then always fuses), else a product and a sum. */
const fma = (a: string, b: string, c: string) => `(f32x4.relaxed_madd ${a} ${b} ${c})`;
const bump = (v: string, n: number | string) =>
  set(v, `(i32.add ${g(v)} ${typeof n === "number" ? `(i32.const ${n})` : n})`);
const range = (n: number) => Array.from({ length: n }, (_, i) => i);
/** 8-column steps an int8 multiply-add tile takes per pass of its inner loop (the block allowing). */
const I8_MAC_UNROLL = 4;

/** f16 bits in the low halves of 4 i32 lanes → exact f32 (finite values; the loader rejects ±inf/NaN). */
const f16x4 = (e: string) => `(call $f16x4 ${e})`;

/** `[lo, hi]` expressions: 8 weights of row `r` (columns 0-3, 4-7) as f32x4, after `pre` runs. */
function widen8(dt: Dt, r: number): { pre: string[]; lo: string; hi: string } {
  const w = g(`w${r}`);
  switch (dt.name) {
    case "f32":
      return { pre: [], lo: `(v128.load ${w})`, hi: `(v128.load offset=16 ${w})` };
    case "bf16":
      // Interleave with zeros: each u16 lands in the high half of a 32-bit lane (exact f32).
      return {
        pre: [set("v", `(v128.load ${w})`)],
        lo: `(i8x16.shuffle 0 1 16 17 2 3 18 19 4 5 20 21 6 7 22 23 ${g("z")} ${g("v")})`,
        hi: `(i8x16.shuffle 8 9 24 25 10 11 26 27 12 13 28 29 14 15 30 31 ${g("z")} ${g("v")})`,
      };
    case "f16":
      return {
        pre: [set("v", `(v128.load ${w})`)],
        lo: f16x4(`(i32x4.extend_low_i16x8_u ${g("v")})`),
        hi: f16x4(`(i32x4.extend_high_i16x8_u ${g("v")})`),
      };
  }
}

/** 4 weights of row `r` as f32x4. */
function widen4(dt: Dt, r: number): string {
  const w = g(`w${r}`);
  switch (dt.name) {
    case "f32":
      return `(v128.load ${w})`;
    case "bf16":
      return `(i32x4.shl (v128.load16x4_u ${w}) (i32.const 16))`;
    case "f16":
      return f16x4(`(v128.load16x4_u ${w})`);
  }
}

/** One weight of each of rows `r0..r0+3` (the column at their pointers) as f32x4. */
function gather(dt: Dt, r0: number): string {
  const lanes = (load: string, splat: string, repl: string) =>
    `(${repl} 3 (${repl} 2 (${repl} 1 (${splat} (${load} ${g(`w${r0}`)})) (${load} ${
      g(`w${r0 + 1}`)
    })) (${load} ${g(`w${r0 + 2}`)})) (${load} ${g(`w${r0 + 3}`)}))`;
  switch (dt.name) {
    case "f32":
      return lanes("f32.load", "f32x4.splat", "f32x4.replace_lane");
    case "bf16":
      return `(i32x4.shl ${
        lanes("i32.load16_u", "i32x4.splat", "i32x4.replace_lane")
      } (i32.const 16))`;
    case "f16":
      return f16x4(lanes("i32.load16_u", "i32x4.splat", "i32x4.replace_lane"));
  }
}

/** Parameters shared by every tile (see the header). */
const TILE_PARAMS = [
  "(param $w0 i32) (param $rs i32) (param $x0 i32) (param $xs i32) (param $n i32)",
  "(param $y i32) (param $ls i32) (param $ys i32) (param $nr i32) (param $b i32)",
];

/**
 * Row pointers $p1..$p{R-1} (`$p0 + r·$stride`). A 4-row tile clamps rows past $nr to the last
 * real row (computed, never stored); an 8-row tile always has 8 real rows.
 */
function rowPointers(p: string, stride: string, R: number): string[] {
  return range(R).slice(1).map((r) => {
    const next = `(i32.add ${g(`${p}${r - 1}`)} ${g(stride)})`;
    return set(
      `${p}${r}`,
      R === 4
        ? `(select ${next} ${g(`${p}${r - 1}`)} (i32.gt_u ${g("nr")} (i32.const ${r})))`
        : next,
    );
  });
}

/** Store the 4-row group `k` of token `t` (`$r`: its 4 sums) with bias. */
function storeGroup(R: number, k: number, t: number, r: string): string {
  const y0 = t === 0 ? g("y") : `(i32.add ${g("y")} (i32.mul ${g("ys")} (i32.const ${t})))`;
  const step = `(i32.mul ${g("ls")} (i32.const ${4 * k}))`;
  const y = k === 0 ? y0 : `(i32.add ${y0} ${step})`;
  const b = k === 0 ? g("b") : `(select (i32.add ${g("b")} ${step}) (i32.const 0) ${g("b")})`;
  return `(call $store4 ${y} ${r} ${R === 4 ? g("nr") : "(i32.const 4)"} ${g("ls")} ${b})`;
}

/**
 * A float tile: R weight rows (4 or 8) × NT tokens (1 or 2). The summation order of one output is
 * the same in every tile (so a token's result never depends on the batch or the thread):
 *   acc (4 lanes) = fma(w[c+4..c+8], x[c+4..c+8], fma(w[c..c+4], x[c..c+4], acc))  per full 8
 *   acc = fma(w[c..c+4], x[c..c+4], acc)                                               left-over 4
 *   sum = (acc0 + acc2) + (acc1 + acc3);  sum = fma(w[c], x[c], sum) for each of the last in mod 4
 */
function tileF(dt: Dt, R: number, NT: number): string {
  const T = range(NT), RR = range(R), G = range(R / 4);
  const acc = (r: number, t: number) => `a${r}_${t}`;
  const es = dt.bytes;
  const L: string[] = [];
  L.push(`  ;; ${dt.name} weights, ${R} rows x ${NT} token${NT > 1 ? "s" : ""}.`);
  L.push(`  (func $${dt.name}_${R}x${NT}`);
  for (const p of TILE_PARAMS) L.push(`    ${p}`);
  L.push(`    ${RR.slice(1).map((r) => `(local $w${r} i32)`).join(" ")} (local $x1 i32)`);
  L.push("    (local $end8 i32) (local $end4 i32) (local $end i32)");
  L.push("    (local $v v128) (local $lo v128) (local $z v128)");
  L.push(`    ${T.map((t) => `(local $p${t} v128) (local $q${t} v128)`).join(" ")}`);
  L.push(`    ${RR.map((r) => T.map((t) => `(local $${acc(r, t)} v128)`).join(" ")).join(" ")}`);
  for (const s of rowPointers("w", "rs", R)) L.push(`    ${s}`);
  L.push(`    ${set("x1", `(i32.add ${g("x0")} ${g("xs")})`)}`);
  L.push(`    ${set("end", `(i32.add ${g("x0")} (i32.shl ${g("n")} (i32.const 2)))`)}`);
  for (const k of [8, 4]) {
    L.push(
      `    ${
        set(
          `end${k}`,
          `(i32.add ${g("x0")} (i32.shl (i32.and ${g("n")} (i32.const -${k})) (i32.const 2)))`,
        )
      }`,
    );
  }
  // Full steps of 8 columns.
  L.push(`    (if (i32.lt_u ${g("x0")} ${g("end8")})`);
  L.push("      (then");
  L.push("        (loop $vec8");
  for (const t of T) {
    L.push(`          ${set(`p${t}`, `(v128.load ${g(`x${t}`)})`)}`);
    L.push(`          ${set(`q${t}`, `(v128.load offset=16 ${g(`x${t}`)})`)}`);
  }
  for (const r of RR) {
    const { pre, lo, hi } = widen8(dt, r);
    for (const p of pre) L.push(`          ${p}`);
    L.push(`          ${set("lo", lo)}`);
    for (const t of T) {
      L.push(`          ${set(acc(r, t), fma(g("lo"), g(`p${t}`), g(acc(r, t))))}`);
    }
    L.push(`          ${set("lo", hi)}`);
    for (const t of T) {
      L.push(`          ${set(acc(r, t), fma(g("lo"), g(`q${t}`), g(acc(r, t))))}`);
    }
  }
  for (const r of RR) L.push(`          ${bump(`w${r}`, 8 * es)}`);
  for (const t of T) L.push(`          ${bump(`x${t}`, 32)}`);
  L.push(`          (br_if $vec8 (i32.lt_u ${g("x0")} ${g("end8")})))))`);
  // A left-over group of 4 columns.
  L.push(`    (if (i32.lt_u ${g("x0")} ${g("end4")})`);
  L.push("      (then");
  for (const t of T) L.push(`        ${set(`p${t}`, `(v128.load ${g(`x${t}`)})`)}`);
  for (const r of RR) {
    L.push(`        ${set("lo", widen4(dt, r))}`);
    for (const t of T) L.push(`        ${set(acc(r, t), fma(g("lo"), g(`p${t}`), g(acc(r, t))))}`);
  }
  for (const r of RR) L.push(`        ${bump(`w${r}`, 4 * es)}`);
  for (const t of T) L.push(`        ${bump(`x${t}`, 16)}`);
  L.push("      ))");
  // From here a{4k}_t holds the sums of rows 4k..4k+3 of token t.
  for (const k of G) {
    for (const t of T) {
      const a = range(4).map((i) => g(acc(4 * k + i, t))).join(" ");
      L.push(`    ${set(acc(4 * k, t), `(call $reduce4 ${a})`)}`);
    }
  }
  // The in mod 4 last columns, one column of 4 rows at a time.
  L.push(`    (if (i32.lt_u ${g("x0")} ${g("end")})`);
  L.push("      (then");
  L.push("        (loop $tail");
  for (const k of G) {
    L.push(`          ${set("lo", gather(dt, 4 * k))}`);
    for (const t of T) {
      const a = acc(4 * k, t);
      L.push(`          ${set(a, fma(g("lo"), `(v128.load32_splat ${g(`x${t}`)})`, g(a)))}`);
    }
  }
  for (const r of RR) L.push(`          ${bump(`w${r}`, es)}`);
  for (const t of T) L.push(`          ${bump(`x${t}`, 4)}`);
  L.push(`          (br_if $tail (i32.lt_u ${g("x0")} ${g("end")})))))`);
  for (const k of G) for (const t of T) L.push(`    ${storeGroup(R, k, t, g(acc(4 * k, t)))}`);
  L[L.length - 1] += ")";
  return L.join("\n");
}

/**
 * An int8 tile: R weight rows (4 or 8) × NT tokens (1 or 2)
 * on integers, int8 × int16 multiply-adds (`quant_i16` activations). Per block of I8_BLOCK
 * columns, Σ q_w·q_x is exact in i32 (|q_w| ≤ 127, |q_x| ≤ 32767, 128 columns: < 2^29), so its
 * order is free; the float part is one fixed chain per output whatever the tile:
 *   acc = fma(f32(Σ_block q_w·q_x), s_x[block], acc)   for each block in order
 *   y = acc · s_w + b
 * The activation rows are zero-padded to a multiple of 8 columns, so the last step of a row
 * reads up to 7 bytes past it (the next row, or the arena's slack after an int8 matrix) times 0.
 */
function tileI8Mac(R: number, NT: number): string {
  const T = range(NT), RR = range(R), G = range(R / 4);
  const ia = (r: number, t: number) => `i${r}_${t}`;
  const fa = (k: number, t: number) => `f${k}_${t}`;
  const L: string[] = [];
  L.push(`  ;; int8 weights, ${R} rows x ${NT} token${NT > 1 ? "s" : ""}.`);
  L.push(`  (func $i8_${R}x${NT}`);
  for (const p of TILE_PARAMS) L.push(`    ${p}`);
  L.push("    (param $s0 i32) (param $c0 i32) (param $cs i32)");
  L.push(`    ${RR.slice(1).map((r) => `(local $w${r} i32) (local $s${r} i32)`).join(" ")}`);
  L.push("    (local $x1 i32) (local $c1 i32) (local $col i32) (local $bend i32) (local $wv v128)");
  L.push(`    ${T.map((t) => `(local $xv${t} v128)`).join(" ")}`);
  L.push(`    ${RR.map((r) => T.map((t) => `(local $${ia(r, t)} v128)`).join(" ")).join(" ")}`);
  L.push(`    ${G.map((k) => T.map((t) => `(local $${fa(k, t)} v128)`).join(" ")).join(" ")}`);
  for (const s of rowPointers("w", "rs", R)) L.push(`    ${s}`);
  for (const s of rowPointers("s", "ls", R)) L.push(`    ${s}`);
  L.push(`    ${set("x1", `(i32.add ${g("x0")} ${g("xs")})`)}`);
  L.push(`    ${set("c1", `(i32.add ${g("c0")} ${g("cs")})`)}`);
  L.push("    (block $done");
  L.push(`      (br_if $done (i32.eqz ${g("n")}))`);
  L.push("      (loop $blocks");
  L.push(
    `        ${
      set(
        "bend",
        `(select (i32.add ${g("col")} (i32.const ${I8_BLOCK})) ${g("n")} (i32.lt_u (i32.add ${
          g("col")
        } (i32.const ${I8_BLOCK})) ${g("n")}))`,
      )
    }`,
  );
  for (const r of RR) {
    for (const t of T) L.push(`        ${set(ia(r, t), "(v128.const i64x2 0 0)")}`);
  }
  /** One step of 8 columns at byte offset 8·u of the weight rows (16·u of the activations). */
  const step = (u: number, ind: string) => {
    const off = (n: number) => (n ? ` offset=${n}` : "");
    for (const t of T) L.push(`${ind}${set(`xv${t}`, `(v128.load${off(16 * u)} ${g(`x${t}`)})`)}`);
    for (const r of RR) {
      L.push(`${ind}${set("wv", `(v128.load8x8_s${off(8 * u)} ${g(`w${r}`)})`)}`);
      for (const t of T) {
        const dot = `(i32x4.dot_i16x8_s ${g("wv")} ${g(`xv${t}`)})`;
        L.push(`${ind}${set(ia(r, t), `(i32x4.add ${g(ia(r, t))} ${dot})`)}`);
      }
    }
  };
  // Steps of I8_MAC_UNROLL·8 columns while they fit in the block (one pointer bump per row for all),
  // then single steps; the i32 sums are exact, so the grouping never changes a result.
  const wide = 8 * I8_MAC_UNROLL;
  const fits = `(i32.le_u (i32.add ${g("col")} (i32.const ${wide})) ${g("bend")})`;
  L.push(`        (if ${fits}`);
  L.push("          (then");
  L.push("            (loop $wide");
  for (let u = 0; u < I8_MAC_UNROLL; u++) step(u, "              ");
  for (const r of RR) L.push(`              ${bump(`w${r}`, wide)}`);
  for (const t of T) L.push(`              ${bump(`x${t}`, 2 * wide)}`);
  L.push(`              ${bump("col", wide)}`);
  L.push(`              (br_if $wide ${fits}))))`);
  L.push("        (block $stepped");
  L.push(`          (br_if $stepped (i32.ge_u ${g("col")} ${g("bend")}))`);
  L.push("          (loop $steps");
  step(0, "            ");
  for (const r of RR) L.push(`            ${bump(`w${r}`, 8)}`);
  for (const t of T) L.push(`            ${bump(`x${t}`, 16)}`);
  L.push(`            ${bump("col", 8)}`);
  L.push(`            (br_if $steps (i32.lt_u ${g("col")} ${g("bend")}))))`);
  for (const k of G) {
    for (const t of T) {
      const sums = range(4).map((i) => g(ia(4 * k + i, t))).join(" ");
      L.push(
        `        ${
          set(
            fa(k, t),
            fma(
              `(f32x4.convert_i32x4_s (call $ireduce4 ${sums}))`,
              `(v128.load32_splat ${g(`c${t}`)})`,
              g(fa(k, t)),
            ),
          )
        }`,
      );
    }
  }
  for (const t of T) L.push(`        ${bump(`c${t}`, 4)}`);
  L.push(`        (br_if $blocks (i32.lt_u ${g("col")} ${g("n")}))))`);
  for (const k of G) {
    const sc = range(4).map((i) => `s${4 * k + i}`);
    const scales =
      `(f32x4.replace_lane 3 (f32x4.replace_lane 2 (f32x4.replace_lane 1 (v128.load32_splat ${
        g(sc[0])
      }) (f32.load ${g(sc[1])})) (f32.load ${g(sc[2])})) (f32.load ${g(sc[3])}))`;
    L.push(`    ${set("wv", scales)}`);
    for (const t of T) {
      L.push(`    ${storeGroup(R, k, t, `(f32x4.mul ${g(fa(k, t))} ${g("wv")})`)}`);
    }
  }
  L[L.length - 1] += ")";
  return L.join("\n");
}

const HEADER = `;; GENERATED by tools/gen_kernels_wat.ts. Do not edit; regenerate with
;;   deno run -A tools/gen_kernels_wat.ts && deno run -A tools/build_wasm.ts
;;
;; TNL Edge CPU kernels in WebAssembly SIMD (128-bit, with relaxed SIMD's f32x4.relaxed_madd).
;;
;; linear: Y[t, o] = sum_i X[t, i] * W[o, i] + b[o]   (y = x . W^T + b, PyTorch layout)
;;   w  [out, in]  row-major weights in their stored dtype:
;;                 f32; bf16 (u16, the top half of an f32); f16 (IEEE half, finite);
;;                 int8 q with one f32 scale s per row (w_hat = q * s, src/model/quantize.ts)
;;   x  [T, in]    f32 inputs; for int8 the int16 rows and block scales of quant_i16
;;   b  [out]      f32 bias, or the null pointer 0 for none (the arena never hands out address 0)
;;   y  [T, out]   f32 outputs (must not overlap x, w or b)
;; All pointers are byte addresses into the imported memory; no alignment is required.
;;
;; Numerics: 16-bit weights are widened to their exact f32 value in registers; products and sums
;; are f32 fused multiply-adds (f32x4.relaxed_madd: one rounding where the CPU has FMA, which V8
;; uses whenever it does; a multiply and an add elsewhere; fixed per machine) in one order per
;; output that does not depend on T, on the tile or on the thread computing it (see $f32_4x2):
;; batched decode is bit-identical to batch 1, threads to one thread. int8 multiplies int8
;; weights by int16 activations (quant_i16: one scale per token and block of ${I8_BLOCK} columns,
;; round to nearest) with exact i32 sums per block, then scales in f32 (see $i8_4x2). The JS
;; reference (f64 accumulation over w_hat and x) differs by rounding, and for int8 by the int16
;; rounding of x.
;;
;; Blocking: a tile is 4 or 8 weight rows x 1 or 2 input rows (8 x 1 when T = 1, 4 x 2 else;
;; int8: 4 x 2, and 4 x 1 for the odd token).
;; The R rows of a tile are not adjacent: with Q = floor(out / R) they are o, o + Q, ..., o + (R-1)Q.
;; Each load stream then walks Q whole rows sequentially, which the hardware prefetcher follows
;; (adjacent short rows make streams that restart every tile: measured 2-3x slower from DRAM).
;; The out mod R rows left over form 4-row tiles of adjacent rows, the missing rows clamped to the
;; last real row (computed, never stored).
;;
;; Widening: bf16 interleaves 16 loaded bytes with zeros (one unpack per 4 columns); f16 moves
;; exponent and mantissa up 13 bits and multiplies by 2^112 (exact for normal and subnormal
;; halves), then puts the sign back; int8 sign-extends 8 weights to i16 in the load.
(module
  (import "env" "memory" (memory 1))

  ;; [sum(a), sum(b), sum(c), sum(d)] of four f32x4 accumulators: (l0 + l2) + (l1 + l3).
  (func $reduce4 (param $a v128) (param $b v128) (param $c v128) (param $d v128) (result v128)
    (local $ab v128) (local $cd v128)
    ;; ab = [a0+a2, a1+a3, b0+b2, b1+b3], cd likewise
    (local.set $ab
      (f32x4.add
        (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $a) (local.get $b))
        (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $a) (local.get $b))))
    (local.set $cd
      (f32x4.add
        (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $c) (local.get $d))
        (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $c) (local.get $d))))
    (f32x4.add
      (i8x16.shuffle 0 1 2 3 8 9 10 11 16 17 18 19 24 25 26 27 (local.get $ab) (local.get $cd))
      (i8x16.shuffle 4 5 6 7 12 13 14 15 20 21 22 23 28 29 30 31 (local.get $ab) (local.get $cd))))

  ;; The same on i32x4 (exact: the order of integer sums does not matter).
  (func $ireduce4 (param $a v128) (param $b v128) (param $c v128) (param $d v128) (result v128)
    (local $ab v128) (local $cd v128)
    (local.set $ab
      (i32x4.add
        (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $a) (local.get $b))
        (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $a) (local.get $b))))
    (local.set $cd
      (i32x4.add
        (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $c) (local.get $d))
        (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $c) (local.get $d))))
    (i32x4.add
      (i8x16.shuffle 0 1 2 3 8 9 10 11 16 17 18 19 24 25 26 27 (local.get $ab) (local.get $cd))
      (i8x16.shuffle 4 5 6 7 12 13 14 15 20 21 22 23 28 29 30 31 (local.get $ab) (local.get $cd))))

  ;; 4 f16 values (u16 in the low half of each i32 lane) to f32, exactly (finite values only).
  (func $f16x4 (param $e v128) (result v128)
    (v128.or
      (f32x4.mul
        (i32x4.shl (v128.and (local.get $e) (v128.const i32x4 0x7fff 0x7fff 0x7fff 0x7fff))
          (i32.const 13))
        (v128.const i32x4 0x77800000 0x77800000 0x77800000 0x77800000))
      (i32x4.shl (v128.and (local.get $e) (v128.const i32x4 0x8000 0x8000 0x8000 0x8000))
        (i32.const 16))))

  ;; Store the first $nr lanes of $r (+ bias) at $y, $y + $ls, $y + 2 $ls, ...; bias lanes are at
  ;; the same stride from $b (0: no bias).
  (func $store4 (param $y i32) (param $r v128) (param $nr i32) (param $ls i32) (param $b i32)
    (if (local.get $b)
      (then
        (local.set $r
          (f32x4.add (local.get $r)
            (f32x4.replace_lane 3
              (f32x4.replace_lane 2
                (f32x4.replace_lane 1
                  (f32x4.splat (f32.load (local.get $b)))
                  (if (result f32) (i32.gt_u (local.get $nr) (i32.const 1))
                    (then (f32.load (i32.add (local.get $b) (local.get $ls))))
                    (else (f32.const 0))))
                (if (result f32) (i32.gt_u (local.get $nr) (i32.const 2))
                  (then (f32.load (i32.add (local.get $b) (i32.shl (local.get $ls) (i32.const 1)))))
                  (else (f32.const 0))))
              (if (result f32) (i32.gt_u (local.get $nr) (i32.const 3))
                (then (f32.load (i32.add (local.get $b) (i32.mul (local.get $ls) (i32.const 3)))))
                (else (f32.const 0))))))))
    (f32.store (local.get $y) (f32x4.extract_lane 0 (local.get $r)))
    (if (i32.gt_u (local.get $nr) (i32.const 1))
      (then
        (f32.store (i32.add (local.get $y) (local.get $ls)) (f32x4.extract_lane 1 (local.get $r)))))
    (if (i32.gt_u (local.get $nr) (i32.const 2))
      (then
        (f32.store (i32.add (local.get $y) (i32.shl (local.get $ls) (i32.const 1)))
          (f32x4.extract_lane 2 (local.get $r)))))
    (if (i32.gt_u (local.get $nr) (i32.const 3))
      (then
        (f32.store (i32.add (local.get $y) (i32.mul (local.get $ls) (i32.const 3)))
          (f32x4.extract_lane 3 (local.get $r))))))

  ;; int16 activations for the int8 kernels: per row t of x [T, n] and block of ${I8_BLOCK} columns,
  ;; scale c = m / 32767 with m = max |x| (NaN if any x is), q = round_nearest_even(x * (32767 / m))
  ;; clamped to +-32767 (0 where m = 0). q rows are n rounded up to 8 long (zero-padded), at $q
  ;; with 2 * pad8(n) bytes per row; scales at $c with 4 * ceil(n / ${I8_BLOCK}) bytes per row.
  (func (export "quant_i16") (param $x i32) (param $T i32) (param $n i32) (param $q i32) (param $c i32)
    (local $t i32) (local $j i32) (local $j0 i32) (local $j1 i32) (local $m f32) (local $inv f32)
    (local $pad i32)
    (local.set $pad (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8)))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $t) (local.get $T)))
        (local.set $j0 (i32.const 0))
        (block $blocks_done
          (loop $blocks
            (br_if $blocks_done (i32.ge_u (local.get $j0) (local.get $n)))
${I16_BLOCK_SCALE}            (local.set $j (local.get $j0))
            (loop $quant
              (i32.store16 (i32.add (local.get $q) (i32.shl (local.get $j) (i32.const 1)))
                ${I16_VALUE})
              (local.set $j (i32.add (local.get $j) (i32.const 1)))
              (br_if $quant (i32.lt_u (local.get $j) (local.get $j1))))
            (local.set $j0 (local.get $j1))
            (br $blocks)))
        (local.set $j (local.get $n))
        (block $pad_done
          (loop $zero
            (br_if $pad_done (i32.ge_u (local.get $j) (local.get $pad)))
            (i32.store16 (i32.add (local.get $q) (i32.shl (local.get $j) (i32.const 1))) (i32.const 0))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $zero)))
        (local.set $x (i32.add (local.get $x) (i32.shl (local.get $n) (i32.const 2))))
        (local.set $q (i32.add (local.get $q) (i32.shl (local.get $pad) (i32.const 1))))
        (local.set $t (i32.add (local.get $t) (i32.const 1)))
        (br $rows))))

  ;; ---------------------------------------------------------------------------------------------
  ;; Tiles. Common parameters:
  ;;   $w0  first weight row of the tile      $rs  bytes between the tile's weight rows
  ;;   $x0  first input row                   $xs  bytes between input rows
  ;;   $n   in (elements per row)
  ;;   $y   output of row 0, token 0          $ls  bytes between the tile's outputs (lanes)
  ;;   $ys  bytes between output rows (4 out) $nr  real weight rows in the tile (1..4; 8-row: 8)
  ;;   $b   bias of row 0, or 0
  ;; int8 also: $s0 scale of row 0 (scales $ls apart), $c0 block scales of token 0, $cs bytes
  ;; between the tokens' block scales.
  ;; ---------------------------------------------------------------------------------------------
`;

/** Tile names and the extra arguments their calls pass (int8: scales). */
interface Kind {
  name: string;
  bytes: number;
  extra: string;
  extraParams: string;
}

const KINDS: Kind[] = [
  ...FLOATS.map((d) => ({ name: d.name, bytes: d.bytes, extra: "", extraParams: "" })),
  {
    name: "i8",
    bytes: 1,
    extra: " (local.get $s) (local.get $c) (local.get $cs)",
    extraParams: " (param $s i32) (param $c i32) (param $cs i32)",
  },
];

/** All tokens of one 4-row group: pairs of tokens (4x2), then the odd one (4x1). */
function tokens(k: Kind): string {
  const args = "(local.get $w0) (local.get $rs) (local.get $x) (local.get $xs) (local.get $n) " +
    "(local.get $y) (local.get $ls) (local.get $ys) (local.get $nr) (local.get $b)" + k.extra;
  const nextC = k.name === "i8"
    ? "\n        (local.set $c (i32.add (local.get $c) (i32.shl (local.get $cs) (i32.const 1))))"
    : "";
  return `
  ;; All tokens of one ${k.name} group of 4 rows: pairs of tokens, then the odd one${
    k.name === "i8" ? " (over quant_i16's activations)" : ""
  }.
  (func $tokens_${k.name}
    (param $w0 i32) (param $rs i32) (param $x i32) (param $xs i32) (param $n i32)
    (param $y i32) (param $ls i32) (param $ys i32) (param $nr i32) (param $b i32)${k.extraParams}
    (param $T i32)
    (local $t i32)
    (block $done
      (loop $pairs
        (br_if $done (i32.gt_u (i32.add (local.get $t) (i32.const 2)) (local.get $T)))
        (call $${k.name}_4x2 ${args})
        (local.set $x (i32.add (local.get $x) (i32.shl (local.get $xs) (i32.const 1))))
        (local.set $y (i32.add (local.get $y) (i32.shl (local.get $ys) (i32.const 1))))${nextC}
        (local.set $t (i32.add (local.get $t) (i32.const 2)))
        (br $pairs)))
    (if (i32.lt_u (local.get $t) (local.get $T))
      (then (call $${k.name}_4x1 ${args}))))`;
}

/** The driver and export of one dtype. */
function driver(k: Kind): string {
  const i8 = k.name === "i8";
  const off = (p: string, o: string, sh = 2) =>
    `(select (i32.add (local.get $${p}) (i32.shl ${o} (i32.const ${sh}))) (i32.const 0) (local.get $${p}))`;
  const o = "(local.get $o)";
  const common = (rs: string, ls: string, nr: string) => {
    const w = `(i32.add (local.get $w) (i32.mul ${o} (local.get $rs)))`;
    const y = `(i32.add (local.get $y) (i32.shl ${o} (i32.const 2)))`;
    const s = i8 ? ` ${off("s", o)} (local.get $c) (local.get $cs)` : "";
    return { w, y, s, rs, ls, nr };
  };
  // Strided 8-row tiles (T = 1).
  const c8 = common(
    "(i32.mul (local.get $rs) (local.get $q))",
    "(i32.shl (local.get $q) (i32.const 2))",
    "(i32.const 8)",
  );
  const call8 =
    `(call $${k.name}_8x1 ${c8.w} ${c8.rs} (local.get $x) (local.get $xs) (local.get $in) ${c8.y} ${c8.ls} (local.get $ys) ${c8.nr} ${
      off("b", o)
    }${c8.s})`;
  const c4 = common(
    "(i32.mul (local.get $rs) (local.get $q))",
    "(i32.shl (local.get $q) (i32.const 2))",
    "(i32.const 4)",
  );
  const call4 =
    `(call $tokens_${k.name} ${c4.w} ${c4.rs} (local.get $x) (local.get $xs) (local.get $in) ${c4.y} ${c4.ls} (local.get $ys) ${c4.nr} ${
      off("b", o)
    }${c4.s} (local.get $T))`;
  const groups4 = `(local.set $q (i32.shr_u (local.get $out) (i32.const 2)))
        (block $done4
          (loop $groups
            (br_if $done4 (i32.ge_u (local.get $o) (local.get $q)))
            ${call4}
            (local.set $o (i32.add (local.get $o) (i32.const 1)))
            (br $groups)))
        (local.set $o (i32.shl (local.get $q) (i32.const 2)))`;
  const cr = common(
    "(local.get $rs)",
    "(i32.const 4)",
    "(i32.sub (local.get $out) (local.get $o))",
  );
  const callRest =
    `(call $tokens_${k.name} ${cr.w} ${cr.rs} (local.get $x) (local.get $xs) (local.get $in) ${cr.y} ${cr.ls} (local.get $ys) ${cr.nr} ${
      off("b", o)
    }${cr.s} (local.get $T))`;
  const setup = i8
    ? `
    ;; x is quant_i16's output: rows of pad8(in) int16, block scales at $c.
    (local.set $xs (i32.shl (i32.and (i32.add (local.get $in) (i32.const 7)) (i32.const -8)) (i32.const 1)))
    (local.set $cs (i32.shl (i32.div_u (i32.add (local.get $in) (i32.const ${
      I8_BLOCK - 1
    })) (i32.const ${I8_BLOCK})) (i32.const 2)))`
    : `
    (local.set $xs (i32.shl (local.get $in) (i32.const 2)))`;
  return `
  ;; y = x . W^T + b with ${k.name} weights${
    i8
      ? " (x: quant_i16's rows and block scales at $c), per-row f32 scales at $s"
      : " ($s, $c unused)"
  };
  ;; output rows $ys bytes apart (0: 4 out). A block of rows is a call on slices of w, b, s and y
  ;; with the full $ys (threads split so; an output's sums do not depend on its tile). ${
    i8
      ? `Q = floor(out / 4)
  ;; strided 4-row groups over token pairs (and the odd token).`
      : `T = 1:
  ;; Q = floor(out / 8) strided 8-row tiles; else Q = floor(out / 4) strided 4-row groups over
  ;; token pairs.`
  } Then 4-row tiles of the rows left (adjacent, clamped).
  (func (export "linear_${k.name}")
    (param $w i32) (param $x i32) (param $b i32) (param $y i32)
    (param $out i32) (param $in i32) (param $T i32) (param $s i32) (param $ys i32) (param $c i32)
    (local $rs i32) (local $xs i32) (local $cs i32) (local $q i32) (local $o i32)
    (local.set $rs (i32.mul (local.get $in) (i32.const ${k.bytes})))${setup}
    (if (i32.eqz (local.get $ys))
      (then (local.set $ys (i32.shl (local.get $out) (i32.const 2)))))
    ${
    i8 ? groups4 : `(if (i32.eq (local.get $T) (i32.const 1))
      (then
        (local.set $q (i32.shr_u (local.get $out) (i32.const 3)))
        (block $done8
          (loop $tiles8
            (br_if $done8 (i32.ge_u (local.get $o) (local.get $q)))
            ${call8}
            (local.set $o (i32.add (local.get $o) (i32.const 1)))
            (br $tiles8)))
        (local.set $o (i32.shl (local.get $q) (i32.const 3))))
      (else
        ${groups4}))`
  }
    (block $rest_done
      (loop $rest
        (br_if $rest_done (i32.ge_u (local.get $o) (local.get $out)))
        ${callRest}
        (local.set $o (i32.add (local.get $o) (i32.const 4)))
        (br $rest))))`;
}

/** 8 accumulators over 32 columns: `f(u)` for u = 0..7, one statement per line. */
const eight = (f: (u: number) => string, indent: string) =>
  range(8).map((u) => indent + f(u)).join("\n");

/**
 * Lightning Attention prefill (src/cpu/attention.ts `lightningPrefill`, in f32 with fused
 * multiply-adds) for heads [$h0, $h1): each head's output columns go 32 at a time (8 vector
 * accumulators). Heads are independent (threads split them); dk and dv must be multiples of 32.
 */
function lightning(): string {
  const I = "              ";
  return `
  ;; Lightning Attention over $T tokens of heads [$h0, $h1), blocks of $blk tokens:
  ;;   o_t = λ^(t-s+1)·q_t·S + Σ_{s≤j≤t} f32(q_t·k_j)·λ^(t-j)·v_j;  S ← λ^m·S + Σ_j λ^(e-1-j)·k_jᵀ·v_j
  ;; $S [h][dk][dv] states; $q, $k [h][T][dk]; v row t of head h at $v + t·$vs + 4·h·dv; o likewise
  ;; at $o with $os; $pw [h][blk + 1] λ^n in f32; $sc [h][blk] scratch for the scores.
  (func (export "lightning")
    (param $S i32) (param $q i32) (param $k i32) (param $v i32) (param $o i32) (param $pw i32)
    (param $h0 i32) (param $h1 i32) (param $T i32) (param $dk i32) (param $dv i32) (param $blk i32)
    (param $vs i32) (param $os i32) (param $sc i32)
    (local $h i32) (local $Sh i32) (local $qh i32) (local $kh i32) (local $vh i32) (local $oh i32)
    (local $ph i32) (local $sch i32) (local $s0 i32) (local $m i32) (local $t i32) (local $j i32)
    (local $i i32) (local $jc i32) (local $qt i32) (local $kj i32) (local $p i32) (local $p2 i32)
    (local $d f32) (local $c v128) (local $dot v128) (local $rowb i32)
    ${range(8).map((u) => `(local $a${u} v128)`).join(" ")}
    (local.set $rowb (i32.shl (local.get $dv) (i32.const 2)))
    (local.set $h (local.get $h0))
    (block $heads_done
      (loop $heads
        (br_if $heads_done (i32.ge_u (local.get $h) (local.get $h1)))
        (local.set $Sh (i32.add (local.get $S) (i32.mul (local.get $h) (i32.mul (local.get $dk) (local.get $rowb)))))
        (local.set $qh (i32.add (local.get $q) (i32.shl (i32.mul (local.get $h) (i32.mul (local.get $T) (local.get $dk))) (i32.const 2))))
        (local.set $kh (i32.add (local.get $k) (i32.shl (i32.mul (local.get $h) (i32.mul (local.get $T) (local.get $dk))) (i32.const 2))))
        (local.set $vh (i32.add (local.get $v) (i32.mul (local.get $h) (local.get $rowb))))
        (local.set $oh (i32.add (local.get $o) (i32.mul (local.get $h) (local.get $rowb))))
        (local.set $ph (i32.add (local.get $pw) (i32.shl (i32.mul (local.get $h) (i32.add (local.get $blk) (i32.const 1))) (i32.const 2))))
        (local.set $sch (i32.add (local.get $sc) (i32.shl (i32.mul (local.get $h) (local.get $blk)) (i32.const 2))))
        (local.set $s0 (i32.const 0))
        (loop $blocks
          (local.set $m (i32.sub (local.get $T) (local.get $s0)))
          (if (i32.gt_u (local.get $m) (local.get $blk)) (then (local.set $m (local.get $blk))))
          (local.set $t (i32.const 0))
          (loop $tokens
            (local.set $qt (i32.add (local.get $qh) (i32.shl (i32.mul (i32.add (local.get $s0) (local.get $t)) (local.get $dk)) (i32.const 2))))
            ;; scores: f32(q_t·k_j)·λ^(t-j) for j ≤ t; the dot in 4 lanes, then (l0 + l2) + (l1 + l3)
            (local.set $j (i32.const 0))
            (loop $scores
              (local.set $kj (i32.add (local.get $kh) (i32.shl (i32.mul (i32.add (local.get $s0) (local.get $j)) (local.get $dk)) (i32.const 2))))
              (local.set $dot (v128.const i64x2 0 0))
              (local.set $i (i32.const 0))
              (loop $dotl
                (local.set $dot ${
    fma(
      "(v128.load (i32.add (local.get $qt) (local.get $i)))",
      "(v128.load (i32.add (local.get $kj) (local.get $i)))",
      "(local.get $dot)",
    )
  })
                (local.set $i (i32.add (local.get $i) (i32.const 16)))
                (br_if $dotl (i32.lt_u (local.get $i) (i32.shl (local.get $dk) (i32.const 2)))))
              (f32.store (i32.add (local.get $sch) (i32.shl (local.get $j) (i32.const 2)))
                (f32.mul
                  (f32.add
                    (f32.add (f32x4.extract_lane 0 (local.get $dot)) (f32x4.extract_lane 2 (local.get $dot)))
                    (f32.add (f32x4.extract_lane 1 (local.get $dot)) (f32x4.extract_lane 3 (local.get $dot))))
                  (f32.load (i32.add (local.get $ph) (i32.shl (i32.sub (local.get $t) (local.get $j)) (i32.const 2))))))
              (local.set $j (i32.add (local.get $j) (i32.const 1)))
              (br_if $scores (i32.le_u (local.get $j) (local.get $t))))
            (local.set $d (f32.load (i32.add (local.get $ph) (i32.shl (i32.add (local.get $t) (i32.const 1)) (i32.const 2)))))
            (local.set $jc (i32.const 0))
            (loop $chunks
${eight((u) => `(local.set $a${u} (v128.const i64x2 0 0))`, I)}
              ;; inter-block: Σ_i (q_ti·λ^(t-s+1))·S[i, jc..jc+32]
              (local.set $p (i32.add (local.get $Sh) (i32.shl (local.get $jc) (i32.const 2))))
              (local.set $i (i32.const 0))
              (loop $inter
                (local.set $c (f32x4.splat (f32.mul (f32.load (i32.add (local.get $qt) (i32.shl (local.get $i) (i32.const 2)))) (local.get $d))))
${
    eight((u) =>
      `  (local.set $a${u} ${
        fma("(local.get $c)", `(v128.load offset=${16 * u} (local.get $p))`, `(local.get $a${u})`)
      })`, I)
  }
                (local.set $p (i32.add (local.get $p) (local.get $rowb)))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $inter (i32.lt_u (local.get $i) (local.get $dk))))
              ;; intra-block: Σ_{j≤t} score_j·v_j[jc..jc+32]
              (local.set $p (i32.add (i32.add (local.get $vh) (i32.mul (local.get $s0) (local.get $vs))) (i32.shl (local.get $jc) (i32.const 2))))
              (local.set $j (i32.const 0))
              (loop $intra
                (local.set $c (v128.load32_splat (i32.add (local.get $sch) (i32.shl (local.get $j) (i32.const 2)))))
${
    eight((u) =>
      `  (local.set $a${u} ${
        fma("(local.get $c)", `(v128.load offset=${16 * u} (local.get $p))`, `(local.get $a${u})`)
      })`, I)
  }
                (local.set $p (i32.add (local.get $p) (local.get $vs)))
                (local.set $j (i32.add (local.get $j) (i32.const 1)))
                (br_if $intra (i32.le_u (local.get $j) (local.get $t))))
              (local.set $p (i32.add (i32.add (local.get $oh) (i32.mul (i32.add (local.get $s0) (local.get $t)) (local.get $os))) (i32.shl (local.get $jc) (i32.const 2))))
${eight((u) => `(v128.store offset=${16 * u} (local.get $p) (local.get $a${u}))`, I)}
              (local.set $jc (i32.add (local.get $jc) (i32.const 32)))
              (br_if $chunks (i32.lt_u (local.get $jc) (local.get $dv))))
            (local.set $t (i32.add (local.get $t) (i32.const 1)))
            (br_if $tokens (i32.lt_u (local.get $t) (local.get $m))))
          ;; state: S[i, :] = λ^m·S[i, :] + Σ_j (k_j[i]·λ^(m-1-j))·v_j
          (local.set $d (f32.load (i32.add (local.get $ph) (i32.shl (local.get $m) (i32.const 2)))))
          (local.set $i (i32.const 0))
          (loop $rows
            (local.set $jc (i32.const 0))
            (loop $schunks
              (local.set $p (i32.add (local.get $Sh) (i32.shl (i32.add (i32.mul (local.get $i) (local.get $dv)) (local.get $jc)) (i32.const 2))))
${
    eight((u) =>
      `(local.set $a${u} (f32x4.mul (v128.load offset=${
        16 * u
      } (local.get $p)) (f32x4.splat (local.get $d))))`, I)
  }
              (local.set $p2 (i32.add (i32.add (local.get $vh) (i32.mul (local.get $s0) (local.get $vs))) (i32.shl (local.get $jc) (i32.const 2))))
              (local.set $j (i32.const 0))
              (loop $upd
                (local.set $c (f32x4.splat (f32.mul
                  (f32.load (i32.add (local.get $kh) (i32.shl (i32.add (i32.mul (i32.add (local.get $s0) (local.get $j)) (local.get $dk)) (local.get $i)) (i32.const 2))))
                  (f32.load (i32.add (local.get $ph) (i32.shl (i32.sub (i32.sub (local.get $m) (i32.const 1)) (local.get $j)) (i32.const 2)))))))
${
    eight((u) =>
      `  (local.set $a${u} ${
        fma("(local.get $c)", `(v128.load offset=${16 * u} (local.get $p2))`, `(local.get $a${u})`)
      })`, I)
  }
                (local.set $p2 (i32.add (local.get $p2) (local.get $vs)))
                (local.set $j (i32.add (local.get $j) (i32.const 1)))
                (br_if $upd (i32.lt_u (local.get $j) (local.get $m))))
${eight((u) => `(v128.store offset=${16 * u} (local.get $p) (local.get $a${u}))`, I)}
              (local.set $jc (i32.add (local.get $jc) (i32.const 32)))
              (br_if $schunks (i32.lt_u (local.get $jc) (local.get $dv))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $rows (i32.lt_u (local.get $i) (local.get $dk))))
          (local.set $s0 (i32.add (local.get $s0) (local.get $m)))
          (br_if $blocks (i32.lt_u (local.get $s0) (local.get $T))))
        (local.set $h (i32.add (local.get $h) (i32.const 1)))
        (br $heads))))`;
}

/**
 * The decode recurrence of one sequence (src/cpu/attention.ts `recurrentStep`, in f32 with fused
 * multiply-adds) for heads [$h0, $h1), 32 output columns at a time (8 vector accumulators):
 *   S[i, j] ← fma(k_i, v_j, f32(λ·S[i, j]));  o_j = Σ_i q_i·S[i, j] (new S), i in order
 * Every output is one fixed chain, whatever the thread or the batch. dk and dv: multiples of 32.
 */
function recurrent(): string {
  const I = "              ";
  return `
  ;; Decode step of heads [$h0, $h1) of one sequence: S ← λ·S + kᵀ·v;  o = q·S
  ;; $S [h][dk][dv] states; q and k of head h at $q + h·$qs, $k + h·$qs (dk floats);
  ;; v and o of head h at $v + 4·h·dv, $o + 4·h·dv; $lam [h] λ in f32.
  (func (export "recurrent")
    (param $S i32) (param $q i32) (param $k i32) (param $v i32) (param $o i32) (param $lam i32)
    (param $h0 i32) (param $h1 i32) (param $dk i32) (param $dv i32) (param $qs i32)
    (local $h i32) (local $Sh i32) (local $qh i32) (local $kh i32) (local $vh i32) (local $oh i32)
    (local $jc i32) (local $i i32) (local $p i32) (local $rowb i32) (local $end i32) (local $vc i32)
    (local $l v128) (local $kc v128) (local $qc v128) (local $n v128)
    ${range(8).map((u) => `(local $a${u} v128)`).join(" ")}
    (local.set $rowb (i32.shl (local.get $dv) (i32.const 2)))
    (local.set $h (local.get $h0))
    (block $heads_done
      (loop $heads
        (br_if $heads_done (i32.ge_u (local.get $h) (local.get $h1)))
        (local.set $Sh (i32.add (local.get $S) (i32.mul (local.get $h) (i32.mul (local.get $dk) (local.get $rowb)))))
        (local.set $qh (i32.add (local.get $q) (i32.mul (local.get $h) (local.get $qs))))
        (local.set $kh (i32.add (local.get $k) (i32.mul (local.get $h) (local.get $qs))))
        (local.set $vh (i32.add (local.get $v) (i32.mul (local.get $h) (local.get $rowb))))
        (local.set $oh (i32.add (local.get $o) (i32.mul (local.get $h) (local.get $rowb))))
        (local.set $l (v128.load32_splat (i32.add (local.get $lam) (i32.shl (local.get $h) (i32.const 2)))))
        (local.set $end (i32.shl (local.get $dk) (i32.const 2)))
        (local.set $jc (i32.const 0))
        (loop $chunks
${eight((u) => `(local.set $a${u} (v128.const i64x2 0 0))`, I.slice(4))}
          (local.set $p (i32.add (local.get $Sh) (i32.shl (local.get $jc) (i32.const 2))))
          (local.set $vc (i32.add (local.get $vh) (i32.shl (local.get $jc) (i32.const 2))))
          (local.set $i (i32.const 0))
          (loop $rows
            (local.set $kc (v128.load32_splat (i32.add (local.get $kh) (local.get $i))))
            (local.set $qc (v128.load32_splat (i32.add (local.get $qh) (local.get $i))))
${
    eight(
      (u) =>
        `(local.set $n ${
          fma(
            "(local.get $kc)",
            `(v128.load offset=${16 * u} (local.get $vc))`,
            `(f32x4.mul (local.get $l) (v128.load offset=${16 * u} (local.get $p)))`,
          )
        })
${I}(v128.store offset=${16 * u} (local.get $p) (local.get $n))
${I}(local.set $a${u} ${fma("(local.get $qc)", "(local.get $n)", `(local.get $a${u})`)})`,
      I,
    )
  }
            (local.set $p (i32.add (local.get $p) (local.get $rowb)))
            (local.set $i (i32.add (local.get $i) (i32.const 4)))
            (br_if $rows (i32.lt_u (local.get $i) (local.get $end))))
          (local.set $p (i32.add (local.get $oh) (i32.shl (local.get $jc) (i32.const 2))))
${eight((u) => `(v128.store offset=${16 * u} (local.get $p) (local.get $a${u}))`, I.slice(4))}
          (local.set $jc (i32.add (local.get $jc) (i32.const 32)))
          (br_if $chunks (i32.lt_u (local.get $jc) (local.get $dv))))
        (local.set $h (i32.add (local.get $h) (i32.const 1)))
        (br $heads))))`;
}

/** The whole kernel source. */
export function generateWat(): string {
  const parts = [HEADER];
  for (const dt of FLOATS) {
    parts.push(tileF(dt, 4, 2), "", tileF(dt, 4, 1), "", tileF(dt, 8, 1));
    parts.push(
      tokens(KINDS.find((k) => k.name === dt.name)!),
      driver(KINDS.find((k) => k.name === dt.name)!),
      "",
    );
  }
  const i8 = KINDS.find((k) => k.name === "i8")!;
  parts.push(tileI8Mac(4, 2), "", tileI8Mac(4, 1));
  parts.push(tokens(i8), driver(i8), "");
  parts.push(lightning(), "", recurrent(), "");
  return parts.join("\n").trimEnd() + ")\n";
}

if (import.meta.main) {
  const root = new URL("../", import.meta.url);
  await Deno.writeTextFile(new URL(WAT_OUT_PATH, root), generateWat());
  console.log(`${WAT_OUT_PATH} written`);
}
