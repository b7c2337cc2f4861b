/**
 * One builder per kernel: each checks its shapes and returns its dispatches (`Op`) from buffers
 * and uniform fields named as the kernel's WGSL names them (checked against the expanded source).
 * The decode plan (`../model.ts`) and the prefill plan (`../prefill.ts`) are both written with
 * them, so no kernel is wired in two places.
 *
 * @example
 * ```ts ignore
 * const t = { m: model, res };
 * const op = await normOp(t, { label: "final_norm", dim: D, input, output, ln: null, rows: "n" });
 * encodeOps(pass, [op], tokens);
 * ```
 * @module
 */

export {
  bindKernel,
  encodeOps,
  type Kernel,
  loadKernel,
  makeOp,
  type Op,
  type ParamValues,
  paramWords,
  rowGroups,
  shaderBindings,
  shaderParams,
} from "./kernel.ts";
export {
  activationDefine,
  type OpModel,
  type OpTarget,
  type Rows,
  weightBindings,
} from "./context.ts";
export { normOp, type NormSpec } from "./norm.ts";
export { embedOps, type EmbedSpec } from "./embed.ts";
export { matvecOps, type MatvecSpec } from "./matvec.ts";
export {
  attentionDecodeLayout,
  attentionDecodeOp,
  type AttentionDecodeSpec,
} from "./attention_decode.ts";
export { sampleOps, type SampleSpec } from "./sample.ts";
export { rowsRolloverOp, type RowsRolloverSpec } from "./rows_rollover.ts";
export { gemmOps, type GemmSpec, gemmSplitParts } from "./gemm.ts";
export { lightningBlock, lightningOps, type LightningSpec } from "./lightning.ts";
