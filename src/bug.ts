/**
 * The one home of BUG() and WARN() for kernel code in any worker (the broker, fences, reservation objects,
 * drivers): BUG() is an oops — a thrown KernelBug that the syscall entry records and answers with EIO; WARN() is
 * recorded in this thread's list and handed to a sink (stderr by default, the broker's Kernel.warn() once the
 * control plane installs it, or a test's capture) and execution goes on, as with the C macros.
 */

/** A kernel BUG(): an invariant the code relies on does not hold. Never thrown for bad user input (that is an errno). */
export class KernelBug extends Error {
  constructor(message: string) {
    super(`BUG: ${message}`);
    this.name = 'KernelBug';
  }
}

/** BUG(): throws KernelBug. */
export function BUG(message: string): never {
  throw new KernelBug(message);
}

/** BUG_ON(cond): BUG(what) when cond holds. */
export function BUG_ON(cond: boolean, what: string): void {
  if (cond) BUG(what);
}

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
