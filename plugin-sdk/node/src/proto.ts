// The wire contract's messages and services, loaded at run time from the .proto files
// the build copies into dist/proto (the same files every baton SDK compiles).

import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const PROTO_ROOT = path.join(__dirname, "..", "proto");

const definition = protoLoader.loadSync(
  ["baton/plugin/v1/plugin.proto", "baton/host/v1/host.proto", "grpc/health/v1/health.proto"],
  {
    includeDirs: [PROTO_ROOT],
    // Field names as in the .proto, bytes as Buffer, 64-bit integers as numbers (a
    // state's length and a chunk's seq stay far below 2^53), every field present.
    keepCase: true,
    longs: Number,
    enums: Number,
    bytes: Buffer,
    defaults: true,
  },
);

const loaded = grpc.loadPackageDefinition(definition);

function service(name: string): grpc.ServiceClientConstructor {
  let at: unknown = loaded;
  for (const part of name.split(".")) {
    at = (at as Record<string, unknown>)[part];
  }
  if (typeof at !== "function") {
    throw new Error(`${name} is not in the loaded protos (${PROTO_ROOT})`);
  }
  return at as grpc.ServiceClientConstructor;
}

export const PluginService = service("baton.plugin.v1.Plugin");
export const HostService = service("baton.host.v1.Host");
export const HealthService = service("grpc.health.v1.Health");

/** baton.plugin.v1.StateChunk, as loaded. */
export interface StateChunk {
  schema_version: number;
  seq: number;
  data: Buffer;
  last: boolean;
  checksum: number;
  total_bytes: number;
}
