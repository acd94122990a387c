/**
 * KUnit for the model: in-kernel test cases (in the spirit of KUnit and drivers/dma-buf/selftest.c) that run
 * inside the broker against kernel-internal APIs no syscall reaches (attach/map/vmap for in-broker drivers). They
 * are not part of the kernel a machine boots: the case modules are loaded, and a case run, only when a test asks
 * (`kunit(machine, name)` from dmabuf-sim/testing, which calls KernelControl.kunitRun).
 *
 * A body reports failed expectations through its context. A thrown KernelError is a failure ("unexpected
 * errno"); a KernelBug (BUG()) or any other exception is a kernel bug: the runner records it as an oops exactly as
 * the syscall entry does, runs the body's deferred cleanups and reports the case as failed. Broker thread only.
 *
 * Naming: "kunit" is this (kernel-internal cases); "selftests" are the ported tools/testing/selftests programs
 * that run as processes (test/sync-selftests.test.ts); "st-*" are the ported drivers/dma-buf/st-*.c fence tests.
 */
import { expectWarnings, KernelBug } from '../bug.js';
import { KernelError } from '../errors.js';
import { errnoCode } from '../uapi/errno.js';
import type { Kernel } from './kernel.js';
import type { Task } from './task.js';

export interface KunitContext {
  /** The process the case runs as (control-plane callers may name one), or null for the kernel itself. */
  readonly task: Task | null;
  /** Records a failure unless `cond` holds. */
  expect(cond: boolean, what: string): void;
  /** Expects `fn` to throw KernelError(errno); records a failure otherwise. */
  expectErrno(errno: number, fn: () => unknown, what: string): void;
  log(line: string): void;
  /** Text the case hands back (e.g. a debugfs snapshot taken mid-test). */
  output(text: string): void;
  /** Runs after the body, even when it failed or BUG()ed, in reverse order of registration. */
  defer(cleanup: () => void): void;
  /**
   * Runs `fn`, which is meant to WARN: returns the warnings it raised that match `pattern`, in order. They are in
   * the kernel's list marked expected and are not printed one by one (src/bug.ts expectWarnings); any other
   * warning stays unexpected and prints loudly.
   */
  expectWarnings(pattern: RegExp, fn: () => void): string[];
  /**
   * Declares that this case ends in a BUG() whose message matches `pattern`: its oops is still recorded (and the
   * case still fails), but marked expected and printed as one line without the stack.
   */
  expectBug(pattern: RegExp): void;
}

export type KunitCase = (k: Kernel, ctx: KunitContext) => void;

/** A suite: its cases by name. */
export type KunitSuite = Readonly<Record<string, KunitCase>>;

export interface KunitResult {
  readonly name: string;
  readonly ok: boolean;
  readonly failures: string[];
  readonly log: string[];
  readonly output: string;
  /** Set when the body hit a BUG (recorded as an oops too). */
  readonly oops: string | null;
}

/** Every suite, loaded on first use (never at boot). */
async function loadSuites(): Promise<KunitSuite[]> {
  const { dmaBufKunitSuite } = await import('./dma-buf-kunit.js');
  return [dmaBufKunitSuite];
}

/** The case named `name`, or null; with the names there are for an error message. */
export async function findKunitCase(name: string): Promise<{ fn: KunitCase | null; names: string[] }> {
  const suites = await loadSuites();
  for (const s of suites) if (Object.hasOwn(s, name)) return { fn: s[name] ?? null, names: [] };
  return { fn: null, names: suites.flatMap((s) => Object.keys(s)).sort() };
}

/**
 * Runs one case as `task` (null: the kernel). `recordOops` is the syscall entry's oops recorder, where a BUG in
 * the body is recorded. Cleanups run with the same protection (a BUG in a cleanup is an oops too).
 */
export function runKunitCase(
  k: Kernel,
  name: string,
  fn: KunitCase,
  task: Task | null,
  recordOops: (pid: number, call: string, e: unknown, expected: boolean) => void,
): KunitResult {
  const failures: string[] = [];
  const log: string[] = [];
  const cleanups: (() => void)[] = [];
  let output = '';
  let oops: string | null = null;
  const call = `kunit(${name})`;
  let bugPattern: RegExp | null = null;
  const recordBug = (e: unknown): void => {
    const message = e instanceof Error ? e.message : String(e);
    oops ??= message;
    recordOops(task?.pid ?? 0, call, e, e instanceof KernelBug && bugPattern !== null && bugPattern.test(message));
  };
  const ctx: KunitContext = {
    task,
    expect: (cond, what) => {
      if (!cond) failures.push(what);
    },
    expectErrno: (errno, f, what) => {
      try {
        f();
        failures.push(`${what}: succeeded, expected ${errnoCode(errno)}`);
      } catch (e) {
        if (!(e instanceof KernelError)) throw e;
        if (e.errno !== errno) failures.push(`${what}: ${errnoCode(e.errno)}, expected ${errnoCode(errno)}`);
      }
    },
    log: (line) => void log.push(line),
    output: (text) => void (output += text),
    defer: (c) => void cleanups.push(c),
    expectWarnings: (pattern, f) => expectWarnings(pattern, call, f).warnings,
    expectBug: (pattern) => void (bugPattern = pattern),
  };
  const prev = k.current;
  k.current = task;
  if (task) task.currentCall = call;
  try {
    try {
      fn(k, ctx);
    } catch (e) {
      if (e instanceof KernelError) failures.push(`unexpected ${errnoCode(e.errno)}: ${e.message}`);
      else recordBug(e);
    }
    for (const c of cleanups.reverse()) {
      try {
        c();
      } catch (e) {
        if (e instanceof KernelError) failures.push(`cleanup: unexpected ${errnoCode(e.errno)}`);
        else recordBug(e);
      }
    }
  } finally {
    k.current = prev;
  }
  return { name, ok: failures.length === 0 && oops === null, failures, log, output, oops };
}
