// Write a baton plugin in TypeScript or JavaScript: implement Plugin and call serve().
//
// The SDK does the launch handshake, serves gRPC health, refuses calls without the launch
// token (application services passed to serve included), chunks and verifies state for
// Snapshot/Restore, and exits cleanly on Shutdown, SIGTERM or SIGINT. stdout carries the
// handshake line only: serve() sends console.log and process.stdout to stderr, which the
// host captures. HostClient calls back into the host.

export { Code, PluginError, type Description, type Plugin, type StateStream } from "./plugin";
export {
  LaunchError,
  PROTOCOL_VERSION,
  TOKEN_METADATA_KEY,
  launchFromEnv,
  run,
  serve,
  type Launch,
  type Running,
  type ServeOptions,
  type Service,
} from "./server";
export { HostClient, HostClientError, type LogLevel } from "./host";
export { CHUNK_SIZE, ChunkCheck, Reassembly, StateError, chunks, crc32, type StateErrorKind } from "./state";
export type { StateChunk } from "./proto";
export { log } from "./log";
export { redirectStdout } from "./stdout";
