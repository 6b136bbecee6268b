import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";

import { I64_MAX, decode, encode } from "./state";

const VECTORS = path.join(__dirname, "..", "..", "..", "..", "proto", "testdata", "state-vectors.json");

test("encodes the shared counter state byte for byte", () => {
  const doc = JSON.parse(fs.readFileSync(VECTORS, "utf8")) as { states: { name: string; state: { hex?: string } }[] };
  const entry = doc.states.find((s) => s.name === "counter: apples=3, pears=2");
  assert.ok(entry?.state.hex, "the vectors hold the counter state");
  const want = Buffer.from(entry.state.hex, "hex");
  assert.deepEqual(encode(new Map([["pears", 2n], ["apples", 3n]])), want);
  assert.deepEqual(decode(want), new Map([["apples", 3n], ["pears", 2n]]));
});

test("round-trips and refuses malformed states", () => {
  const counts = new Map([["a", 1n], ["ünïcode", -7n], ["", I64_MAX]]);
  const good = encode(counts);
  assert.deepEqual(decode(good), counts);
  for (let cut = 0; cut < good.length; cut++) {
    assert.throws(() => decode(good.subarray(0, cut)), /truncated/, `cut at ${cut}`);
  }
  assert.throws(() => decode(Buffer.concat([Buffer.from("XXXX"), good.subarray(4)])), /magic/);
  assert.throws(() => decode(Buffer.concat([good, Buffer.from([0])])), /unexpected bytes/);
  const one = encode(new Map([["key", 3n]]));
  const twice = Buffer.concat([one, one.subarray(8)]);
  twice.writeUInt32LE(2, 4);
  assert.throws(() => decode(twice), /twice/);
  const badKey = Buffer.from(one);
  badKey[12] = 0xff;
  assert.throws(() => decode(badKey), /not UTF-8/);
});
