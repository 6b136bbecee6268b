// Copies the repository's .proto files the SDK loads at run time into dist/proto, so
// the built package carries them wherever it is installed.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const repoProto = path.join(__dirname, "..", "..", "..", "proto");
const out = path.join(__dirname, "..", "dist", "proto");
for (const file of [
  "baton/plugin/v1/plugin.proto",
  "baton/host/v1/host.proto",
  "grpc/health/v1/health.proto",
]) {
  fs.mkdirSync(path.dirname(path.join(out, file)), { recursive: true });
  fs.copyFileSync(path.join(repoProto, file), path.join(out, file));
}
