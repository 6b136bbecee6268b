// The counters' state format, schema version 1 (../counter/STATE.md): byte for byte the
// Rust, Python and Go counters' format, so a snapshot of any restores into any other.

export const STATE_SCHEMA = 1;
const MAGIC = Buffer.from("BTNC");
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
export { I64_MAX };

/** Encodes counts, keys sorted by their UTF-8 bytes so equal counts give equal bytes. */
export function encode(counts: ReadonlyMap<string, bigint>): Buffer {
  const entries = [...counts].map(([k, v]) => [Buffer.from(k), v] as const).sort(([a], [b]) => Buffer.compare(a, b));
  const size = 8 + entries.reduce((n, [k]) => n + 12 + k.length, 0);
  const out = Buffer.alloc(size);
  MAGIC.copy(out, 0);
  out.writeUInt32LE(entries.length, 4);
  let pos = 8;
  for (const [key, value] of entries) {
    out.writeUInt32LE(key.length, pos);
    key.copy(out, pos + 4);
    out.writeBigInt64LE(value, pos + 4 + key.length);
    pos += 12 + key.length;
  }
  return out;
}

/** Decodes a format-1 state, refusing anything malformed. */
export function decode(data: Buffer): Map<string, bigint> {
  let pos = 0;
  const take = (n: number): Buffer => {
    if (n > data.length - pos) {
      throw new Error(`counter state is truncated at byte ${pos}`);
    }
    pos += n;
    return data.subarray(pos - n, pos);
  };
  if (!take(4).equals(MAGIC)) {
    throw new Error('counter state does not start with the magic bytes "BTNC"');
  }
  const count = take(4).readUInt32LE(0);
  const counts = new Map<string, bigint>();
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  for (let i = 0; i < count; i++) {
    const keyLength = take(4).readUInt32LE(0);
    const keyAt = pos;
    let key: string;
    try {
      key = utf8.decode(take(keyLength));
    } catch (e) {
      if (e instanceof TypeError) {
        throw new Error(`counter state key at byte ${keyAt} is not UTF-8`);
      }
      throw e;
    }
    const value = take(8).readBigInt64LE(0);
    if (counts.has(key)) {
      throw new Error(`counter state has the key ${JSON.stringify(key)} twice`);
    }
    counts.set(key, value);
  }
  if (pos !== data.length) {
    throw new Error(`counter state has ${data.length - pos} unexpected bytes after the last entry`);
  }
  return counts;
}

export function inI64(v: bigint): boolean {
  return v >= I64_MIN && v <= I64_MAX;
}
