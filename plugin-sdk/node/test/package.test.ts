// The path the README gives, from the SDK to a running plugin: `npm pack` makes the
// tarball, a fresh project installs it (a copy, not a link into the checkout, and with
// no install script of the SDK's to approve), and the README's tsconfig.json and
// src/hello.ts, built with its scripts, make a plugin that serves.

import { test } from "node:test";
import * as assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

import { PluginProcess } from "./support";

const SDK = path.resolve(__dirname, "..", "..");
const README = fs.readFileSync(path.join(SDK, "README.md"), "utf8");
const NPM_TIMEOUT_MS = 180_000;

/** The README's code block whose first line is `firstLine`, without that line. */
function readmeBlock(firstLine: string): string {
  const blocks = [...README.matchAll(/```[a-z]*\n([\s\S]*?)```/g)].map((m) => m[1]);
  const block = blocks.find((b) => b.startsWith(`${firstLine}\n`));
  assert.ok(block !== undefined, `README.md has no code block starting with ${firstLine}`);
  return block.slice(firstLine.length + 1);
}

/** Runs npm in `cwd`, failing with its output; returns stdout and stderr together. */
function npm(cwd: string, args: string[]): string {
  const done = spawnSync("npm", args, { cwd, encoding: "utf8", timeout: NPM_TIMEOUT_MS });
  const output = `${done.stdout}\n${done.stderr}`;
  assert.equal(done.status, 0, `npm ${args.join(" ")} failed (${done.error ?? done.signal ?? ""}):\n${output}`);
  return output;
}

test("the README's path: npm pack, install the tarball, tsc, and the plugin serves", async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "baton-npm-project-"));
  t.after(() => fs.rmSync(work, { recursive: true, force: true }));

  // `npm test` has just built dist/; packing runs no script here so that other test
  // files, running meanwhile, do not see dist/ rewritten under them.
  const packed = JSON.parse(
    execFileSync("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", work], {
      cwd: SDK,
      encoding: "utf8",
      timeout: NPM_TIMEOUT_MS,
    }),
  ) as { filename: string }[];
  const tarball = path.join(work, packed[0].filename);

  const project = path.join(work, "hello");
  fs.mkdirSync(project);
  npm(project, ["init", "-y"]);
  const installed = npm(project, ["install", "--no-audit", "--no-fund", tarball]);
  const ours = installed.split("\n").filter((line) => /install-scripts/.test(line) && /baton-plugin/.test(line));
  assert.deepEqual(ours, [], "npm warns of an install script of the SDK's own package");
  const sdk = path.join(project, "node_modules", "baton-plugin");
  assert.ok(!fs.lstatSync(sdk).isSymbolicLink(), "the SDK is installed as a copy, not a link");
  assert.ok(fs.existsSync(path.join(sdk, "dist", "proto", "baton", "plugin", "v1", "plugin.proto")));

  // The README's TypeScript, at the versions this SDK is built and tested with.
  const dev = (JSON.parse(fs.readFileSync(path.join(SDK, "package.json"), "utf8")) as {
    devDependencies: Record<string, string>;
  }).devDependencies;
  npm(project, [
    "install", "--no-audit", "--no-fund", "--save-dev",
    `typescript@${dev["typescript"]}`, `@types/node@${dev["@types/node"]}`,
  ]);
  const pkgSet = README.split("\n").find((line) => line.startsWith("npm pkg set "));
  assert.ok(pkgSet !== undefined, "README.md sets the build scripts with npm pkg set");
  execFileSync("sh", ["-c", pkgSet], { cwd: project, stdio: "pipe", timeout: NPM_TIMEOUT_MS });
  fs.writeFileSync(path.join(project, "tsconfig.json"), readmeBlock("// tsconfig.json"));
  fs.mkdirSync(path.join(project, "src"));
  fs.writeFileSync(path.join(project, "src", "hello.ts"), readmeBlock("// src/hello.ts"));
  npm(project, ["run", "build"]);

  // The tarball goes: the project has its own copy of the SDK.
  fs.rmSync(tarball);
  const p = new PluginProcess(process.execPath, [path.join("dist", "hello.js")], project);
  t.after(() => p.close());
  assert.equal(await p.handshake(), `baton|1|unix|${p.socket}`);
  const reply = await p.unary<{ payload: Buffer }>("Invoke", { method: "hi" });
  assert.equal(reply.payload.toString(), "hello");
  p.child.kill("SIGTERM");
  assert.equal(await p.exited(), 0);
});
