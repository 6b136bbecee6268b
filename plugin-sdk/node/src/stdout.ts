// stdout belongs to the handshake line: anything else written there before it breaks the
// plugin's start, and after it passes for protocol output. So the SDK takes stdout for
// itself and sends everything else (console.log included) to stderr.

type Write = typeof process.stdout.write;

let handshakeWrite: Write | undefined;

/**
 * Points process.stdout (and so console.log, console.info, console.debug) at stderr,
 * keeping the real stdout for the handshake line. serve() does it first thing; call it
 * earlier, at the top of your entry module, if code runs before serve() that may print.
 */
export function redirectStdout(): void {
  if (handshakeWrite !== undefined) {
    return;
  }
  handshakeWrite = process.stdout.write.bind(process.stdout) as Write;
  process.stdout.write = process.stderr.write.bind(process.stderr) as Write;
}

/** Writes the handshake line on the real stdout. */
export function writeHandshake(line: string): Promise<void> {
  const write = handshakeWrite ?? (process.stdout.write.bind(process.stdout) as Write);
  return new Promise((resolve, reject) => {
    write(`${line}\n`, (err?: Error | null) => (err ? reject(err) : resolve()));
  });
}
