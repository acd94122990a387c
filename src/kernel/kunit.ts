/**
 * In-kernel self-tests (in the spirit of KUnit and drivers/dma-buf/selftest.c): test bodies that run inside the
 * broker against kernel-internal APIs no syscall reaches yet (attach/map/vmap for in-broker drivers), started
 * from the control plane with KernelControl.selftest(name).
 *
 * A body reports failed expectations through its context. A thrown KernelError is a failure ("unexpected
 * errno"); any other thrown Error is a kernel BUG: the runner records it as an oops exactly as the syscall entry
 * does, runs the body's deferred cleanups and reports the test as failed. Broker thread only.
 */
import { KernelError } from '../errors.js';
import { errnoCode } from '../uapi/errno.js';
import type { Oops } from './entry.js';
import type { Kernel } from './kernel.js';
import type { Task } from './task.js';

export interface SelftestContext {
  /** The process the test runs as (control-plane callers may name one), or null for the kernel itself. */
  readonly task: Task | null;
  /** Records a failure unless `cond` holds. */
  expect(cond: boolean, what: string): void;
  /** Expects `fn` to throw KernelError(errno); records a failure otherwise. */
  expectErrno(errno: number, fn: () => unknown, what: string): void;
  log(line: string): void;
  /** Text the test hands back (e.g. a debugfs snapshot taken mid-test). */
  output(text: string): void;
  /** Runs after the body, even when it failed or BUG()ed, in reverse order of registration. */
  defer(cleanup: () => void): void;
}

export type SelftestFn = (k: Kernel, ctx: SelftestContext) => void;

export interface SelftestResult {
  readonly name: string;
  readonly ok: boolean;
  readonly failures: string[];
  readonly log: string[];
  readonly output: string;
  /** Set when the body hit a BUG (recorded as an oops too). */
  readonly oops: string | null;
}

function registry(k: Kernel): Map<string, SelftestFn> {
  let m = k.subsystems.get('selftests') as Map<string, SelftestFn> | undefined;
  if (!m) {
    m = new Map();
    k.subsystems.set('selftests', m);
  }
  return m;
}

export function registerSelftest(k: Kernel, name: string, fn: SelftestFn): void {
  const m = registry(k);
  if (m.has(name)) throw new Error(`selftest ${name} registered twice`);
  m.set(name, fn);
}

export function selftestNames(k: Kernel): string[] {
  return [...registry(k).keys()].sort();
}

/**
 * Runs one self-test. `oopses` is the syscall entry's oops list, where a BUG in the body is recorded. Cleanups
 * run with the same protection (a BUG in a cleanup is an oops too).
 */
export function runSelftest(k: Kernel, name: string, task: Task | null, oopses: Oops[]): SelftestResult {
  const fn = registry(k).get(name);
  if (!fn) throw new Error(`no selftest ${name} (have: ${selftestNames(k).join(', ')})`);
  const failures: string[] = [];
  const log: string[] = [];
  const cleanups: (() => void)[] = [];
  let output = '';
  let oops: string | null = null;
  const call = `selftest(${name})`;
  const recordBug = (e: unknown): void => {
    const message = e instanceof Error ? (e.stack ?? e.message) : String(e);
    oops ??= e instanceof Error ? e.message : String(e);
    oopses.push({ pid: task?.pid ?? 0, call, message });
    process.stderr.write(`dmabuf-sim: kernel oops in ${call}: ${message}\n`);
  };
  const ctx: SelftestContext = {
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
