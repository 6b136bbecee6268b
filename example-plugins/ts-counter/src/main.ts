// The counter example plugin in TypeScript: named counters you can incr and get, whose
// state survives handovers, in the counters' one state format (./state.ts).

import { Code, PluginError, serve, type Plugin } from "baton-plugin";

import { I64_MAX, STATE_SCHEMA, decode, encode } from "./state";

let counts = new Map<string, bigint>();

function keyOf(payload: Buffer): string {
  if (payload.length === 0) {
    throw new PluginError(Code.INVALID_ARGUMENT, "the payload must be a counter name, got nothing");
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(payload);
  } catch {
    throw new PluginError(Code.INVALID_ARGUMENT, "the counter name must be UTF-8");
  }
}

const counter: Plugin = {
  describe: () => ({
    name: "ts-counter",
    version: "0.1.0",
    stateSchemaVersion: STATE_SCHEMA,
    methods: [
      { name: "incr", description: "adds one to the counter named by the payload; returns the new value" },
      { name: "get", description: "returns the value of the counter named by the payload (0 if unset)" },
    ],
  }),

  // Each call reads and writes the map with no await in between, so concurrent calls
  // never interleave inside one.
  async invoke(method, payload) {
    if (method !== "incr" && method !== "get") {
      throw new PluginError(Code.UNIMPLEMENTED, `counter has no method "${method}" (it has incr, get)`);
    }
    const key = keyOf(payload);
    let value = counts.get(key) ?? 0n;
    if (method === "incr") {
      if (value === I64_MAX) {
        throw new PluginError(Code.OUT_OF_RANGE, `the counter "${key}" is at its maximum`);
      }
      value += 1n;
      counts.set(key, value);
    }
    return value.toString();
  },

  async snapshot() {
    return encode(counts);
  },

  async restore(schemaVersion, state) {
    if (schemaVersion !== STATE_SCHEMA) {
      throw new PluginError(
        Code.FAILED_PRECONDITION,
        `counter reads state schema ${STATE_SCHEMA}, was given schema ${schemaVersion}`,
      );
    }
    try {
      counts = decode(state);
    } catch (e) {
      // INVALID_ARGUMENT, as the other counters answer a malformed state.
      throw new PluginError(Code.INVALID_ARGUMENT, (e as Error).message);
    }
  },
};

void serve(counter);
