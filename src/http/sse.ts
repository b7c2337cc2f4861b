/**
 * Server-sent events as OpenAI streams them: `data: {json}\n\n` per chunk and a final
 * `data: [DONE]\n\n`. `SseWriter` produces them (pushes never block; a client that goes away
 * cancels the stream and fires `onCancel`), `SseParser` reads them back (tests, clients).
 *
 * Why not `hono/streaming`'s `streamSSE` (a behavioural reason; the two were not timed against each
 * other): it answers an exception thrown in its callback with an `event: error` message, where an
 * OpenAI stream must end with a `data: {"error": …}` event and `data: [DONE]`; its `writeSSE`
 * awaits each write through a `TransformStream` holding one chunk, so a response's pump would stop
 * reading engine events while its client is slow, where `send` enqueues and returns; and it sets
 * the hop-by-hop headers `Transfer-Encoding` and `Connection`, which HTTP/2 forbids.
 * @module
 */

const encoder = new TextEncoder();

/** The last event of an OpenAI stream. */
export const SSE_DONE = "[DONE]";

/** One `data:` event carrying `payload` (JSON-encoded unless a string). */
export function sseEvent(payload: unknown): string {
  const data = typeof payload === "string" ? payload : JSON.stringify(payload);
  // A payload with newlines is split over several data lines (JSON.stringify never writes any).
  return data.split("\n").map((l) => `data: ${l}\n`).join("") + "\n";
}

/** An SSE response body written by pushes; see the module doc. */
export class SseWriter {
  /** The response body. */
  readonly stream: ReadableStream<Uint8Array>;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #closed = false;
  #cancelled = false;
  #onCancel: (() => void)[] = [];

  /** A writer; `onCancel` runs when the client goes away before `close()`. */
  constructor(onCancel?: () => void) {
    if (onCancel) this.#onCancel.push(onCancel);
    this.stream = new ReadableStream<Uint8Array>({
      start: (c) => {
        this.#controller = c;
      },
      cancel: () => {
        this.#cancelled = true;
        this.#closed = true;
        for (const f of this.#onCancel) f();
      },
    });
  }

  /** Whether the client went away. */
  get cancelled(): boolean {
    return this.#cancelled;
  }

  /** Run `f` when the client goes away. */
  onCancel(f: () => void): void {
    if (this.#cancelled) f();
    else this.#onCancel.push(f);
  }

  /** Send one `data:` event (ignored once closed). */
  send(payload: unknown): void {
    if (this.#closed) return;
    try {
      this.#controller.enqueue(encoder.encode(sseEvent(payload)));
    } catch {
      this.#closed = true;
    }
  }

  /** Send a comment line (a keep-alive). */
  comment(text: string): void {
    if (this.#closed) return;
    try {
      this.#controller.enqueue(encoder.encode(`: ${text}\n\n`));
    } catch {
      this.#closed = true;
    }
  }

  /** End the stream. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#controller.close();
    } catch {
      // already closed or errored
    }
  }

  /** The streaming `Response`. */
  response(headers: HeadersInit = {}): Response {
    const h = new Headers(headers);
    h.set("content-type", "text/event-stream; charset=utf-8");
    h.set("cache-control", "no-cache");
    h.set("x-accel-buffering", "no");
    return new Response(this.stream, { status: 200, headers: h });
  }
}

/** Incremental SSE parser: feed text, get the `data` of each complete event. */
export class SseParser {
  #buf = "";
  #data: string[] = [];

  /** Add text; returns the data of the events it completes. */
  push(text: string): string[] {
    this.#buf += text;
    const out: string[] = [];
    let nl: number;
    while ((nl = this.#buf.indexOf("\n")) >= 0) {
      let line = this.#buf.slice(0, nl);
      this.#buf = this.#buf.slice(nl + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (this.#data.length) out.push(this.#data.join("\n"));
        this.#data = [];
      } else if (line.startsWith("data:")) {
        const v = line.slice(5);
        this.#data.push(v.startsWith(" ") ? v.slice(1) : v);
      }
      // comments (":") and other fields are ignored
    }
    return out;
  }
}

/** The `data` of every complete event in an SSE text. */
export function parseSse(text: string): string[] {
  return new SseParser().push(text);
}

/** Read an SSE response body to its end; returns the data of every event. */
export async function readSse(body: ReadableStream<Uint8Array>): Promise<string[]> {
  const parser = new SseParser();
  const decoder = new TextDecoder();
  const out: string[] = [];
  for await (const chunk of body) out.push(...parser.push(decoder.decode(chunk, { stream: true })));
  out.push(...parser.push(decoder.decode()));
  return out;
}
