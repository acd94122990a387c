/**
 * The one home of BUG() and WARN() for kernel code in any worker (the broker, fences, reservation objects,
 * drivers): BUG() is an oops — a thrown KernelBug that the syscall entry records and answers with EIO; WARN() is
 * recorded in this thread's list and handed to a sink (stderr by default, the broker's Kernel.recordWarning()
 * once the control plane installs it, or a test's capture) and execution goes on, as with the C macros.
 *
 * A test that provokes a warning on purpose says so with expectWarnings(pattern, label, fn): the warnings fn raises
 * that match are handed back to it instead of being recorded, the sink learns they were expected (and does not
 * print them one by one), and one line says how many expected warnings were not printed. Any other warning — in
 * fn or anywhere else — is printed loudly and recorded as before, so the test that did not expect it still fails.
 */
import { writeSync } from 'node:fs';

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

/** Where warnings go: `expected` is true for a warning an enclosing expectWarnings() matched. */
export type WarningSink = (message: string, expected: boolean) => void;

/**
 * Writes one line to the process's stderr at once: a worker's process.stderr is an asynchronous pipe through the
 * main thread whose last lines are lost when the worker is terminated (shutdown), and a warning must not be.
 */
export function printLine(line: string): void {
  try {
    writeSync(2, line.endsWith('\n') ? line : `${line}\n`);
  } catch {
    process.stderr.write(line.endsWith('\n') ? line : `${line}\n`); // fd 2 closed or non-blocking and full
  }
}

const defaultSink: WarningSink = (message, expected) => {
  if (!expected) printLine(`dmabuf-sim: WARNING: ${message}`);
};

interface Expectation {
  readonly pattern: RegExp;
  readonly label: string;
  readonly matched: string[];
}

/** An expectation opened with beginExpectWarnings(), to be closed with endExpectWarnings(). */
export type WarningExpectation = Readonly<Expectation>;

/** The expectWarnings() calls running on this thread's stack, innermost last. */
const expectations: Expectation[] = [];

let sink: WarningSink = defaultSink;
/** Whether the sink prints to stderr: then expectWarnings() prints its count line too (a capturing sink stays quiet). */
let sinkPrints = true;
const recorded: ThreadWarning[] = [];
const MAX_RECORDED = 1000;

/**
 * Replaces where this thread's warnings go (null restores stderr). Returns the previous sink so a caller can
 * restore it. Warnings are recorded for takeWarnings() whatever the sink. `prints` says the new sink prints
 * unexpected warnings to stderr (the broker's does), so expectWarnings() adds its "N expected" line there too.
 */
export function setWarningSink(next: WarningSink | null, prints = false): WarningSink {
  const prev = sink;
  sink = next ?? defaultSink;
  sinkPrints = sink === defaultSink || prints;
  return prev;
}

/**
 * WARN(): records `message` and carries on. Returns true, so `if (warn(...)) return` reads like the C idiom. A
 * warning an enclosing expectWarnings() expects goes to that call instead of this thread's record.
 */
export function warn(message: string): true {
  const exp = expectations.findLast((e) => e.pattern.test(message));
  if (exp) exp.matched.push(message);
  else if (recorded.length < MAX_RECORDED) recorded.push({ message });
  sink(message, exp !== undefined);
  return true;
}

/**
 * Runs `fn`, which is expected to WARN: the warnings it raises that match `pattern` are returned (in order) instead
 * of being recorded or printed, and one line — "N expected WARNINGs in <label>, not printed" — says they happened
 * (when the sink prints at all).
 * Warnings that do not match are unexpected: printed and recorded as usual. Synchronous `fn` only (the
 * expectation covers exactly the code between its start and its return); nests, innermost match first.
 */
export function expectWarnings<R>(pattern: RegExp, label: string, fn: () => R): { result: R; warnings: string[] } {
  const exp = beginExpectWarnings(pattern, label);
  let result: R;
  try {
    result = fn();
  } finally {
    endExpectWarnings(exp);
  }
  return { result, warnings: [...exp.matched] };
}

/**
 * expectWarnings() for a window that spans the event loop (the broker, expecting what a test's syscalls provoke:
 * testing.ts expectKernelWarnings): every warning on this thread that matches, until the matching
 * endExpectWarnings(), is expected. Prefer expectWarnings() where the code is synchronous.
 */
export function beginExpectWarnings(pattern: RegExp, label: string): WarningExpectation {
  const exp: Expectation = { pattern, label, matched: [] };
  expectations.push(exp);
  return exp;
}

/** Closes an expectation (idempotent): prints its "N expected WARNINGs" line, returns what it matched. */
export function endExpectWarnings(exp: WarningExpectation): string[] {
  const i = expectations.lastIndexOf(exp as Expectation);
  if (i < 0) return [...exp.matched];
  expectations.splice(i, 1);
  const n = exp.matched.length;
  if (n > 0 && sinkPrints) printLine(`dmabuf-sim: ${n} expected WARNING${n === 1 ? '' : 's'} in ${exp.label} (${exp.pattern}), not printed`);
  return [...exp.matched];
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
