// The client side of the host services (proto/baton/host/v1/host.proto): a plugin calling
// back into the host that launched it, to log through it, keep keys and values that
// outlive this process, and emit events.

import * as grpc from "@grpc/grpc-js";

import { HostService } from "./proto";
import { ENV_TOKEN, TOKEN_METADATA_KEY } from "./server";

export const ENV_HOST_SOCKET = "BATON_HOST_SOCKET";
/** How long one call to the host may take. */
const CALL_TIMEOUT_MS = 10_000;
const MAX_MESSAGE_BYTES = 64 << 20;

const LEVELS = { trace: 1, debug: 2, info: 3, warn: 4, error: 5 } as const;
export type LogLevel = keyof typeof LEVELS;

/** The host services cannot be reached from this process. */
export class HostClientError extends Error {
  override name = "HostClientError";
}

type Callback<T> = (err: grpc.ServiceError | null, reply?: T) => void;
type UnaryMethod = (request: object, options: grpc.CallOptions, callback: Callback<unknown>) => void;

/**
 * A plugin's client of its host's services. Errors from the host come as grpc
 * ServiceErrors, whose details name the limit a key, value or event broke.
 */
export class HostClient {
  /** The socket's address, for clients of services the embedding program offers. */
  readonly address: string;
  /**
   * Options that add the launch token to every call and set the message limits: give
   * them, with `address` and `credentials`, to a client of a service the embedding
   * program offers: `new DbClient(host.address, host.credentials, host.clientOptions)`.
   */
  readonly clientOptions: grpc.ClientOptions;
  readonly credentials = grpc.credentials.createInsecure();
  private readonly client: grpc.Client;

  constructor(socket: string, token: string) {
    this.address = `unix:${socket}`;
    const addToken: grpc.Interceptor = (options, nextCall) =>
      new grpc.InterceptingCall(nextCall(options), {
        start: (metadata, listener, next) => {
          metadata.set(TOKEN_METADATA_KEY, token);
          next(metadata, listener);
        },
      });
    // grpc-js sends the plain authority "localhost" for a unix: address, which every
    // server accepts (some refuse a socket path there).
    this.clientOptions = {
      interceptors: [addToken],
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    };
    this.client = new HostService(this.address, this.credentials, this.clientOptions);
  }

  /** The client for the host that launched this process (BATON_HOST_SOCKET, BATON_PLUGIN_TOKEN). */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): HostClient {
    const socket = env[ENV_HOST_SOCKET];
    const token = env[ENV_TOKEN];
    for (const [name, value] of [
      [ENV_HOST_SOCKET, socket],
      [ENV_TOKEN, token],
    ] as const) {
      if (!value) {
        throw new HostClientError(
          `${name} is not set: the host services are there only for a plugin started by a baton host`,
        );
      }
    }
    return new HostClient(socket!, token!);
  }

  private call<T>(method: string, request: object): Promise<T> {
    const fn = (this.client as unknown as Record<string, UnaryMethod>)[method]!;
    return new Promise((resolve, reject) => {
      fn.call(this.client, request, { deadline: Date.now() + CALL_TIMEOUT_MS }, (err, reply) =>
        err ? reject(err) : resolve(reply as T),
      );
    });
  }

  /** Writes a line to the host's log, tagged with this plugin's name and generation. */
  async log(level: LogLevel, message: string, fields: Record<string, string> = {}): Promise<void> {
    await this.call("Log", { level: LEVELS[level], message, fields });
  }

  /** The value of `key` in this plugin's key-value store, or undefined. */
  async kvGet(key: string): Promise<Buffer | undefined> {
    const reply = await this.call<{ found: boolean; value: Buffer }>("KvGet", { key });
    return reply.found ? reply.value : undefined;
  }

  /** Sets `key` to `value` in this plugin's key-value store. */
  async kvPut(key: string, value: Uint8Array | string): Promise<void> {
    await this.call("KvPut", { key, value: typeof value === "string" ? Buffer.from(value) : value });
  }

  /** Removes `key`; resolves to whether it was set. */
  async kvDelete(key: string): Promise<boolean> {
    return (await this.call<{ existed: boolean }>("KvDelete", { key })).existed;
  }

  /** Every key starting with `prefix`, in byte order (fetched page by page). */
  async kvList(prefix = ""): Promise<string[]> {
    const keys: string[] = [];
    for (;;) {
      const page = await this.call<{ keys: string[]; more: boolean }>("KvList", {
        prefix,
        start_after: keys.at(-1) ?? "",
      });
      keys.push(...page.keys);
      // An empty page that claims more would repeat forever.
      if (!page.more || page.keys.length === 0) {
        return keys;
      }
    }
  }

  /** Publishes an event of kind "plugin:<kind>" on the host's event stream. */
  async emitEvent(kind: string, message = ""): Promise<void> {
    await this.call("EmitEvent", { kind, message });
  }

  close(): void {
    this.client.close();
  }
}
