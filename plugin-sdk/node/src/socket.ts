// The plugin's socket file, under the host's rule: a path is taken over only when it
// holds a stale socket, and removed at the end only while it still holds ours.

import * as fs from "node:fs";
import * as net from "node:net";

/** Something at the socket path that is not a stale socket; nothing was deleted. */
export class SocketPathError extends Error {
  override name = "SocketPathError";
}

/** The identity of a socket file: its device and inode. */
export interface BoundSocket {
  path: string;
  dev: number;
  ino: number;
}

/**
 * Makes `path` free to bind: nothing is there, or a socket nobody answers on (left by a
 * plugin that was killed), which is removed. Anything else is a SocketPathError.
 */
export async function claimSocket(path: string): Promise<void> {
  let info: fs.Stats;
  try {
    info = fs.lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      return;
    }
    throw new SocketPathError(`cannot check the plugin socket path ${path}: ${(e as Error).message}`);
  }
  if (!info.isSocket()) {
    throw new SocketPathError(
      `the plugin socket path ${path} is ${describe(info)}, not a socket; only a stale socket is ` +
        "ever replaced, so nothing was deleted: the host must be given a path that is free",
    );
  }
  const refused = await new Promise<boolean>((resolve, reject) => {
    const probe = net.connect(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(false);
    });
    probe.once("error", (e: NodeJS.ErrnoException) => {
      probe.destroy();
      // Refused: the socket file outlived its listener. Anything else (permission
      // denied, ...) is not ours to judge.
      if (e.code === "ECONNREFUSED") {
        resolve(true);
      } else {
        reject(new SocketPathError(`cannot tell whether the socket at the plugin socket path ${path} is stale: ${e.message}`));
      }
    });
  });
  if (!refused) {
    throw new SocketPathError(`the plugin socket path ${path} is a socket another process is listening on; it was left alone`);
  }
  removeIfOurs({ path, dev: info.dev, ino: info.ino });
}

/** The socket file just bound at `path`. */
export function boundSocket(path: string): BoundSocket {
  const info = fs.lstatSync(path);
  return { path, dev: info.dev, ino: info.ino };
}

/** Removes the socket file if the path still holds it: a later plugin may have bound its own there since. */
export function removeIfOurs(ours: BoundSocket): void {
  try {
    const now = fs.lstatSync(ours.path);
    if (now.isSocket() && now.dev === ours.dev && now.ino === ours.ino) {
      fs.unlinkSync(ours.path);
    }
  } catch {
    // Gone already, or not ours to remove.
  }
}

function describe(info: fs.Stats): string {
  if (info.isFile()) return "a regular file";
  if (info.isDirectory()) return "a directory";
  if (info.isSymbolicLink()) return "a symbolic link";
  if (info.isFIFO()) return "a FIFO";
  if (info.isCharacterDevice()) return "a character device";
  if (info.isBlockDevice()) return "a block device";
  return "a file of an unknown kind";
}
