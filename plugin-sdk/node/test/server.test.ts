// The SDK serving a plugin process as a host sees it: the handshake, the token on every
// call, the state moving between two processes, and a clean exit.

import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";

import { HealthService, type StateChunk } from "../src/proto";
import { chunks } from "../src/state";
import { memoProcess, streamedProcess } from "./support";

test("a plugin process keeps stdout for the handshake and refuses calls without the token", async (t) => {
  const p = memoProcess();
  t.after(() => p.close());
  assert.equal(await p.handshake(), `baton|1|unix|${p.socket}`);

  const health = new HealthService(`unix:${p.socket}`, grpc.credentials.createInsecure());
  t.after(() => health.close());
  const serving = await new Promise<{ status: number }>((resolve, reject) =>
    (health as unknown as { Check(r: object, cb: (e: Error | null, v: { status: number }) => void): void }).Check(
      { service: "baton.plugin.v1.Plugin" },
      (e, v) => (e ? reject(e) : resolve(v)),
    ),
  );
  assert.equal(serving.status, 1, "SERVING, without a token");

  for (const md of [new grpc.Metadata(), p.metadata("secret-tokem")]) {
    await assert.rejects(p.unary("Describe", {}, md), { code: grpc.status.UNAUTHENTICATED });
  }
  const d = await p.unary<{ name: string; protocol_version: number; state_schema_version: number }>("Describe", {});
  assert.deepEqual([d.name, d.protocol_version, d.state_schema_version], ["memo", 1, 3]);
  await assert.rejects(p.unary("Invoke", { method: "nope" }), {
    code: grpc.status.UNIMPLEMENTED,
    details: 'memo has no method "nope"',
  });
  // A method the plugin does not have is behind the token too: nothing is said of it
  // to a caller without the token.
  const raw = new grpc.Client(`unix:${p.socket}`, grpc.credentials.createInsecure());
  t.after(() => raw.close());
  const unknown = (md: grpc.Metadata) =>
    new Promise<void>((resolve, reject) =>
      raw.makeUnaryRequest(
        "/some.Service/NoSuchMethod",
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.alloc(0),
        md,
        (e) => (e ? reject(e) : resolve()),
      ),
    );
  await assert.rejects(unknown(new grpc.Metadata()), { code: grpc.status.UNAUTHENTICATED });
  await assert.rejects(unknown(p.metadata()), { code: grpc.status.UNIMPLEMENTED });
  await assert.rejects(p.unary("Invoke", { method: "fail" }), {
    code: grpc.status.INTERNAL,
    details: "the plugin's invoke failed: Error: plain error",
  });

  // Every call printed a line with console.log: on stderr, never after the handshake.
  assert.equal(p.stdout, `baton|1|unix|${p.socket}\n`);
  assert.match(p.stderr, /a stray line on stdout/);

  await p.unary("Shutdown", {});
  assert.equal(await p.exited(), 0);
});

test("the state moves between two processes, and a refused restore changes nothing", async (t) => {
  const from = memoProcess();
  const to = memoProcess();
  t.after(() => {
    from.close();
    to.close();
  });
  await Promise.all([from.handshake(), to.handshake()]);
  const state = Buffer.alloc(3 * 65536 + 99, "abc");
  await from.unary("Invoke", { method: "set", payload: state });
  const sent = await from.snapshot();
  assert.equal(sent.length, 4);
  assert.equal(sent[0]!.total_bytes, state.length);

  await to.unary("Invoke", { method: "set", payload: Buffer.from("kept") });
  const corrupt: StateChunk[] = sent.map((c, i) => (i === 3 ? { ...c, checksum: c.checksum ^ 1 } : c));
  await assert.rejects(to.restore(corrupt), { code: grpc.status.DATA_LOSS });
  await assert.rejects(to.restore([sent[1]!, sent[0]!]), { code: grpc.status.DATA_LOSS });
  await assert.rejects(to.restore(sent.slice(0, 2)), { code: grpc.status.DATA_LOSS });
  await assert.rejects(to.restore([...chunks(9, Buffer.from("x"))]), { code: grpc.status.FAILED_PRECONDITION });
  const kept = await to.unary<{ payload: Buffer }>("Invoke", { method: "get" });
  assert.equal(kept.payload.toString(), "kept");

  const reply = await to.restore(sent);
  assert.equal(reply.bytes_restored, state.length);
  const got = await to.unary<{ payload: Buffer }>("Invoke", { method: "get" });
  assert.deepEqual(got.payload, state);

  from.child.kill("SIGTERM");
  assert.equal(await from.exited(), 0);
});

test("a state handed over as a stream arrives whole, and a broken stream commits nothing", async (t) => {
  const from = streamedProcess();
  const to = streamedProcess();
  t.after(() => {
    from.close();
    to.close();
  });
  await Promise.all([from.handshake(), to.handshake()]);
  await from.unary("Invoke", { method: "fill", payload: Buffer.from(String(5 * 65536 + 123)) });
  const digest = (await from.unary<{ payload: Buffer }>("Invoke", { method: "digest" })).payload.toString();
  const sent = await from.snapshot();
  assert.equal(sent.length, 6, "re-cut into 64 KiB chunks");
  assert.equal(sent[0]!.total_bytes, 5 * 65536 + 123, "the length announced");

  await to.unary("Invoke", { method: "fill", payload: Buffer.from("3") });
  const before = (await to.unary<{ payload: Buffer }>("Invoke", { method: "digest" })).payload.toString();
  await assert.rejects(to.restore(sent.slice(0, 3)), { code: grpc.status.DATA_LOSS });
  const corrupt: StateChunk[] = sent.map((c, i) => (i === 5 ? { ...c, checksum: c.checksum ^ 1 } : c));
  await assert.rejects(to.restore(corrupt), { code: grpc.status.DATA_LOSS });
  const after = (await to.unary<{ payload: Buffer }>("Invoke", { method: "digest" })).payload.toString();
  assert.equal(after, before, "nothing committed from a broken stream");

  const reply = await to.restore(sent);
  assert.equal(reply.bytes_restored, 5 * 65536 + 123);
  const moved = (await to.unary<{ payload: Buffer }>("Invoke", { method: "digest" })).payload.toString();
  assert.equal(moved, digest);
});
