/**
 * Generates `src/cpu/wasm/kernels.wat`: the CPU linear kernels for every stored weight dtype (f32,
 * bf16, f16, int8 with per-row scales). The tiles of the four dtypes differ only in how a group of
 * weights is loaded and widened to f32, so they are written once here and expanded per dtype.
 *
 * ```sh
 * deno run -A tools/gen_kernels_wat.ts && deno run -A tools/build_wasm.ts
 * ```
 * `tests/cpu/wasm/build_test.ts` fails when the committed `.wat` is not this script's output.
 * @module
 */

/** Path of the generated kernel source, relative to the repository root. */
export const WAT_OUT_PATH = "src/cpu/wasm/kernels.wat";

/** A stored weight dtype: its code (the kernels' `$dt`), element bytes and widening code. */
interface Dt {
  name: "f32" | "bf16" | "f16" | "i8";
  code: number;
  bytes: number;
}

const DTYPES: Dt[] = [
  { name: "f32", code: 0, bytes: 4 },
  { name: "bf16", code: 1, bytes: 2 },
  { name: "f16", code: 2, bytes: 2 },
  { name: "i8", code: 3, bytes: 1 },
];

const g = (v: string) => `(local.get $${v})`;
const set = (v: string, e: string) => `(local.set $${v} ${e})`;
const add = (a: string, b: string) => `(f32x4.add ${a} ${b})`;
const mul = (a: string, b: string) => `(f32x4.mul ${a} ${b})`;
const bump = (v: string, n: number) => set(v, `(i32.add ${g(v)} (i32.const ${n}))`);

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
    case "i8":
      // ŵ = q·s: q widened exactly, one correctly rounded f32 product with the row's scale.
      return {
        pre: [set("v", `(v128.load8x8_s ${w})`), set("sc", `(v128.load32_splat ${g(`s${r}`)})`)],
        lo: mul(`(f32x4.convert_i32x4_s (i32x4.extend_low_i16x8_s ${g("v")}))`, g("sc")),
        hi: mul(`(f32x4.convert_i32x4_s (i32x4.extend_high_i16x8_s ${g("v")}))`, g("sc")),
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
    case "i8":
      return mul(
        `(f32x4.convert_i32x4_s (i32x4.extend_low_i16x8_s (i16x8.extend_low_i8x16_s (v128.load32_zero ${w}))))`,
        `(v128.load32_splat ${g(`s${r}`)})`,
      );
  }
}

/** One weight of each of the 4 rows (the column at $w0..$w3) as f32x4. */
function gather(dt: Dt): string {
  const lanes = (load: string, splat: string, repl: string) =>
    `(${repl} 3 (${repl} 2 (${repl} 1 (${splat} (${load} ${g("w0")})) (${load} ${
      g("w1")
    })) (${load} ${g("w2")})) (${load} ${g("w3")}))`;
  switch (dt.name) {
    case "f32":
      return lanes("f32.load", "f32x4.splat", "f32x4.replace_lane");
    case "bf16":
      return `(i32x4.shl ${
        lanes("i32.load16_u", "i32x4.splat", "i32x4.replace_lane")
      } (i32.const 16))`;
    case "f16":
      return f16x4(lanes("i32.load16_u", "i32x4.splat", "i32x4.replace_lane"));
    case "i8":
      return mul(
        `(f32x4.convert_i32x4_s ${lanes("i32.load8_s", "i32x4.splat", "i32x4.replace_lane")})`,
        g("st"),
      );
  }
}

/**
 * A tile: 4 weight rows × `nt` tokens (1 or 2). The summation order of one output is the same in
 * both tiles (so a token's result never depends on the batch it is in):
 *   acc (4 lanes) += (w[c..c+4]·x[c..c+4] + w[c+4..c+8]·x[c+4..c+8])   for each full 8 columns
 *   acc += w[c..c+4]·x[c..c+4]                                          for a left-over 4
 *   sum = (acc0 + acc2) + (acc1 + acc3);  sum += w[c]·x[c] for each of the last in mod 4 columns
 */
