// The plugin side of the launch handshake and the baton.plugin.v1.Plugin service.

import * as fs from "node:fs";
import * as grpc from "@grpc/grpc-js";
import type { PackageDefinition } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";

import { log } from "./log";
import { Code, PluginError, type Plugin } from "./plugin";
import { HealthService, PluginService, type StateChunk } from "./proto";
import { CHUNK_SIZE, ChunkCheck, Reassembly, StateError, chunks, crc32 } from "./state";
import { boundSocket, claimSocket, removeIfOurs } from "./socket";
import { redirectStdout, writeHandshake } from "./stdout";

/** The version of proto/baton/plugin/v1/plugin.proto this SDK speaks. */
export const PROTOCOL_VERSION = 1;
export const TOKEN_METADATA_KEY = "x-baton-token";
export const ENV_SOCKET = "BATON_PLUGIN_SOCKET";
export const ENV_PROTOCOL_VERSION = "BATON_PROTOCOL_VERSION";
export const ENV_TOKEN = "BATON_PLUGIN_TOKEN";

/** Largest message the SDK accepts or sends (Invoke payloads). */
const MAX_MESSAGE_BYTES = 64 << 20;
/** Largest state Restore accepts: a Buffer's limit is far below the other SDKs' 16 GiB. */
const MAX_STATE_BYTES = 4 * 2 ** 30;
/** How long calls in flight may go on once the plugin is told to stop. */
const STOP_GRACE_MS = 5000;
const HEALTH_PREFIX = "/grpc.health.v1.Health/";

/** What the host passed in the environment. */
export interface Launch {
  socket: string;
  hostProtocolVersion: string;
  token: string;
}

/** The process was not started the way a baton host starts plugins. */
export class LaunchError extends Error {
  override name = "LaunchError";
}

/** Reads the launch environment. */
export function launchFromEnv(env: NodeJS.ProcessEnv = process.env): Launch {
  const need = (name: string): string => {
    const value = env[name];
    if (!value) {
      throw new LaunchError(
        `${name} is not set: this program is a baton plugin and must be started by a baton host ` +
          "(or by `baton check -- <this command>`)",
      );
    }
    return value;
  };
  return { socket: need(ENV_SOCKET), hostProtocolVersion: need(ENV_PROTOCOL_VERSION), token: need(ENV_TOKEN) };
}

/** An application service to serve beside the plugin, as given to grpc.Server.addService. */
export interface Service {
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
}

export interface ServeOptions {
  /** Application services (from the application's own .proto), behind the token too. */
  services?: Service[];
  /**
   * The application's .proto as @grpc/proto-loader loaded it: served over gRPC server
   * reflection (v1 and v1alpha, behind the token), so that a host can check this build
   * against the application's descriptors (`api_descriptors`) and `baton ctl call` can
   * call its methods by name.
   */
  reflection?: PackageDefinition;
}

/** A plugin being served by run(). */
export interface Running {
  /** Resolves once the server has stopped (after Shutdown, or stop()). */
  readonly stopped: Promise<void>;
  /** Stops serving, letting calls in flight finish (for a while). */
  stop(reason: string): void;
}

/**
 * Runs `plugin` until the host asks it to stop (or SIGTERM/SIGINT), then exits the
 * process: 0 after a clean stop, 2 when not started by a host, 1 on other failures.
 * From its first line on, console.log and process.stdout go to stderr.
 */
export async function serve(plugin: Plugin, options: ServeOptions = {}): Promise<never> {
  redirectStdout();
  let launch: Launch;
  try {
    launch = launchFromEnv();
  } catch (e) {
    process.stderr.write(`error: ${(e as Error).message}\n`);
    process.exit(2);
  }
  try {
    const running = await run(plugin, launch, options);
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
      process.once(signal, () => running.stop(`${signal} received`));
    }
    await running.stopped;
    process.exit(0);
  } catch (e) {
    log.error((e as Error).message);
    process.exit(1);
  }
}

/**
 * Binds the launch socket, writes the handshake line on stdout and serves `plugin`; the
 * returned handle says when it stops. serve() is run() for a plugin's main module.
 */
