// What a plugin is: the interface an author implements, and the error it throws.

import { status } from "@grpc/grpc-js";

/** gRPC status codes, for PluginError. */
export { status as Code } from "@grpc/grpc-js";

/** What a plugin tells the host about itself in Describe. */
export interface Description {
  /** The plugin's own name (informational; the host's config names it). */
  name: string;
  /** The build's version, free-form. */
  version: string;
  /** The state format written by snapshot and read by restore; 0 (the default) if stateless. */
  stateSchemaVersion?: number;
  /** The methods invoke accepts. */
  methods?: ReadonlyArray<{ name: string; description?: string }>;
}

/** A state handed over as a stream, for a state too large to hold twice in memory. */
export interface StateStream {
  /** The state's bytes, in any pieces; the SDK sends them in 64 KiB chunks. */
  data: AsyncIterable<Uint8Array>;
  /** The state's length if known: announced to the receiver, which refuses another length. */
  size?: number;
}

/**
 * A baton plugin. One object serves every call; calls run concurrently (interleaved at
 * every await), so keep each change to the state within one synchronous stretch.
 *
 * Throw a PluginError to answer with a gRPC status (UNIMPLEMENTED for an unknown method,
 * INVALID_ARGUMENT for a bad payload); any other error reaches the caller as INTERNAL.
 */
export interface Plugin {
  describe(): Description;
  /** Runs one call. */
  invoke(method: string, payload: Buffer): Promise<Uint8Array | string>;
  /**
   * A consistent copy of the whole state, in the format of describe().stateSchemaVersion.
   * The host sends no calls while it takes one. Leave it out if the plugin keeps no state.
   */
  snapshot?(): Promise<Uint8Array>;
  /**
   * Replaces the state with `state`, written by some build in format `schemaVersion`.
   * Refuse a format you cannot read with PluginError(Code.FAILED_PRECONDITION), leaving
   * the current state untouched.
   */
  restore?(schemaVersion: number, state: Buffer): Promise<void>;
  /** Instead of snapshot: the state as a stream. */
  snapshotStream?(): Promise<StateStream>;
  /**
   * Instead of restore: reads the state from `data`, each piece checked before it comes.
   * A broken stream throws from the iteration; only its normal end means the whole state
   * arrived with a good checksum, so commit the new state then and not before.
   */
  restoreStream?(schemaVersion: number, data: AsyncIterable<Buffer>, size: number | undefined): Promise<void>;
}

/** An error for the caller, sent as a gRPC status. */
export class PluginError extends Error {
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
    this.name = "PluginError";
  }
}
