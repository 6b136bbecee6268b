// The package installs into a new project with `npm install <path to plugin-sdk/node>`,
// and a plugin there, written as its README shows, serves.

import { test } from "node:test";
import * as assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

import { PluginProcess } from "./support";

const SDK = path.resolve(__dirname, "..", "..");

test("npm install ./plugin-sdk/node into a fresh project gives a working plugin", async (t) => {
  const project = fs.mkdtempSync(path.join(os.tmpdir(), "baton-npm-project-"));
  t.after(() => fs.rmSync(project, { recursive: true, force: true }));
  fs.writeFileSync(path.join(project, "package.json"), JSON.stringify({ name: "hello-plugin", private: true }));
  execFileSync("npm", ["install", "--no-audit", "--no-fund", SDK], { cwd: project, stdio: "pipe" });
  fs.writeFileSync(
    path.join(project, "hello.js"),
    `const { Code, PluginError, serve } = require("baton-plugin");
serve({
  describe: () => ({ name: "hello", version: "0.1.0", methods: [{ name: "hi", description: "says hello" }] }),
  async invoke(method) {
    if (method === "hi") return "hello";
    throw new PluginError(Code.UNIMPLEMENTED, "no method " + method);
  },
});
`,
  );

  const p = new PluginProcess(process.execPath, ["hello.js"], project);
  t.after(() => p.close());
  assert.equal(await p.handshake(), `baton|1|unix|${p.socket}`);
  const reply = await p.unary<{ payload: Buffer }>("Invoke", { method: "hi" });
  assert.equal(reply.payload.toString(), "hello");
  p.child.kill("SIGTERM");
  assert.equal(await p.exited(), 0);
});
