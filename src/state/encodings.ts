/**
 * The encodings of a state's layers on the wire (format version 2, `docs/state_format.md`): a
 * value type (`f32` exact, `bf16` or `q8` lossy) and an optional deflate of its byte planes. One
 * table says which exist and which are exact; everything else (the encoder's option, the decoder's
 * answer, the server's choice) names them by these strings.
 * @module
 */

import { TnlError } from "../errors.ts";

/** How each value of a layer is stored: exact f32, bf16 (rounded), or int8 with per-row scales. */
export type LayerDtype = "f32" | "bf16" | "q8";

/** An encoding of the layers: a value type, and "+deflate" when its byte planes are deflated. */
export type StateEncoding = "f32" | "f32+deflate" | "bf16" | "bf16+deflate" | "q8" | "q8+deflate";

/** Every encoding, the exact ones first. */
export const STATE_ENCODINGS: readonly StateEncoding[] = [
  "f32",
  "f32+deflate",
  "bf16",
  "bf16+deflate",
  "q8",
  "q8+deflate",
];

/** The encoding `encodeSession` writes unless told otherwise: exact f32, not compressed. */
export const DEFAULT_STATE_ENCODING: StateEncoding = "f32";

/** Bytes per stored value of each value type (q8's scales are extra: one f32 per row). */
export const DTYPE_BYTES: Readonly<Record<LayerDtype, number>> = { f32: 4, bf16: 2, q8: 1 };

/** An encoding split into its value type and whether it is deflated. */
export interface EncodingParts {
  /** How each value is stored. */
  dtype: LayerDtype;
  /** Whether the stored bytes are split into byte planes and deflated. */
  deflate: boolean;
}

/** Whether `name` is one of `STATE_ENCODINGS`. */
export function isStateEncoding(name: unknown): name is StateEncoding {
  return typeof name === "string" && (STATE_ENCODINGS as readonly string[]).includes(name);
}

/**
 * The parts of an encoding name; an unknown name is a `TnlError` "invalid_input" (400) that lists
 * the valid ones, so a server can pass a request's field here unchecked.
 * @example
 * ```ts
 * import { encodingParts } from "./encodings.ts";
 * encodingParts("q8+deflate"); // { dtype: "q8", deflate: true }
 * ```
 */
export function encodingParts(name: string): EncodingParts {
  if (!isStateEncoding(name)) {
    throw new TnlError(
      "invalid_input",
      `state encoding ${JSON.stringify(name)}: expected one of ${STATE_ENCODINGS.join(", ")}`,
    );
  }
  const [dtype, compression] = name.split("+");
  return { dtype: dtype as LayerDtype, deflate: compression === "deflate" };
}

/** The encoding name of its parts. */
export function encodingName(parts: EncodingParts): StateEncoding {
  return `${parts.dtype}${parts.deflate ? "+deflate" : ""}` as StateEncoding;
}

/** Whether a state in this encoding resumes bit-exactly (only the f32 ones do). */
export function isExactEncoding(name: StateEncoding): boolean {
  return encodingParts(name).dtype === "f32";
}

/**
 * The `lossy` field a state written in `encoding` carries (format version 3): the lossy encoding it
 * already descends from (`inherited`), else `encoding` itself when that is lossy, else null (the
 * values are those of an exact run). An `inherited` value that is not a lossy encoding name is a
 * `TnlError` "internal" (a caller's bug).
 */
export function lossyOrigin(
  encoding: StateEncoding,
  inherited: string | null | undefined,
): StateEncoding | null {
  if (inherited !== null && inherited !== undefined) {
    if (!isStateEncoding(inherited) || isExactEncoding(inherited)) {
      throw new TnlError(
        "internal",
        `snapshot.lossy: ${JSON.stringify(inherited)} is not a lossy state encoding`,
      );
    }
    return inherited;
  }
  return isExactEncoding(encoding) ? null : encoding;
}