function tile(dt: Dt, nt: 1 | 2): string {
  const T = Array.from({ length: nt }, (_, t) => t);
  const R = [0, 1, 2, 3];
  const acc = (r: number, t: number) => `a${r}${t}`;
  const xp = (t: number) => `x${t}`;
  const es = dt.bytes;
  const L: string[] = [];
  const locals = [
    "(local $w1 i32) (local $w2 i32) (local $w3 i32) (local $x1 i32)",
    "(local $s1 i32) (local $s2 i32) (local $s3 i32)",
    "(local $end8 i32) (local $end4 i32) (local $end i32)",
    "(local $v v128) (local $lo v128) (local $hi v128) (local $z v128) (local $sc v128) (local $st v128)",
    "(local $p0 v128) (local $q0 v128) (local $p1 v128) (local $q1 v128)",
    R.map((r) => T.map((t) => `(local $${acc(r, t)} v128)`).join(" ")).join(" "),
  ];
  L.push(`  ;; ${dt.name} weights, 4 rows x ${nt} token${nt > 1 ? "s" : ""}.`);
  L.push(`  (func $${dt.name}_4x${nt}`);
  L.push(
    "    (param $w0 i32) (param $rs i32) (param $x0 i32) (param $xs i32) (param $n i32)",
  );
  L.push(
    "    (param $y i32) (param $ls i32) (param $ys i32) (param $nr i32) (param $b i32) (param $s0 i32)",
  );
  for (const l of locals) L.push(`    ${l}`);
  // Rows past $nr repeat the last real row (computed, never stored); scales follow their rows.
  for (const [p, v] of [["w", "rs"], ["s", "ls"]]) {
    for (const r of [1, 2, 3]) {
      L.push(
        `    ${
          set(
            `${p}${r}`,
            `(select (i32.add ${g(`${p}${r - 1}`)} ${g(v)}) ${g(`${p}${r - 1}`)} (i32.gt_u ${
              g("nr")
            } (i32.const ${r})))`,
          )
        }`,
      );
    }
  }
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
    L.push(`          ${set(`p${t}`, `(v128.load ${g(xp(t))})`)}`);
    L.push(`          ${set(`q${t}`, `(v128.load offset=16 ${g(xp(t))})`)}`);
  }
  for (const r of R) {
    const { pre, lo, hi } = widen8(dt, r);
    for (const p of pre) L.push(`          ${p}`);
    L.push(`          ${set("lo", lo)}`);
    L.push(`          ${set("hi", hi)}`);
    for (const t of T) {
      L.push(
        `          ${
          set(
            acc(r, t),
            add(g(acc(r, t)), add(mul(g("lo"), g(`p${t}`)), mul(g("hi"), g(`q${t}`)))),
          )
        }`,
      );
    }
  }
  for (const r of R) L.push(`          ${bump(`w${r}`, 8 * es)}`);
  for (const t of T) L.push(`          ${bump(xp(t), 32)}`);
  L.push(`          (br_if $vec8 (i32.lt_u ${g("x0")} ${g("end8")})))))`);
  // A left-over group of 4 columns.
  L.push(`    (if (i32.lt_u ${g("x0")} ${g("end4")})`);
  L.push("      (then");
  for (const t of T) L.push(`        ${set(`p${t}`, `(v128.load ${g(xp(t))})`)}`);
  for (const r of R) {
    L.push(`        ${set("lo", widen4(dt, r))}`);
    for (const t of T) {
      L.push(`        ${set(acc(r, t), add(g(acc(r, t)), mul(g("lo"), g(`p${t}`))))}`);
    }
  }
  for (const r of R) L.push(`        ${bump(`w${r}`, 4 * es)}`);
  for (const t of T) L.push(`        ${bump(xp(t), 16)}`);
  L.push("      ))");
  // From here a0t holds the 4 row sums of token t.
  for (const t of T) {
    L.push(
      `    ${
        set(
          acc(0, t),
          `(call $reduce4 ${g(acc(0, t))} ${g(acc(1, t))} ${g(acc(2, t))} ${g(acc(3, t))})`,
        )
      }`,
    );
  }
  // The in mod 4 last columns, one column of the 4 rows at a time.
  L.push(`    (if (i32.lt_u ${g("x0")} ${g("end")})`);
  L.push("      (then");
  if (dt.name === "i8") {
    L.push(
      `        ${
        set(
          "st",
          `(f32x4.replace_lane 3 (f32x4.replace_lane 2 (f32x4.replace_lane 1 (f32x4.splat (f32.load ${
            g("s0")
          })) (f32.load ${g("s1")})) (f32.load ${g("s2")})) (f32.load ${g("s3")}))`,
        )
      }`,
    );
  }
  L.push("        (loop $tail");
  L.push(`          ${set("lo", gather(dt))}`);
  for (const t of T) {
    L.push(
      `          ${
        set(acc(0, t), add(g(acc(0, t)), mul(g("lo"), `(f32x4.splat (f32.load ${g(xp(t))}))`)))
      }`,
    );
  }
  for (const r of R) L.push(`          ${bump(`w${r}`, es)}`);
  for (const t of T) L.push(`          ${bump(xp(t), 4)}`);
  L.push(`          (br_if $tail (i32.lt_u ${g("x0")} ${g("end")})))))`);
  for (const t of T) {
    const y = t === 0 ? g("y") : `(i32.add ${g("y")} ${g("ys")})`;
    L.push(`    (call $store4 ${y} ${g(acc(0, t))} ${g("nr")} ${g("ls")} ${g("b")})`);
  }
  L[L.length - 1] += ")";
  return L.join("\n");
}

