/**
 * Structured logs: one JSON object per line on stderr (`time`, `level`, `msg`, then fields).
 * @module
 */

/** Log levels. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** A structured logger. */
export interface Logger {
  /** Write one record. */
  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const encoder = new TextEncoder();

/** A logger writing JSON lines to stderr, dropping records below `level` (default info). */
export function jsonLogger(level: LogLevel = "info"): Logger {
  return {
    log(l, msg, fields = {}) {
      if (RANK[l] < RANK[level]) return;
      const line = JSON.stringify({ time: new Date().toISOString(), level: l, msg, ...fields });
      try {
        Deno.stderr.writeSync(encoder.encode(line + "\n"));
      } catch {
        // stderr closed: nothing to do
      }
    },
  };
}

/** A logger that keeps records in memory (tests) or drops them (`keep` false). */
export function memoryLogger(
  keep = true,
): Logger & { records: { level: LogLevel; msg: string; [k: string]: unknown }[] } {
  const records: { level: LogLevel; msg: string; [k: string]: unknown }[] = [];
  return {
    records,
    log(level, msg, fields = {}) {
      if (keep) records.push({ level, msg, ...fields });
    },
  };
}