export async function run(plugin: Plugin, launch: Launch, options: ServeOptions = {}): Promise<Running> {
  if (launch.hostProtocolVersion !== String(PROTOCOL_VERSION)) {
    log.warn("the host speaks another protocol version; it will refuse this plugin's handshake", {
      host: launch.hostProtocolVersion,
      ours: PROTOCOL_VERSION,
    });
  }
  if (launch.token === "") {
    throw new LaunchError(`the launch token (${ENV_TOKEN}) is empty: refusing to serve calls anyone could make`);
  }
  const server = new grpc.Server({
    interceptors: [tokenCheck(launch.token)],
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
  });
  putUnknownMethodsBehindTheToken(server);
  const names: string[] = [];
  for (const s of options.services ?? []) {
    server.addService(s.definition, s.implementation);
    const name = serviceName(s.definition);
    if (name !== undefined && !names.includes(name)) {
      names.push(name);
    }
  }

  if (options.reflection !== undefined) {
    // Only the application services are listed: baton's own service and health are
    // the host's to call, never a client's, even when the definition holds them.
    new ReflectionService(options.reflection, { services: names }).addToServer(server);
  }

  let stopRequested: (reason: string) => void = () => {};
  const stopAsked = new Promise<string>((resolve) => (stopRequested = resolve));
  server.addService(PluginService.service, pluginService(plugin, names, (reason) => stopRequested(reason)));
  server.addService(HealthService.service, healthService());

  // A socket left by a killed predecessor at the same path would make the bind fail;
  // anything else there is not ours to delete.
  await claimSocket(launch.socket);
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix:${launch.socket}`, grpc.ServerCredentials.createInsecure(), (err) =>
      err ? reject(new Error(`cannot bind the plugin socket ${launch.socket}: ${err.message}`)) : resolve(),
    ),
  );
  const ours = boundSocket(launch.socket);
  fs.chmodSync(launch.socket, 0o600);
  await writeHandshake(`baton|${PROTOCOL_VERSION}|unix|${launch.socket}`);
  log.info("serving", { socket: launch.socket });

  const stopped = stopAsked.then(async (reason) => {
    log.info(`${reason}, shutting down`);
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        log.warn("calls still running after the grace period; stopping anyway");
        server.forceShutdown();
        resolve();
      }, STOP_GRACE_MS);
      server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    removeIfOurs(ours);
    log.info("stopped");
  });
  return { stopped, stop: (reason) => stopRequested(reason) };
}

/** The service's full name, from its methods' paths ("/pkg.Service/Method"). */
function serviceName(definition: grpc.ServiceDefinition): string | undefined {
  const first = Object.values(definition)[0] as grpc.MethodDefinition<unknown, unknown> | undefined;
  return first?.path.split("/")[1];
}

/** Refuses calls without the launch token, on every service but health. */
/**
 * grpc-js answers a call to a method nobody registered before any interceptor runs, which
 * would tell a caller without the token which methods exist. A stand-in handler for every
 * unknown method puts such calls through the token check like any other: with the token
 * they get UNIMPLEMENTED, as before; without it, UNAUTHENTICATED. `_retrieveHandler` is
 * grpc-js's own lookup (1.14); the SDK's tests fail if an update renames it.
 */
function putUnknownMethodsBehindTheToken(server: grpc.Server): void {
  const internals = server as unknown as { _retrieveHandler?: (path: string) => unknown };
  const lookup = internals._retrieveHandler;
  if (typeof lookup !== "function") {
    log.warn("this grpc-js has no handler lookup to wrap: unknown methods answer without the token check");
    return;
  }
  internals._retrieveHandler = (path: string) =>
    lookup.call(server, path) ?? {
      type: "unary",
      path,
      serialize: (value: Buffer) => value,
      deserialize: (bytes: Buffer) => bytes,
      func: (_call: unknown, done: grpc.sendUnaryData<Buffer>) =>
        done({ code: grpc.status.UNIMPLEMENTED, details: `this plugin has no method ${path}` }),
    };
}

function tokenCheck(token: string): grpc.ServerInterceptor {
  const expected = Buffer.from(token);
  return (method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, forward) => {
            if (method.path.startsWith(HEALTH_PREFIX)) {
              forward(metadata);
              return;
            }
            const got = metadata.get(TOKEN_METADATA_KEY);
            if (got.length === 0) {
              call.sendStatus({
                code: grpc.status.UNAUTHENTICATED,
                details: "missing x-baton-token metadata: only the baton host that launched this plugin may call it",
              });
            } else if (got.length !== 1 || !sameToken(Buffer.from(String(got[0])), expected)) {
              call.sendStatus({ code: grpc.status.UNAUTHENTICATED, details: "wrong x-baton-token" });
            } else {
              forward(metadata);
            }
          },
        });
      },
    });
}

/** Compares without an early exit, so the time taken says nothing about the token. */
function sameToken(a: Buffer, b: Buffer): boolean {
  if (a.length !== b.length) {
    return false;
  }
  let diff = 0;
  for (let i = 0; i < a.length; i++) {
    diff |= a[i]! ^ b[i]!;
  }
  return diff === 0;
}

/** A plugin's error as the gRPC status its caller gets. */
function asStatus(what: string, e: unknown): Partial<grpc.StatusObject> {
  if (e instanceof PluginError) {
    return { code: e.code, details: e.message };
  }
  if (e instanceof StateError) {
    return { code: Code.DATA_LOSS, details: e.message };
  }
  log.error(`the plugin's ${what} failed`, { error: String(e) });
  const detail = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return { code: Code.INTERNAL, details: `the plugin's ${what} failed: ${detail}` };
}

