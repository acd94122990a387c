/**
 * Thread-level WARN()/WARN_ON() for kernel code that may run in any worker (fences, reservation objects): the
 * warning is recorded in this thread's list and handed to a sink — stderr by default, the broker's Kernel.warn()
 * once control.ts installs it, or a test's capture.
 */

export interface ThreadWarning {
  readonly message: string;
}

export type WarningSink = (message: string) => void;

const defaultSink: WarningSink = (message) => {
  process.stderr.write(`dmabuf-sim: WARNING: ${message}\n`);
};

let sink: WarningSink = defaultSink;
const recorded: ThreadWarning[] = [];
const MAX_RECORDED = 1000;

/**
 * Replaces where this thread's warnings go (null restores stderr). Returns the previous sink so a caller can
 * restore it. Warnings are recorded for takeWarnings() whatever the sink.
 */
export function setWarningSink(next: WarningSink | null): WarningSink {
  const prev = sink;
  sink = next ?? defaultSink;
  return prev;
}

/** WARN(): records `message` and carries on. Returns true, so `if (warn(...)) return` reads like the C idiom. */
export function warn(message: string): true {
  if (recorded.length < MAX_RECORDED) recorded.push({ message });
  sink(message);
  return true;
}

/** WARN_ON(cond): warns with `what` when cond holds; returns cond. */
export function warnOn(cond: boolean, what: string): boolean {
  if (cond) warn(what);
  return cond;
}

/** The warnings this thread recorded since the last call (drains the list). */
export function takeWarnings(): ThreadWarning[] {
  return recorded.splice(0);
}
