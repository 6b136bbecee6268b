// Splitting a state into StateChunks and putting it back together, with the checks the
// contract asks for: one schema version, chunks in order, a final chunk, the announced
// length, a size limit and a CRC-32. The rules are every SDK's: the shared vectors in
// proto/testdata/state-vectors.json are the test.

import type { StateChunk } from "./proto";

/** The data carried by each chunk the SDK sends (the Rust SDK's size). */
export const CHUNK_SIZE = 64 << 10;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) {
      c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    }
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (IEEE, as zlib's crc32) of `data`, continuing from `crc`. */
export function crc32(data: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < data.length; i++) {
    c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  }
  return ~c >>> 0;
}

/**
 * Splits `state` into chunks of at most `size` bytes: the first carries the total length,
 * the last the CRC-32 of all the data. An empty state is one empty last chunk.
 */
export function* chunks(schemaVersion: number, state: Buffer, size = CHUNK_SIZE): Generator<StateChunk> {
  const count = Math.max(1, Math.ceil(state.length / size));
  let crc = 0;
  for (let seq = 0; seq < count; seq++) {
    const data = state.subarray(seq * size, (seq + 1) * size);
    crc = crc32(data, crc);
    const last = seq + 1 === count;
    yield {
      schema_version: schemaVersion,
      seq,
      data,
      last,
      checksum: last ? crc : 0,
      total_bytes: seq === 0 ? state.length : 0,
    };
  }
}

/** Why a stream of chunks does not make a state. */
export type StateErrorKind =
  | "out_of_order"
  | "schema_changed"
  | "after_last"
  | "truncated"
  | "checksum"
  | "length"
  | "too_large";

/** A stream of chunks that does not make a state; `kind` says why. */
export class StateError extends Error {
  constructor(
    readonly kind: StateErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "StateError";
  }
}

/** Checks a stream of chunks as they pass, keeping none of their data. */
export class ChunkCheck {
  private schema = 0;
  private nextSeq = 0;
  private bytes = 0;
  private crc = 0;
  private done = false;
  /** The length the first chunk announced, or undefined. */
  announced: number | undefined;

  constructor(private readonly limit: number) {}

  /** Checks the next chunk; throws a StateError if it does not fit. */
  push(chunk: StateChunk): void {
    if (this.done) {
      throw new StateError("after_last", `state chunk ${chunk.seq} arrived after the last chunk`);
    }
    if (chunk.seq !== this.nextSeq) {
      throw new StateError("out_of_order", `state chunk out of order: expected seq ${this.nextSeq}, got ${chunk.seq}`);
    }
    if (this.nextSeq === 0) {
      this.schema = chunk.schema_version;
    } else if (chunk.schema_version !== this.schema) {
      throw new StateError(
        "schema_changed",
        `state chunk ${chunk.seq} has schema version ${chunk.schema_version}, but the snapshot started with ${this.schema}`,
      );
    }
    if (chunk.seq === 0 && chunk.total_bytes !== 0) {
      if (chunk.total_bytes > this.limit) {
        throw new StateError(
          "too_large",
          `a state of at least ${chunk.total_bytes} bytes exceeds the limit of ${this.limit} bytes`,
        );
      }
      this.announced = chunk.total_bytes;
    }
    this.bytes += chunk.data.length;
    if (this.bytes > this.limit) {
      throw new StateError("too_large", `a state of at least ${this.bytes} bytes exceeds the limit of ${this.limit} bytes`);
    }
    if (this.announced !== undefined && (this.bytes > this.announced || (chunk.last && this.bytes !== this.announced))) {
      throw new StateError(
        "length",
        `state length mismatch: the first chunk announced ${this.announced} bytes, the chunks carry ${this.bytes}`,
      );
    }
    this.crc = crc32(chunk.data, this.crc);
    this.nextSeq++;
    if (chunk.last) {
      this.done = true;
      if (this.crc !== chunk.checksum) {
        throw new StateError(
          "checksum",
          `state checksum mismatch: the last chunk says ${hex(chunk.checksum)}, the data hashes to ${hex(this.crc)}`,
        );
      }
    }
  }

  /** The schema version and the length, once the last chunk has passed. */
  finish(): { schemaVersion: number; length: number } {
    if (!this.done) {
      throw new StateError(
        "truncated",
        `state stream ended after ${this.nextSeq} chunks without a last chunk (truncated)`,
      );
    }
    return { schemaVersion: this.schema, length: this.bytes };
  }
}

function hex(n: number): string {
  return n.toString(16).padStart(8, "0");
}

/** Collects chunks into the whole state, checking each as it comes. */
export class Reassembly {
  private readonly check: ChunkCheck;
  private readonly parts: Buffer[] = [];

  constructor(limit: number) {
    this.check = new ChunkCheck(limit);
  }

  push(chunk: StateChunk): void {
    this.check.push(chunk);
    this.parts.push(chunk.data);
  }

  /** The schema version and the whole state, once the last chunk has arrived. */
  finish(): { schemaVersion: number; state: Buffer } {
    const { schemaVersion, length } = this.check.finish();
    return { schemaVersion, state: Buffer.concat(this.parts, length) };
  }
}