function toBuffer(what: string, value: unknown): Buffer {
  if (typeof value === "string") {
    return Buffer.from(value);
  }
  if (value instanceof Uint8Array) {
    return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  }
  throw new PluginError(Code.INTERNAL, `the plugin's ${what} returned ${typeof value}, not bytes`);
}

type Unary<Req, Res> = grpc.handleUnaryCall<Req, Res>;

function pluginService(
  plugin: Plugin,
  services: string[],
  stop: (reason: string) => void,
): grpc.UntypedServiceImplementation {
  const describe: Unary<unknown, unknown> = (_call, callback) => {
    try {
      const d = plugin.describe();
      callback(null, {
        name: d.name,
        plugin_version: d.version,
        protocol_version: PROTOCOL_VERSION,
        state_schema_version: d.stateSchemaVersion ?? 0,
        methods: (d.methods ?? []).map((m) => ({ name: m.name, description: m.description ?? "" })),
        services,
      });
    } catch (e) {
      callback(asStatus("describe", e));
    }
  };

  const invoke: Unary<{ method: string; payload: Buffer }, unknown> = (call, callback) => {
    Promise.resolve()
      .then(() => plugin.invoke(call.request.method, call.request.payload))
      .then(
        (out) => callback(null, { payload: toBuffer("invoke", out) }),
        (e: unknown) => callback(asStatus("invoke", e)),
      );
  };

  const snapshot: grpc.handleServerStreamingCall<unknown, StateChunk> = (call) => {
    sendSnapshot(plugin, call).catch((e: unknown) => {
      call.emit("error", asStatus("snapshot", e));
    });
  };

  const restore: grpc.handleClientStreamingCall<StateChunk, unknown> = (call, callback) => {
    receiveRestore(plugin, call).then(
      (bytes) => callback(null, { bytes_restored: bytes }),
      (e: unknown) => callback(asStatus("restore", e)),
    );
  };

  const shutdown: Unary<unknown, unknown> = (_call, callback) => {
    callback(null, {});
    // The server stops gracefully, so the answer above still goes out.
    stop("shutdown requested by the host");
  };

  return { Describe: describe, Invoke: invoke, Snapshot: snapshot, Restore: restore, Shutdown: shutdown };
}

/** Writes one chunk, waiting when the stream's buffer is full. */
async function send(call: grpc.ServerWritableStream<unknown, StateChunk>, chunk: StateChunk): Promise<void> {
  if (!call.write(chunk)) {
    await new Promise<void>((resolve) => call.once("drain", resolve));
  }
}

async function sendSnapshot(plugin: Plugin, call: grpc.ServerWritableStream<unknown, StateChunk>): Promise<void> {
  const schema = plugin.describe().stateSchemaVersion ?? 0;
  if (plugin.snapshotStream) {
    await sendStream(schema, await plugin.snapshotStream(), call);
  } else {
    const state = plugin.snapshot ? toBuffer("snapshot", await plugin.snapshot()) : Buffer.alloc(0);
    for (const chunk of chunks(schema, state)) {
      await send(call, chunk);
    }
    log.debug("snapshot taken", { bytes: state.length });
  }
  call.end();
}