const HEADER = `;; GENERATED by tools/gen_kernels_wat.ts. Do not edit; regenerate with
;;   deno run -A tools/gen_kernels_wat.ts && deno run -A tools/build_wasm.ts
;;
;; TNL Edge CPU kernels in WebAssembly SIMD (128-bit, no relaxed SIMD, no threads).
;;
;; linear: Y[t, o] = sum_i X[t, i] * W[o, i] + b[o]   (y = x . W^T + b, PyTorch layout)
;;   w  [out, in]  row-major weights in their stored dtype:
;;                 f32; bf16 (u16, the top half of an f32); f16 (IEEE half, finite);
;;                 int8 with one f32 scale per row at s (w_hat = q * s, one rounded f32 product,
;;                 as src/model/quantize.ts and the GPU kernels define it)
;;   x  [T, in]    f32 inputs
;;   b  [out]      f32 bias, or the null pointer 0 for none (the arena never hands out address 0)
;;   y  [T, out]   f32 outputs (must not overlap x, w or b)
;; All pointers are byte addresses into the imported memory; no alignment is required.
;;
;; Numerics: every weight is widened to its exact f32 value (int8: q * s rounded once) in
;; registers; products and sums are f32 in a fixed order that does not depend on T or on which
;; tile computes a row (see $f32_4x2): batched decode is bit-identical to batch 1, and prefill to
;; decode token by token. The JS reference (f64 accumulation) differs by rounding only.
;;
;; Blocking: a tile is 4 weight rows x 1 or 2 input rows. The 4 rows of a tile are not adjacent:
;; with Q = floor(out / 4) they are o, o + Q, o + 2Q, o + 3Q. Each of the 4 load streams then walks
;; Q whole rows sequentially, which the hardware prefetcher follows (4 adjacent short rows make 4
;; streams that restart every tile: measured 2-3x slower from DRAM). The out mod 4 rows left over
;; form one more tile of adjacent rows, the missing rows clamped to the last real row (computed,
;; never stored).
;;
;; Widening: bf16 interleaves 16 loaded bytes with zeros (one unpack per 4 columns); f16 moves
;; exponent and mantissa up 13 bits and multiplies by 2^112 (exact for normal and subnormal
;; halves), then puts the sign back; int8 sign-extends to i32, converts (exact) and multiplies by
;; the row's scale.
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

  ;; ---------------------------------------------------------------------------------------------
  ;; Tiles. Common parameters:
  ;;   $w0  first weight row of the tile      $rs  bytes between the tile's weight rows
  ;;   $x0  first input row                   $xs  bytes between input rows (4 in)
  ;;   $n   in (elements per row)
  ;;   $y   output of row 0, token 0          $ls  bytes between the tile's outputs (lanes)
  ;;   $ys  bytes between output rows (4 out) $nr  real weight rows in the tile (1..4)
  ;;   $b   bias of row 0, or 0               $s0  scale of row 0 (int8; scales $ls apart)
  ;; Order of one output (the same in every tile, whatever T):
  ;;   acc (4 lanes) += (w[c..c+4] x[c..c+4] + w[c+4..c+8] x[c+4..c+8])  per full 8 columns
  ;;   acc += w[c..c+4] x[c..c+4]                                         for a left-over 4
  ;;   sum = (acc0 + acc2) + (acc1 + acc3), then += w[c] x[c] per column of the last in mod 4
  ;; ---------------------------------------------------------------------------------------------
`;

