/**
 * Selection over arrays of weights, the building blocks of the top-k and top-p thresholds: a
 * bounded min-heap of the largest values, the k-th largest, and the value where a running sum in
 * decreasing order reaches a mass. Each reorders its scratch array; none depends on the pivots.
 * @module
 */

/** Top-k sizes up to this use a heap; larger ones a selection on a copy. */
export const HEAP_MAX = 1024;
/** Top-p first looks for its threshold among this many most probable tokens. */
export const TOP_P_PROBE = 64;

/** Heap of the `k` largest values of `w[0..n)`; returns the count (min(k, n)); `h[0]` = smallest. */
export function topHeap(w: Float64Array, n: number, k: number, h: Float64Array): number {
  let size = 0;
  let i = 0;
  for (; i < n && size < k; i++) {
    // sift up
    const v = w[i];
    let j = size++;
    while (j > 0) {
      const parent = (j - 1) >> 1;
      const pv = h[parent];
      if (pv <= v) break;
      h[j] = pv;
      j = parent;
    }
    h[j] = v;
  }
  let root = h[0];
  for (; i < n; i++) {
    const v = w[i];
    if (v > root) {
      siftDown(h, size, v);
      root = h[0];
    }
  }
  return size;
}

/** Replace the root of min-heap `h[0..size)` with `v` and restore the heap. */
function siftDown(h: Float64Array, size: number, v: number): void {
  let j = 0;
  for (;;) {
    let c = 2 * j + 1;
    if (c >= size) break;
    let cv = h[c];
    const r = c + 1;
    if (r < size && h[r] < cv) {
      c = r;
      cv = h[r];
    }
    if (cv >= v) break;
    h[j] = cv;
    j = c;
  }
  h[j] = v;
}

/** Sort min-heap `h[0..size)` into decreasing order, in place. */
export function heapSortDescending(h: Float64Array, size: number): void {
  for (let end = size - 1; end > 0; end--) {
    const v = h[end];
    h[end] = h[0];
    siftDown(h, end, v);
  }
}

/** Cheap pivot source for the selections (the result never depends on it). */
let pivotState = 0x9e3779b9;
function pivotIndex(lo: number, hi: number): number {
  pivotState ^= pivotState << 13;
  pivotState ^= pivotState >>> 17;
  pivotState ^= pivotState << 5;
  return lo + ((pivotState >>> 0) % (hi - lo));
}

/** Sort `a[lo..hi)` into decreasing order. */
function sortDescending(a: Float64Array, lo: number, hi: number): void {
  a.subarray(lo, hi).sort().reverse();
}

/** The k-th largest (1-based, with multiplicity) of `a[0..n)`; reorders `a`. */
export function kthLargest(a: Float64Array, n: number, k: number): number {
  let lo = 0;
  let hi = n;
  let rounds = 0;
  for (;;) {
    if (hi - lo <= 16 || ++rounds > 64) {
      sortDescending(a, lo, hi);
      return a[lo + k - 1];
    }
    const p = a[pivotIndex(lo, hi)];
    // [lo, g) > p, [g, i) == p, [e, hi) < p
    let g = lo, i = lo, e = hi;
    while (i < e) {
      const v = a[i];
      if (v > p) {
        a[i] = a[g];
        a[g] = v;
        g++;
        i++;
      } else if (v < p) {
        e--;
        a[i] = a[e];
        a[e] = v;
      } else {
        i++;
      }
    }
    if (k <= g - lo) hi = g;
    else if (k <= e - lo) return p;
    else {
      k -= e - lo;
      lo = e;
    }
  }
}

/**
 * The top-p threshold of positive values `a[0..n)`: the value at which the running sum of the
 * values in decreasing order first reaches `need`; 0 when it never does. Reorders `a`.
 */
export function massThreshold(a: Float64Array, n: number, need: number): number {
  let lo = 0;
  let hi = n;
  let rounds = 0;
  while (lo < hi) {
    if (hi - lo <= 16 || ++rounds > 64) {
      sortDescending(a, lo, hi);
      let cum = 0;
      for (let j = lo; j < hi; j++) {
        cum += a[j];
        if (cum >= need) return a[j];
      }
      return 0;
    }
    const p = a[pivotIndex(lo, hi)];
    let g = lo, i = lo, e = hi;
    let sumG = 0, sumE = 0;
    while (i < e) {
      const v = a[i];
      if (v > p) {
        a[i] = a[g];
        a[g] = v;
        g++;
        i++;
        sumG += v;
      } else if (v < p) {
        e--;
        a[i] = a[e];
        a[e] = v;
      } else {
        i++;
        sumE += v;
      }
    }
    if (sumG >= need) hi = g;
    else if (sumG + sumE >= need) return p;
    else {
      need -= sumG + sumE;
      lo = e;
    }
  }
  return 0;
}
