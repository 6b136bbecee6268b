// The shared wire vectors (proto/testdata/state-vectors.json): the Rust, Go and Python
// SDKs read the same file, so what one sends every other accepts.

import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";

import { CHUNK_SIZE, Reassembly, StateError, chunks, crc32 } from "../src/state";
import { REPO } from "./support";

interface Vectors {
  chunk_size: number;
  states: {
    name: string;
    schema_version: number;
    state: { hex?: string; fill?: number };
    length: number;
    crc32: number;
    chunks: { seq: number; offset: number; length: number; last: boolean; checksum: number; total_bytes: number }[];
  }[];
  streams: {
    name: string;
    limit?: number;
    chunks: { schema_version: number; seq: number; data_hex: string; last: boolean; checksum: number; total_bytes: number }[];
    expect: { error?: string; schema_version?: number; state_hex?: string };
  }[];
}

const vectors = JSON.parse(
  fs.readFileSync(path.join(REPO, "proto", "testdata", "state-vectors.json"), "utf8"),
) as Vectors;

test("states split into the published chunks and back", () => {
  assert.equal(vectors.chunk_size, CHUNK_SIZE);
  for (const entry of vectors.states) {
    const state =
      entry.state.hex !== undefined
        ? Buffer.from(entry.state.hex, "hex")
        : Buffer.from(Array.from({ length: entry.state.fill ?? 0 }, (_, i) => i % 251));
    assert.equal(state.length, entry.length, entry.name);
    assert.equal(crc32(state), entry.crc32, entry.name);
    const made = [...chunks(entry.schema_version, state)];
    assert.equal(made.length, entry.chunks.length, entry.name);
    const reassembly = new Reassembly(2 ** 40);
    made.forEach((got, i) => {
      const want = entry.chunks[i]!;
      assert.equal(got.schema_version, entry.schema_version, entry.name);
      assert.equal(got.seq, want.seq, entry.name);
      assert.deepEqual(got.data, state.subarray(want.offset, want.offset + want.length), entry.name);
      assert.equal(got.last, want.last, entry.name);
      assert.equal(got.checksum, want.checksum, entry.name);
      assert.equal(got.total_bytes, want.total_bytes, entry.name);
      reassembly.push(got);
    });
    assert.deepEqual(reassembly.finish(), { schemaVersion: entry.schema_version, state }, entry.name);
  }
});

test("streams are accepted or refused as published", () => {
  for (const stream of vectors.streams) {
    const reassembly = new Reassembly(stream.limit ?? 2 ** 40);
    const run = () => {
      for (const c of stream.chunks) {
        reassembly.push({ ...c, data: Buffer.from(c.data_hex, "hex") });
      }
      return reassembly.finish();
    };
    if (stream.expect.error !== undefined) {
      assert.throws(run, (e: unknown) => e instanceof StateError && e.kind === stream.expect.error, stream.name);
    } else {
      assert.deepEqual(
        run(),
        { schemaVersion: stream.expect.schema_version, state: Buffer.from(stream.expect.state_hex ?? "", "hex") },
        stream.name,
      );
    }
  }
});
