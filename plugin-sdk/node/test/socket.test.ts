// The plugin's socket path: only a stale socket is replaced; a file or a live socket
// there is left as it is, with an error naming the path.

import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";

import { SocketPathError, claimSocket } from "../src/socket";

function listen(at: string): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(at, () => resolve(server));
  });
}

test("only a stale socket is claimed; a file or a live socket is left and named", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "baton-ts-sock-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));

  await claimSocket(path.join(dir, "free.sock"));

  const file = path.join(dir, "precious.sock");
  fs.writeFileSync(file, "x");
  await assert.rejects(claimSocket(file), (e: unknown) => {
    assert.ok(e instanceof SocketPathError);
    assert.match(e.message, new RegExp(`${file} is a regular file, not a socket`));
    return true;
  });
  assert.equal(fs.readFileSync(file, "utf8"), "x");

  const live = path.join(dir, "live.sock");
  const server = await listen(live);
  t.after(() => server.close());
  await assert.rejects(claimSocket(live), /another process is listening/);
  assert.ok(fs.existsSync(live));

  // A stale socket: its file outlives the listener (Node.js would remove it on close).
  const stale = path.join(dir, "stale.sock");
  const staleServer = await listen(stale);
  fs.linkSync(stale, path.join(dir, "stale-copy.sock"));
  await new Promise<void>((resolve) => staleServer.close(() => resolve()));
  fs.renameSync(path.join(dir, "stale-copy.sock"), stale);
  await claimSocket(stale);
  assert.ok(!fs.existsSync(stale));
});
