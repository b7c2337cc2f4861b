;; TNL Edge CPU kernels in WebAssembly SIMD (128-bit, no relaxed SIMD, no threads).
;;
;; Compiled by tools/build_wasm.ts (npm wabt, SIMD feature) into kernels_wasm.ts; regenerate with
;;   deno run -A tools/build_wasm.ts
;;
;; linear: Y[t, o] = sum_i X[t, i] * W[o, i] + b[o]   (y = x . W^T + b, PyTorch layout)
;;   w  [out, in]  row-major weights: f32, or bf16 as raw u16 (the top half of an f32)
;;   x  [T, in]    f32 inputs
;;   b  [out]      f32 bias, or the null pointer 0 for none (the arena never hands out address 0)
;;   y  [T, out]   f32 outputs (must not overlap x, w or b)
;; All pointers are byte addresses into the imported memory; no alignment is required.
;;
;; Numerics: products and sums are f32 (4 lanes of partial sums per row, reduced at the end), so
;; the result differs from the JS reference (which accumulates in f64) by rounding only.
;;
;; Blocking: a tile is 4 weight rows x 1 or 2 input rows. The 4 rows of a tile are not adjacent:
;; with Q = floor(out / 4) they are o, o + Q, o + 2Q, o + 3Q. Each of the 4 load streams then walks
;; Q whole rows sequentially, which the hardware prefetcher follows; 4 adjacent rows of 1 KB
;; (in = 256) make 4 short streams that restart every tile, and measured 2-3x slower when the
;; weights come from DRAM. The out mod 4 rows left over form one more tile of adjacent rows, with
;; the missing rows clamped to the last real row (computed, never stored).
;;
;; bf16: a bf16 value is the high half of an f32, so widening is exact: put the u16 in the top 16
;; bits of a 32-bit lane. Full steps of 8 columns load 16 bytes per row and interleave them with a
;; zero vector (one unpack instruction each for columns 0-3 and 4-7); a left-over group of 4
;; columns uses v128.load16x4_u (load + i32x4.extend_low_i16x8_u) then i32x4.shl 16. The unpack
;; form halves the loads (each one bounds-checked in Deno, which runs without V8's trap handler)
;; and measured 1.2-1.4x faster than extend + shift on every step.
(module
  (import "env" "memory" (memory 1))

  ;; [sum(a), sum(b), sum(c), sum(d)] of four f32x4 accumulators.
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
  ;;   $b   bias of row 0, or 0
  ;; Rows at or past $nr repeat the last real row: they are read and computed but never stored.
  ;; ---------------------------------------------------------------------------------------------

  ;; f32 weights, 4 rows x 2 tokens: 8 accumulators, each step loads 4 + 2 vectors for 8 products.
  (func $f32_4x2
    (param $w0 i32) (param $rs i32) (param $x0 i32) (param $xs i32) (param $n i32)
    (param $y i32) (param $ls i32) (param $ys i32) (param $nr i32) (param $b i32)
    (local $w1 i32) (local $w2 i32) (local $w3 i32) (local $x1 i32) (local $end4 i32) (local $end i32)
    (local $v0 v128) (local $v1 v128) (local $v2 v128) (local $v3 v128) (local $p v128) (local $q v128)
    (local $a00 v128) (local $a10 v128) (local $a20 v128) (local $a30 v128)
    (local $a01 v128) (local $a11 v128) (local $a21 v128) (local $a31 v128)
    (local.set $w1 (select (i32.add (local.get $w0) (local.get $rs)) (local.get $w0)
      (i32.gt_u (local.get $nr) (i32.const 1))))
    (local.set $w2 (select (i32.add (local.get $w1) (local.get $rs)) (local.get $w1)
      (i32.gt_u (local.get $nr) (i32.const 2))))
    (local.set $w3 (select (i32.add (local.get $w2) (local.get $rs)) (local.get $w2)
      (i32.gt_u (local.get $nr) (i32.const 3))))
    (local.set $x1 (i32.add (local.get $x0) (local.get $xs)))
    (local.set $end (i32.add (local.get $x0) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $end4
      (i32.add (local.get $x0) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (if (i32.lt_u (local.get $x0) (local.get $end4))
      (then
        (loop $vec
          (local.set $v0 (v128.load (local.get $w0)))
          (local.set $v1 (v128.load (local.get $w1)))
          (local.set $v2 (v128.load (local.get $w2)))
          (local.set $v3 (v128.load (local.get $w3)))
          (local.set $p (v128.load (local.get $x0)))
          (local.set $q (v128.load (local.get $x1)))
          (local.set $a00 (f32x4.add (local.get $a00) (f32x4.mul (local.get $v0) (local.get $p))))
          (local.set $a10 (f32x4.add (local.get $a10) (f32x4.mul (local.get $v1) (local.get $p))))
          (local.set $a20 (f32x4.add (local.get $a20) (f32x4.mul (local.get $v2) (local.get $p))))
          (local.set $a30 (f32x4.add (local.get $a30) (f32x4.mul (local.get $v3) (local.get $p))))
          (local.set $a01 (f32x4.add (local.get $a01) (f32x4.mul (local.get $v0) (local.get $q))))
          (local.set $a11 (f32x4.add (local.get $a11) (f32x4.mul (local.get $v1) (local.get $q))))
          (local.set $a21 (f32x4.add (local.get $a21) (f32x4.mul (local.get $v2) (local.get $q))))
          (local.set $a31 (f32x4.add (local.get $a31) (f32x4.mul (local.get $v3) (local.get $q))))
          (local.set $w0 (i32.add (local.get $w0) (i32.const 16)))
          (local.set $w1 (i32.add (local.get $w1) (i32.const 16)))
          (local.set $w2 (i32.add (local.get $w2) (i32.const 16)))
          (local.set $w3 (i32.add (local.get $w3) (i32.const 16)))
          (local.set $x0 (i32.add (local.get $x0) (i32.const 16)))
          (local.set $x1 (i32.add (local.get $x1) (i32.const 16)))
          (br_if $vec (i32.lt_u (local.get $x0) (local.get $end4))))))
    ;; From here a00 holds the 4 row sums of token 0 and a01 those of token 1.
    (local.set $a00 (call $reduce4 (local.get $a00) (local.get $a10) (local.get $a20) (local.get $a30)))
    (local.set $a01 (call $reduce4 (local.get $a01) (local.get $a11) (local.get $a21) (local.get $a31)))
    ;; in mod 4 tail: one column of the 4 rows at a time.
    (if (i32.lt_u (local.get $x0) (local.get $end))
      (then
        (loop $tail
          (local.set $v0
            (f32x4.replace_lane 3
              (f32x4.replace_lane 2
                (f32x4.replace_lane 1
                  (f32x4.splat (f32.load (local.get $w0)))
                  (f32.load (local.get $w1)))
                (f32.load (local.get $w2)))
              (f32.load (local.get $w3))))
          (local.set $a00 (f32x4.add (local.get $a00)
            (f32x4.mul (local.get $v0) (f32x4.splat (f32.load (local.get $x0))))))
          (local.set $a01 (f32x4.add (local.get $a01)
            (f32x4.mul (local.get $v0) (f32x4.splat (f32.load (local.get $x1))))))
          (local.set $w0 (i32.add (local.get $w0) (i32.const 4)))
          (local.set $w1 (i32.add (local.get $w1) (i32.const 4)))
          (local.set $w2 (i32.add (local.get $w2) (i32.const 4)))
          (local.set $w3 (i32.add (local.get $w3) (i32.const 4)))
          (local.set $x0 (i32.add (local.get $x0) (i32.const 4)))
          (local.set $x1 (i32.add (local.get $x1) (i32.const 4)))
          (br_if $tail (i32.lt_u (local.get $x0) (local.get $end))))))
    (call $store4 (local.get $y) (local.get $a00) (local.get $nr) (local.get $ls) (local.get $b))
    (call $store4 (i32.add (local.get $y) (local.get $ys)) (local.get $a01)
      (local.get $nr) (local.get $ls) (local.get $b)))

  ;; f32 weights, 4 rows x 1 token (decode): each step loads 4 + 1 vectors for 4 products.
  (func $f32_4x1
    (param $w0 i32) (param $rs i32) (param $x0 i32) (param $xs i32) (param $n i32)
    (param $y i32) (param $ls i32) (param $ys i32) (param $nr i32) (param $b i32)
    (local $w1 i32) (local $w2 i32) (local $w3 i32) (local $end4 i32) (local $end i32)
    (local $v0 v128) (local $p v128)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local.set $w1 (select (i32.add (local.get $w0) (local.get $rs)) (local.get $w0)
      (i32.gt_u (local.get $nr) (i32.const 1))))
    (local.set $w2 (select (i32.add (local.get $w1) (local.get $rs)) (local.get $w1)
      (i32.gt_u (local.get $nr) (i32.const 2))))
    (local.set $w3 (select (i32.add (local.get $w2) (local.get $rs)) (local.get $w2)
      (i32.gt_u (local.get $nr) (i32.const 3))))
    (local.set $end (i32.add (local.get $x0) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $end4
      (i32.add (local.get $x0) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (if (i32.lt_u (local.get $x0) (local.get $end4))
      (then
        (loop $vec
          (local.set $p (v128.load (local.get $x0)))
          (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (v128.load (local.get $w0)) (local.get $p))))
          (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (v128.load (local.get $w1)) (local.get $p))))
          (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (v128.load (local.get $w2)) (local.get $p))))
          (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (v128.load (local.get $w3)) (local.get $p))))
          (local.set $w0 (i32.add (local.get $w0) (i32.const 16)))
          (local.set $w1 (i32.add (local.get $w1) (i32.const 16)))
          (local.set $w2 (i32.add (local.get $w2) (i32.const 16)))
          (local.set $w3 (i32.add (local.get $w3) (i32.const 16)))
          (local.set $x0 (i32.add (local.get $x0) (i32.const 16)))
          (br_if $vec (i32.lt_u (local.get $x0) (local.get $end4))))))
    (local.set $a0 (call $reduce4 (local.get $a0) (local.get $a1) (local.get $a2) (local.get $a3)))
    (if (i32.lt_u (local.get $x0) (local.get $end))
      (then
        (loop $tail
          (local.set $v0
            (f32x4.replace_lane 3
              (f32x4.replace_lane 2
                (f32x4.replace_lane 1
                  (f32x4.splat (f32.load (local.get $w0)))
                  (f32.load (local.get $w1)))
                (f32.load (local.get $w2)))
              (f32.load (local.get $w3))))
          (local.set $a0 (f32x4.add (local.get $a0)
            (f32x4.mul (local.get $v0) (f32x4.splat (f32.load (local.get $x0))))))
          (local.set $w0 (i32.add (local.get $w0) (i32.const 4)))
          (local.set $w1 (i32.add (local.get $w1) (i32.const 4)))
          (local.set $w2 (i32.add (local.get $w2) (i32.const 4)))
          (local.set $w3 (i32.add (local.get $w3) (i32.const 4)))
          (local.set $x0 (i32.add (local.get $x0) (i32.const 4)))
          (br_if $tail (i32.lt_u (local.get $x0) (local.get $end))))))
    (call $store4 (local.get $y) (local.get $a0) (local.get $nr) (local.get $ls) (local.get $b)))

  ;; bf16 weights (u16, 2 bytes per element), 4 rows x 2 tokens. Steps of 8 columns: one 16-byte
  ;; load per row holds 8 bf16; interleaving them with zeros (i8x16.shuffle with a zero vector, a
  ;; single unpack instruction) puts each in the high half of a 32-bit lane, which is its exact f32
  ;; value: columns 0-3 in $lo, 4-7 in $hi. A left-over group of 4 columns is loaded and widened
  ;; with v128.load16x4_u (load + i32x4.extend_low_i16x8_u) and i32x4.shl 16.
  (func $bf16_4x2
    (param $w0 i32) (param $rs i32) (param $x0 i32) (param $xs i32) (param $n i32)
    (param $y i32) (param $ls i32) (param $ys i32) (param $nr i32) (param $b i32)
    (local $w1 i32) (local $w2 i32) (local $w3 i32) (local $x1 i32)
    (local $end8 i32) (local $end4 i32) (local $end i32)
    (local $v0 v128) (local $v1 v128) (local $v2 v128) (local $v3 v128) (local $lo v128) (local $hi v128)
    (local $p v128) (local $q v128) (local $p1 v128) (local $q1 v128) (local $z v128)
    (local $a00 v128) (local $a10 v128) (local $a20 v128) (local $a30 v128)
    (local $a01 v128) (local $a11 v128) (local $a21 v128) (local $a31 v128)
    (local.set $w1 (select (i32.add (local.get $w0) (local.get $rs)) (local.get $w0)
      (i32.gt_u (local.get $nr) (i32.const 1))))
    (local.set $w2 (select (i32.add (local.get $w1) (local.get $rs)) (local.get $w1)
      (i32.gt_u (local.get $nr) (i32.const 2))))
    (local.set $w3 (select (i32.add (local.get $w2) (local.get $rs)) (local.get $w2)
      (i32.gt_u (local.get $nr) (i32.const 3))))
    (local.set $x1 (i32.add (local.get $x0) (local.get $xs)))
    (local.set $end (i32.add (local.get $x0) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $end8
      (i32.add (local.get $x0) (i32.shl (i32.and (local.get $n) (i32.const -8)) (i32.const 2))))
    (local.set $end4
      (i32.add (local.get $x0) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (if (i32.lt_u (local.get $x0) (local.get $end8))
      (then
        (loop $vec8
          ;; token 0 columns 0-3 and 4-7 in p, q; token 1 in p1, q1
          (local.set $p (v128.load (local.get $x0)))
          (local.set $q (v128.load offset=16 (local.get $x0)))
          (local.set $p1 (v128.load (local.get $x1)))
          (local.set $q1 (v128.load offset=16 (local.get $x1)))
          (local.set $v0 (v128.load (local.get $w0)))
          (local.set $lo (i8x16.shuffle 0 1 16 17 2 3 18 19 4 5 20 21 6 7 22 23 (local.get $z) (local.get $v0)))
          (local.set $hi (i8x16.shuffle 8 9 24 25 10 11 26 27 12 13 28 29 14 15 30 31 (local.get $z) (local.get $v0)))
          (local.set $a00 (f32x4.add (local.get $a00)
            (f32x4.add (f32x4.mul (local.get $lo) (local.get $p)) (f32x4.mul (local.get $hi) (local.get $q)))))
          (local.set $a01 (f32x4.add (local.get $a01)
            (f32x4.add (f32x4.mul (local.get $lo) (local.get $p1)) (f32x4.mul (local.get $hi) (local.get $q1)))))
          (local.set $v0 (v128.load (local.get $w1)))
          (local.set $lo (i8x16.shuffle 0 1 16 17 2 3 18 19 4 5 20 21 6 7 22 23 (local.get $z) (local.get $v0)))
          (local.set $hi (i8x16.shuffle 8 9 24 25 10 11 26 27 12 13 28 29 14 15 30 31 (local.get $z) (local.get $v0)))
          (local.set $a10 (f32x4.add (local.get $a10)
            (f32x4.add (f32x4.mul (local.get $lo) (local.get $p)) (f32x4.mul (local.get $hi) (local.get $q)))))
          (local.set $a11 (f32x4.add (local.get $a11)
            (f32x4.add (f32x4.mul (local.get $lo) (local.get $p1)) (f32x4.mul (local.get $hi) (local.get $q1)))))
          (local.set $v0 (v128.load (local.get $w2)))
          (local.set $lo (i8x16.shuffle 0 1 16 17 2 3 18 19 4 5 20 21 6 7 22 23 (local.get $z) (local.get $v0)))
          (local.set $hi (i8x16.shuffle 8 9 24 25 10 11 26 27 12 13 28 29 14 15 30 31 (local.get $z) (local.get $v0)))
          (local.set $a20 (f32x4.add (local.get $a20)
            (f32x4.add (f32x4.mul (local.get $lo) (local.get $p)) (f32x4.mul (local.get $hi) (local.get $q)))))
          (local.set $a21 (f32x4.add (local.get $a21)
            (f32x4.add (f32x4.mul (local.get $lo) (local.get $p1)) (f32x4.mul (local.get $hi) (local.get $q1)))))
          (local.set $v0 (v128.load (local.get $w3)))
          (local.set $lo (i8x16.shuffle 0 1 16 17 2 3 18 19 4 5 20 21 6 7 22 23 (local.get $z) (local.get $v0)))
          (local.set $hi (i8x16.shuffle 8 9 24 25 10 11 26 27 12 13 28 29 14 15 30 31 (local.get $z) (local.get $v0)))
          (local.set $a30 (f32x4.add (local.get $a30)
            (f32x4.add (f32x4.mul (local.get $lo) (local.get $p)) (f32x4.mul (local.get $hi) (local.get $q)))))
          (local.set $a31 (f32x4.add (local.get $a31)
            (f32x4.add (f32x4.mul (local.get $lo) (local.get $p1)) (f32x4.mul (local.get $hi) (local.get $q1)))))
          (local.set $w0 (i32.add (local.get $w0) (i32.const 16)))
          (local.set $w1 (i32.add (local.get $w1) (i32.const 16)))
          (local.set $w2 (i32.add (local.get $w2) (i32.const 16)))
          (local.set $w3 (i32.add (local.get $w3) (i32.const 16)))
          (local.set $x0 (i32.add (local.get $x0) (i32.const 32)))
          (local.set $x1 (i32.add (local.get $x1) (i32.const 32)))
          (br_if $vec8 (i32.lt_u (local.get $x0) (local.get $end8))))))
    (if (i32.lt_u (local.get $x0) (local.get $end4))
      (then
        (local.set $v0 (i32x4.shl (v128.load16x4_u (local.get $w0)) (i32.const 16)))
        (local.set $v1 (i32x4.shl (v128.load16x4_u (local.get $w1)) (i32.const 16)))
        (local.set $v2 (i32x4.shl (v128.load16x4_u (local.get $w2)) (i32.const 16)))
        (local.set $v3 (i32x4.shl (v128.load16x4_u (local.get $w3)) (i32.const 16)))
        (local.set $p (v128.load (local.get $x0)))
        (local.set $q (v128.load (local.get $x1)))
        (local.set $a00 (f32x4.add (local.get $a00) (f32x4.mul (local.get $v0) (local.get $p))))
        (local.set $a10 (f32x4.add (local.get $a10) (f32x4.mul (local.get $v1) (local.get $p))))
        (local.set $a20 (f32x4.add (local.get $a20) (f32x4.mul (local.get $v2) (local.get $p))))
        (local.set $a30 (f32x4.add (local.get $a30) (f32x4.mul (local.get $v3) (local.get $p))))
        (local.set $a01 (f32x4.add (local.get $a01) (f32x4.mul (local.get $v0) (local.get $q))))
        (local.set $a11 (f32x4.add (local.get $a11) (f32x4.mul (local.get $v1) (local.get $q))))
        (local.set $a21 (f32x4.add (local.get $a21) (f32x4.mul (local.get $v2) (local.get $q))))
        (local.set $a31 (f32x4.add (local.get $a31) (f32x4.mul (local.get $v3) (local.get $q))))
        (local.set $w0 (i32.add (local.get $w0) (i32.const 8)))
        (local.set $w1 (i32.add (local.get $w1) (i32.const 8)))
        (local.set $w2 (i32.add (local.get $w2) (i32.const 8)))
        (local.set $w3 (i32.add (local.get $w3) (i32.const 8)))
        (local.set $x0 (i32.add (local.get $x0) (i32.const 16)))
        (local.set $x1 (i32.add (local.get $x1) (i32.const 16)))))
    (local.set $a00 (call $reduce4 (local.get $a00) (local.get $a10) (local.get $a20) (local.get $a30)))
    (local.set $a01 (call $reduce4 (local.get $a01) (local.get $a11) (local.get $a21) (local.get $a31)))
    (if (i32.lt_u (local.get $x0) (local.get $end))
      (then
        (loop $tail
          ;; 4 single bf16 values (one per row) gathered into the high halves of 4 lanes
          (local.set $v0
            (i32x4.shl
              (i32x4.replace_lane 3
                (i32x4.replace_lane 2
                  (i32x4.replace_lane 1
                    (i32x4.splat (i32.load16_u (local.get $w0)))
                    (i32.load16_u (local.get $w1)))
                  (i32.load16_u (local.get $w2)))
                (i32.load16_u (local.get $w3)))
              (i32.const 16)))
          (local.set $a00 (f32x4.add (local.get $a00)
            (f32x4.mul (local.get $v0) (f32x4.splat (f32.load (local.get $x0))))))
          (local.set $a01 (f32x4.add (local.get $a01)
            (f32x4.mul (local.get $v0) (f32x4.splat (f32.load (local.get $x1))))))
          (local.set $w0 (i32.add (local.get $w0) (i32.const 2)))
          (local.set $w1 (i32.add (local.get $w1) (i32.const 2)))
          (local.set $w2 (i32.add (local.get $w2) (i32.const 2)))
          (local.set $w3 (i32.add (local.get $w3) (i32.const 2)))
          (local.set $x0 (i32.add (local.get $x0) (i32.const 4)))
          (local.set $x1 (i32.add (local.get $x1) (i32.const 4)))
          (br_if $tail (i32.lt_u (local.get $x0) (local.get $end))))))
    (call $store4 (local.get $y) (local.get $a00) (local.get $nr) (local.get $ls) (local.get $b))
    (call $store4 (i32.add (local.get $y) (local.get $ys)) (local.get $a01)
      (local.get $nr) (local.get $ls) (local.get $b)))

  ;; bf16 weights, 4 rows x 1 token. Steps of 8 columns: one 16-byte load per row gives 8 bf16,
  ;; interleaved with zeros (i8x16.shuffle, a single unpack instruction) into two f32x4.
  (func $bf16_4x1
    (param $w0 i32) (param $rs i32) (param $x0 i32) (param $xs i32) (param $n i32)
    (param $y i32) (param $ls i32) (param $ys i32) (param $nr i32) (param $b i32)
    (local $w1 i32) (local $w2 i32) (local $w3 i32) (local $end8 i32) (local $end4 i32) (local $end i32)
    (local $v0 v128) (local $p v128) (local $q v128) (local $z v128)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $c0 v128) (local $c1 v128) (local $c2 v128) (local $c3 v128)
    (local.set $w1 (select (i32.add (local.get $w0) (local.get $rs)) (local.get $w0)
      (i32.gt_u (local.get $nr) (i32.const 1))))
    (local.set $w2 (select (i32.add (local.get $w1) (local.get $rs)) (local.get $w1)
      (i32.gt_u (local.get $nr) (i32.const 2))))
    (local.set $w3 (select (i32.add (local.get $w2) (local.get $rs)) (local.get $w2)
      (i32.gt_u (local.get $nr) (i32.const 3))))
    (local.set $end (i32.add (local.get $x0) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $end8
      (i32.add (local.get $x0) (i32.shl (i32.and (local.get $n) (i32.const -8)) (i32.const 2))))
    (local.set $end4
      (i32.add (local.get $x0) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (if (i32.lt_u (local.get $x0) (local.get $end8))
      (then
        (loop $vec8
          (local.set $p (v128.load (local.get $x0)))
          (local.set $q (v128.load offset=16 (local.get $x0)))
          (local.set $v0 (v128.load (local.get $w0)))
          (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $p)
            (i8x16.shuffle 0 1 16 17 2 3 18 19 4 5 20 21 6 7 22 23 (local.get $z) (local.get $v0)))))
          (local.set $c0 (f32x4.add (local.get $c0) (f32x4.mul (local.get $q)
            (i8x16.shuffle 8 9 24 25 10 11 26 27 12 13 28 29 14 15 30 31 (local.get $z) (local.get $v0)))))
          (local.set $v0 (v128.load (local.get $w1)))
          (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $p)
            (i8x16.shuffle 0 1 16 17 2 3 18 19 4 5 20 21 6 7 22 23 (local.get $z) (local.get $v0)))))
          (local.set $c1 (f32x4.add (local.get $c1) (f32x4.mul (local.get $q)
            (i8x16.shuffle 8 9 24 25 10 11 26 27 12 13 28 29 14 15 30 31 (local.get $z) (local.get $v0)))))
          (local.set $v0 (v128.load (local.get $w2)))
          (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $p)
            (i8x16.shuffle 0 1 16 17 2 3 18 19 4 5 20 21 6 7 22 23 (local.get $z) (local.get $v0)))))
          (local.set $c2 (f32x4.add (local.get $c2) (f32x4.mul (local.get $q)
            (i8x16.shuffle 8 9 24 25 10 11 26 27 12 13 28 29 14 15 30 31 (local.get $z) (local.get $v0)))))
          (local.set $v0 (v128.load (local.get $w3)))
          (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $p)
            (i8x16.shuffle 0 1 16 17 2 3 18 19 4 5 20 21 6 7 22 23 (local.get $z) (local.get $v0)))))
          (local.set $c3 (f32x4.add (local.get $c3) (f32x4.mul (local.get $q)
            (i8x16.shuffle 8 9 24 25 10 11 26 27 12 13 28 29 14 15 30 31 (local.get $z) (local.get $v0)))))
          (local.set $w0 (i32.add (local.get $w0) (i32.const 16)))
          (local.set $w1 (i32.add (local.get $w1) (i32.const 16)))
          (local.set $w2 (i32.add (local.get $w2) (i32.const 16)))
          (local.set $w3 (i32.add (local.get $w3) (i32.const 16)))
          (local.set $x0 (i32.add (local.get $x0) (i32.const 32)))
          (br_if $vec8 (i32.lt_u (local.get $x0) (local.get $end8))))
        (local.set $a0 (f32x4.add (local.get $a0) (local.get $c0)))
        (local.set $a1 (f32x4.add (local.get $a1) (local.get $c1)))
        (local.set $a2 (f32x4.add (local.get $a2) (local.get $c2)))
        (local.set $a3 (f32x4.add (local.get $a3) (local.get $c3)))))
    (if (i32.lt_u (local.get $x0) (local.get $end4))
      (then
        (local.set $p (v128.load (local.get $x0)))
        (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul
          (i32x4.shl (v128.load16x4_u (local.get $w0)) (i32.const 16)) (local.get $p))))
        (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul
          (i32x4.shl (v128.load16x4_u (local.get $w1)) (i32.const 16)) (local.get $p))))
        (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul
          (i32x4.shl (v128.load16x4_u (local.get $w2)) (i32.const 16)) (local.get $p))))
        (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul
          (i32x4.shl (v128.load16x4_u (local.get $w3)) (i32.const 16)) (local.get $p))))
        (local.set $w0 (i32.add (local.get $w0) (i32.const 8)))
        (local.set $w1 (i32.add (local.get $w1) (i32.const 8)))
        (local.set $w2 (i32.add (local.get $w2) (i32.const 8)))
        (local.set $w3 (i32.add (local.get $w3) (i32.const 8)))
        (local.set $x0 (i32.add (local.get $x0) (i32.const 16)))))
    (local.set $a0 (call $reduce4 (local.get $a0) (local.get $a1) (local.get $a2) (local.get $a3)))
    (if (i32.lt_u (local.get $x0) (local.get $end))
      (then
        (loop $tail
          (local.set $v0
            (i32x4.shl
              (i32x4.replace_lane 3
                (i32x4.replace_lane 2
                  (i32x4.replace_lane 1
                    (i32x4.splat (i32.load16_u (local.get $w0)))
                    (i32.load16_u (local.get $w1)))
                  (i32.load16_u (local.get $w2)))
                (i32.load16_u (local.get $w3)))
              (i32.const 16)))
          (local.set $a0 (f32x4.add (local.get $a0)
            (f32x4.mul (local.get $v0) (f32x4.splat (f32.load (local.get $x0))))))
          (local.set $w0 (i32.add (local.get $w0) (i32.const 2)))
          (local.set $w1 (i32.add (local.get $w1) (i32.const 2)))
          (local.set $w2 (i32.add (local.get $w2) (i32.const 2)))
          (local.set $w3 (i32.add (local.get $w3) (i32.const 2)))
          (local.set $x0 (i32.add (local.get $x0) (i32.const 4)))
          (br_if $tail (i32.lt_u (local.get $x0) (local.get $end))))))
    (call $store4 (local.get $y) (local.get $a0) (local.get $nr) (local.get $ls) (local.get $b)))

  ;; All tokens of one tile row group: pairs of tokens, then the odd one.
  (func $tokens
    (param $bf16 i32) (param $w0 i32) (param $rs i32) (param $x i32) (param $xs i32) (param $n i32)
    (param $y i32) (param $ls i32) (param $ys i32) (param $nr i32) (param $b i32) (param $T i32)
    (local $t i32)
    (block $done
      (loop $pairs
        (br_if $done (i32.gt_u (i32.add (local.get $t) (i32.const 2)) (local.get $T)))
        (if (local.get $bf16)
          (then
            (call $bf16_4x2 (local.get $w0) (local.get $rs) (local.get $x) (local.get $xs)
              (local.get $n) (local.get $y) (local.get $ls) (local.get $ys) (local.get $nr)
              (local.get $b)))
          (else
            (call $f32_4x2 (local.get $w0) (local.get $rs) (local.get $x) (local.get $xs)
              (local.get $n) (local.get $y) (local.get $ls) (local.get $ys) (local.get $nr)
              (local.get $b))))
        (local.set $x (i32.add (local.get $x) (i32.shl (local.get $xs) (i32.const 1))))
        (local.set $y (i32.add (local.get $y) (i32.shl (local.get $ys) (i32.const 1))))
        (local.set $t (i32.add (local.get $t) (i32.const 2)))
        (br $pairs)))
    (if (i32.lt_u (local.get $t) (local.get $T))
      (then
        (if (local.get $bf16)
          (then
            (call $bf16_4x1 (local.get $w0) (local.get $rs) (local.get $x) (local.get $xs)
              (local.get $n) (local.get $y) (local.get $ls) (local.get $ys) (local.get $nr)
              (local.get $b)))
          (else
            (call $f32_4x1 (local.get $w0) (local.get $rs) (local.get $x) (local.get $xs)
              (local.get $n) (local.get $y) (local.get $ls) (local.get $ys) (local.get $nr)
              (local.get $b)))))))

  ;; The driver: Q = floor(out / 4) strided tiles (rows o, o + Q, o + 2Q, o + 3Q for o < Q), then
  ;; one tile of the out mod 4 adjacent rows left.
  (func $linear
    (param $bf16 i32) (param $w i32) (param $x i32) (param $b i32) (param $y i32)
    (param $out i32) (param $in i32) (param $T i32)
    (local $es i32) (local $rs i32) (local $xs i32) (local $ys i32) (local $q i32) (local $o i32)
    (local.set $es (select (i32.const 2) (i32.const 4) (local.get $bf16)))
    (local.set $rs (i32.mul (local.get $in) (local.get $es)))
    (local.set $xs (i32.shl (local.get $in) (i32.const 2)))
    (local.set $ys (i32.shl (local.get $out) (i32.const 2)))
    (local.set $q (i32.shr_u (local.get $out) (i32.const 2)))
    (block $done
      (loop $groups
        (br_if $done (i32.ge_u (local.get $o) (local.get $q)))
        (call $tokens (local.get $bf16)
          (i32.add (local.get $w) (i32.mul (local.get $o) (local.get $rs)))
          (i32.mul (local.get $rs) (local.get $q))
          (local.get $x) (local.get $xs) (local.get $in)
          (i32.add (local.get $y) (i32.shl (local.get $o) (i32.const 2)))
          (i32.shl (local.get $q) (i32.const 2))
          (local.get $ys) (i32.const 4)
          (select (i32.add (local.get $b) (i32.shl (local.get $o) (i32.const 2))) (i32.const 0)
            (local.get $b))
          (local.get $T))
        (local.set $o (i32.add (local.get $o) (i32.const 1)))
        (br $groups)))
    (local.set $o (i32.shl (local.get $q) (i32.const 2)))
    (if (i32.lt_u (local.get $o) (local.get $out))
      (then
        (call $tokens (local.get $bf16)
          (i32.add (local.get $w) (i32.mul (local.get $o) (local.get $rs)))
          (local.get $rs)
          (local.get $x) (local.get $xs) (local.get $in)
          (i32.add (local.get $y) (i32.shl (local.get $o) (i32.const 2)))
          (i32.const 4)
          (local.get $ys) (i32.sub (local.get $out) (local.get $o))
          (select (i32.add (local.get $b) (i32.shl (local.get $o) (i32.const 2))) (i32.const 0)
            (local.get $b))
          (local.get $T)))))

  ;; y = x . W^T + b with f32 weights.
  (func (export "linear_f32")
    (param $w i32) (param $x i32) (param $b i32) (param $y i32)
    (param $out i32) (param $in i32) (param $T i32)
    (call $linear (i32.const 0) (local.get $w) (local.get $x) (local.get $b) (local.get $y)
      (local.get $out) (local.get $in) (local.get $T)))

  ;; y = x . W^T + b with bf16 weights (u16 storage).
  (func (export "linear_bf16")
    (param $w i32) (param $x i32) (param $b i32) (param $y i32)
    (param $out i32) (param $in i32) (param $T i32)
    (call $linear (i32.const 1) (local.get $w) (local.get $x) (local.get $b) (local.get $y)
      (local.get $out) (local.get $in) (local.get $T)))
)