/** Re-cuts a streamed state into CHUNK_SIZE chunks, holding one back to mark the last. */
async function sendStream(
  schema: number,
  stream: { data: AsyncIterable<Uint8Array>; size?: number },
  call: grpc.ServerWritableStream<unknown, StateChunk>,
): Promise<void> {
  let pending = Buffer.alloc(0);
  let held: Buffer | undefined;
  let seq = 0;
  let sent = 0;
  let crc = 0;
  const flush = async (data: Buffer, last: boolean) => {
    crc = crc32(data, crc);
    sent += data.length;
    if (last && stream.size !== undefined && sent !== stream.size) {
      throw new PluginError(Code.INTERNAL, `the plugin's snapshot stream gave ${sent} bytes but announced ${stream.size}`);
    }
    await send(call, {
      schema_version: schema,
      seq,
      data,
      last,
      checksum: last ? crc : 0,
      total_bytes: seq === 0 ? (stream.size ?? 0) : 0,
    });
    seq++;
  };
  for await (const piece of stream.data) {
    pending = Buffer.concat([pending, toBuffer("snapshot stream", piece)]);
    while (pending.length >= CHUNK_SIZE) {
      if (held !== undefined) {
        await flush(held, false);
      }
      held = pending.subarray(0, CHUNK_SIZE);
      pending = pending.subarray(CHUNK_SIZE);
    }
  }
  if (held !== undefined && pending.length > 0) {
    await flush(held, false);
    held = pending;
  }
  await flush(held ?? pending, true);
}

async function receiveRestore(plugin: Plugin, call: grpc.ServerReadableStream<StateChunk, unknown>): Promise<number> {
  if (plugin.restoreStream) {
    return receiveStream(plugin, call);
  }
  const reassembly = new Reassembly(MAX_STATE_BYTES);
  for await (const chunk of call as AsyncIterable<StateChunk>) {
    reassembly.push(chunk);
  }
  const { schemaVersion, state } = reassembly.finish();
  if (plugin.restore) {
    await plugin.restore(schemaVersion, state);
  } else if (state.length > 0) {
    throw new PluginError(
      Code.FAILED_PRECONDITION,
      `this plugin keeps no state, but was given ${state.length} bytes in schema version ${schemaVersion}`,
    );
  }
  log.info("state restored", { bytes: state.length, schema: schemaVersion });
  return state.length;
}

async function receiveStream(plugin: Plugin, call: grpc.ServerReadableStream<StateChunk, unknown>): Promise<number> {
  const check = new ChunkCheck(MAX_STATE_BYTES);
  const incoming = (call as AsyncIterable<StateChunk>)[Symbol.asyncIterator]();
  const first = await incoming.next();
  if (first.done) {
    check.finish(); // throws: truncated
  }
  const head = first.value as StateChunk;
  check.push(head);
  async function* data(): AsyncGenerator<Buffer> {
    yield head.data;
    for (let next = await incoming.next(); !next.done; next = await incoming.next()) {
      check.push(next.value);
      yield next.value.data;
    }
    check.finish();
  }
  const iterable = data();
  await plugin.restoreStream!(head.schema_version, iterable, head.total_bytes || undefined);
  // A plugin that returned before the end: the rest must still be a good stream.
  for await (const _ of iterable) {
    // drained
  }
  const { length } = check.finish();
  log.info("state restored", { bytes: length, schema: head.schema_version });
  return length;
}

function healthService(): grpc.UntypedServiceImplementation {
  const serving = new Set(["", "baton.plugin.v1.Plugin"]);
  const answer = (service: string) => ({ status: serving.has(service) ? 1 : 3 });
  return {
    Check: ((call, callback) => {
      if (!serving.has(call.request.service)) {
        callback({ code: grpc.status.NOT_FOUND, details: `unknown service ${call.request.service}` });
        return;
      }
      callback(null, answer(call.request.service));
    }) as Unary<{ service: string }, unknown>,
    // The status never changes while the process serves: one answer, then the stream
    // stays open until the caller leaves.
    Watch: ((call) => {
      call.write(answer(call.request.service));
    }) as grpc.handleServerStreamingCall<{ service: string }, unknown>,
  };
}