/** The tokens loop of one dtype: pairs of tokens, then the odd one. */
function tokens(dt: Dt): string {
  const args = "(local.get $w0) (local.get $rs) (local.get $x) (local.get $xs) (local.get $n) " +
    "(local.get $y) (local.get $ls) (local.get $ys) (local.get $nr) (local.get $b) (local.get $s)";
  return `
  ;; All tokens of one ${dt.name} tile row group: pairs of tokens, then the odd one.
  (func $tokens_${dt.name}
    (param $w0 i32) (param $rs i32) (param $x i32) (param $xs i32) (param $n i32)
    (param $y i32) (param $ls i32) (param $ys i32) (param $nr i32) (param $b i32) (param $s i32)
    (param $T i32)
    (local $t i32)
    (block $done
      (loop $pairs
        (br_if $done (i32.gt_u (i32.add (local.get $t) (i32.const 2)) (local.get $T)))
        (call $${dt.name}_4x2 ${args})
        (local.set $x (i32.add (local.get $x) (i32.shl (local.get $xs) (i32.const 1))))
        (local.set $y (i32.add (local.get $y) (i32.shl (local.get $ys) (i32.const 1))))
        (local.set $t (i32.add (local.get $t) (i32.const 2)))
        (br $pairs)))
    (if (i32.lt_u (local.get $t) (local.get $T))
      (then (call $${dt.name}_4x1 ${args}))))`;
}

/** The driver and export of one dtype. */
function driver(dt: Dt): string {
  const call = (w: string, rs: string, y: string, ls: string, nr: string, b: string, s: string) =>
    `(call $tokens_${dt.name} ${w} ${rs} (local.get $x) (local.get $xs) (local.get $in) ${y} ${ls} (local.get $ys) ${nr} ${b} ${s} (local.get $T))`;
  const off = (p: string, k: string) =>
    `(select (i32.add (local.get $${p}) (i32.shl (local.get $${k}) (i32.const 2))) (i32.const 0) (local.get $${p}))`;
  return `
  ;; y = x . W^T + b with ${dt.name} weights${
    dt.name === "i8" ? " and per-row f32 scales at $s" : " ($s unused)"
  }; output rows $ys bytes apart (0: 4 out).
  ;; A block of rows is a call on slices of w, b, s and y with the full $ys (threads split so; an
  ;; output's sums do not depend on its tile). Q = floor(out / 4) strided tiles (rows o, o + Q,
  ;; o + 2Q, o + 3Q for o < Q), then one tile of the out mod 4 adjacent rows left.
  (func (export "linear_${dt.name}")
    (param $w i32) (param $x i32) (param $b i32) (param $y i32)
    (param $out i32) (param $in i32) (param $T i32) (param $s i32) (param $ys i32)
    (local $rs i32) (local $xs i32) (local $q i32) (local $o i32)
    (local.set $rs (i32.mul (local.get $in) (i32.const ${dt.bytes})))
    (local.set $xs (i32.shl (local.get $in) (i32.const 2)))
    (if (i32.eqz (local.get $ys))
      (then (local.set $ys (i32.shl (local.get $out) (i32.const 2)))))
    (local.set $q (i32.shr_u (local.get $out) (i32.const 2)))
    (block $done
      (loop $groups
        (br_if $done (i32.ge_u (local.get $o) (local.get $q)))
        ${
    call(
      "(i32.add (local.get $w) (i32.mul (local.get $o) (local.get $rs)))",
      "(i32.mul (local.get $rs) (local.get $q))",
      "(i32.add (local.get $y) (i32.shl (local.get $o) (i32.const 2)))",
      "(i32.shl (local.get $q) (i32.const 2))",
      "(i32.const 4)",
      off("b", "o"),
      off("s", "o"),
    )
  }
        (local.set $o (i32.add (local.get $o) (i32.const 1)))
        (br $groups)))
    (local.set $o (i32.shl (local.get $q) (i32.const 2)))
    (if (i32.lt_u (local.get $o) (local.get $out))
      (then
        ${
    call(
      "(i32.add (local.get $w) (i32.mul (local.get $o) (local.get $rs)))",
      "(local.get $rs)",
      "(i32.add (local.get $y) (i32.shl (local.get $o) (i32.const 2)))",
      "(i32.const 4)",
      "(i32.sub (local.get $out) (local.get $o))",
      off("b", "o"),
      off("s", "o"),
    )
  })))`;
}

/** The whole kernel source. */
export function generateWat(): string {
  const parts = [HEADER];
  for (const dt of DTYPES) {
    parts.push(tile(dt, 2), "", tile(dt, 1), tokens(dt), driver(dt), "");
  }
  return parts.join("\n").trimEnd() + ")\n";
}

if (import.meta.main) {
  const root = new URL("../", import.meta.url);
  await Deno.writeTextFile(new URL(WAT_OUT_PATH, root), generateWat());
  console.log(`${WAT_OUT_PATH} written`);
}
