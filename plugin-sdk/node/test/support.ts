// Shared by the tests: running a plugin process the way the host does, and a client of it.

import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";

import { PluginService, type StateChunk } from "../src/proto";

export const REPO = path.resolve(__dirname, "..", "..", "..", "..");

/** Polls `check` until it returns a value, failing with `what` after `timeoutMs`. */
export async function waitUntil<T>(what: string, timeoutMs: number, check: () => T | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== undefined) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** One plugin process, launched as a host launches it. */
export class PluginProcess {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), "baton-node-test-"));
  readonly socket = path.join(this.dir, "p.sock");
  readonly token = "secret-token";
  readonly child: ChildProcess;
  stdout = "";
  stderr = "";
  exitCode: number | null | undefined;
  client: grpc.Client | undefined;

  constructor(command: string, args: string[], cwd?: string) {
    this.child = spawn(command, args, {
      cwd,
      env: {
        ...process.env,
        BATON_PLUGIN_SOCKET: this.socket,
        BATON_PROTOCOL_VERSION: "1",
        BATON_PLUGIN_TOKEN: this.token,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.stdout!.on("data", (d: Buffer) => (this.stdout += d.toString()));
    this.child.stderr!.on("data", (d: Buffer) => (this.stderr += d.toString()));
    this.child.on("exit", (code) => (this.exitCode = code));
  }

  /** The handshake line, once it has come. */
  handshake(): Promise<string> {
    return waitUntil(`a handshake line (stderr: ${this.stderr})`, 20_000, () => {
      if (this.exitCode !== undefined) {
        throw new Error(`exited with ${this.exitCode} before the handshake: ${this.stderr}`);
      }
      const end = this.stdout.indexOf("\n");
      return end < 0 ? undefined : this.stdout.slice(0, end);
    });
  }

  connect(): grpc.Client {
    this.client ??= new PluginService(`unix:${this.socket}`, grpc.credentials.createInsecure());
    return this.client;
  }

  metadata(token = this.token): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set("x-baton-token", token);
    return md;
  }

  unary<T>(method: string, request: object, md = this.metadata()): Promise<T> {
    const client = this.connect() as unknown as Record<
      string,
      (r: object, m: grpc.Metadata, cb: (e: grpc.ServiceError | null, v: T) => void) => void
    >;
    return new Promise((resolve, reject) =>
      client[method]!.call(this.client, request, md, (e, v) => (e ? reject(e) : resolve(v))),
    );
  }

  async snapshot(): Promise<StateChunk[]> {
    const client = this.connect() as unknown as { Snapshot(r: object, m: grpc.Metadata): grpc.ClientReadableStream<StateChunk> };
    const out: StateChunk[] = [];
    for await (const chunk of client.Snapshot({}, this.metadata())) {
      out.push(chunk as StateChunk);
    }
    return out;
  }

  restore(chunks: StateChunk[]): Promise<{ bytes_restored: number }> {
    const client = this.connect() as unknown as {
      Restore(m: grpc.Metadata, cb: (e: grpc.ServiceError | null, v: { bytes_restored: number }) => void): grpc.ClientWritableStream<StateChunk>;
    };
    return new Promise((resolve, reject) => {
      const call = client.Restore(this.metadata(), (e, v) => (e ? reject(e) : resolve(v)));
      for (const c of chunks) {
        call.write(c);
      }
      call.end();
    });
  }

  /** Waits for the process to exit; returns its exit code. */
  exited(timeoutMs = 10_000): Promise<number | null> {
    return waitUntil("the plugin exits", timeoutMs, () => this.exitCode);
  }

  close(): void {
    this.client?.close();
    if (this.exitCode === undefined) {
      this.child.kill("SIGKILL");
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The memo fixture, as a process. */
export function memoProcess(): PluginProcess {
  return new PluginProcess(process.execPath, [path.join(__dirname, "fixtures", "memo.js")]);
}

/** The streamed fixture, as a process. */
export function streamedProcess(): PluginProcess {
  return new PluginProcess(process.execPath, [path.join(__dirname, "fixtures", "streamed.js")]);
}
