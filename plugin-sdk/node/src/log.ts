// The SDK's log: lines on stderr, starting with the level (the host logs a captured line
// that starts with ERROR, WARN, INFO or DEBUG at that level), without a time (the host
// stamps every line it captures).

const LEVELS = ["debug", "info", "warn", "error"] as const;
type Level = (typeof LEVELS)[number];

// BATON_LOG is shared with the Rust SDK, where it may be a filter such as "baton=debug";
// anything but a plain level name means info here.
const wanted = (process.env["BATON_LOG"] ?? "").trim().toLowerCase();
const threshold = LEVELS.indexOf((LEVELS as readonly string[]).includes(wanted) ? (wanted as Level) : "info");

function write(level: Level, message: string, fields: Record<string, unknown>): void {
  if (LEVELS.indexOf(level) < threshold) {
    return;
  }
  const rest = Object.entries(fields)
    .map(([k, v]) => ` ${k}=${JSON.stringify(v)}`)
    .join("");
  process.stderr.write(`${level.toUpperCase()} ${message}${rest}\n`);
}

/** Writes to the host's captured stderr log. */
export const log = {
  debug: (message: string, fields: Record<string, unknown> = {}) => write("debug", message, fields),
  info: (message: string, fields: Record<string, unknown> = {}) => write("info", message, fields),
  warn: (message: string, fields: Record<string, unknown> = {}) => write("warn", message, fields),
  error: (message: string, fields: Record<string, unknown> = {}) => write("error", message, fields),
};
