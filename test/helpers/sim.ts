/** Shared test plumbing: a machine per test that must shut down clean, and typed calls into test/fixtures/sock. */
import type { ExecutionContext } from 'ava';
import { Machine, formatUnexpectedLockdep, type BootOptions, type Proc, type ShutdownReport, type SpawnOptions } from '../../src/index.js';
import type { Msg, R } from '../fixtures/sock.js';
import { parkedCalls } from '../../src/testing.js';
import { expectLockdepReports, type LockdepReport, type ReportPattern } from '../../src/locking/index.js';

export const sockFixture = new URL('../fixtures/sock.js', import.meta.url);
/** test/fixtures/sync: sock's C library plus the sync_file / sw_sync raw helpers. */
export const syncFixture = new URL('../fixtures/sync.js', import.meta.url);

/**
 * Boots a machine, runs `body`, then shuts down and asserts the report: no leaked kernel object, no oops. The
 * shutdown runs (and is checked) even when the body fails.
 */
export async function withMachine(
  t: ExecutionContext,
  body: (m: Machine) => Promise<void>,
  opts: BootOptions = {},
): Promise<void> {
  const m = await Machine.boot(opts);
  try {
    await body(m);
  } finally {
    await shutdownNoLeaks(t, m);
  }
}

/** A process running test/fixtures/sock (or a fixture re-exporting it), with its syscalls as promise-returning methods. */
export interface SockProc {
  readonly proc: Proc;
  readonly pid: number;
  /** Any C-library call by name; resolves to its value or rejects with the errno code. */
  ok<T = number>(name: string, ...args: unknown[]): Promise<T>;
  /** Any C-library call by name; resolves to the errno code it failed with (or rejects if it succeeded). */
  err(name: string, ...args: unknown[]): Promise<string>;
  /** Raw R<T> of a fixture function. */
  r<T>(fn: string, ...args: unknown[]): Promise<R<T>>;
  /** A fixture function returning R<T>: its value (rejects on an errno). */
  fx<T>(fn: string, ...args: unknown[]): Promise<T>;
  /** A fixture function returning R<T>: the errno code (rejects if it succeeded). */
  fxErr(fn: string, ...args: unknown[]): Promise<string>;
  send(fd: number, data: string, fds?: number[], flags?: number): Promise<number>;
  recv(fd: number, maxLen?: number, maxFds?: number, flags?: number): Promise<Msg>;
  recvErr(fd: number, maxLen?: number, maxFds?: number, flags?: number): Promise<string>;
  readlink(fd: number): Promise<string>;
  openFds(): Promise<number[]>;
}

function unwrap<T>(r: R<T>, what: string): T {
  if ('err' in r) throw new Error(`${what} failed with ${r.err}`);
  return r.ok;
}

function errOf<T>(r: R<T>, what: string): string {
  if ('ok' in r) throw new Error(`${what} succeeded (${JSON.stringify(r.ok)}) but an error was expected`);
  return r.err;
}

/** Spawns a process running `fixture` (default test/fixtures/sock; it must export sock's functions) as a SockProc. */
export async function spawnSock(m: Machine, name: string, opts: SpawnOptions = {}, fixture: URL = sockFixture): Promise<SockProc> {
  const proc = await m.spawn(fixture, { name, ...opts });
  const x = <T>(fn: string, args: unknown[]): Promise<R<T>> => proc.call<R<T>>(fn, ...args);
  return {
    proc,
    pid: proc.pid,
    ok: async <T>(name: string, ...args: unknown[]) => unwrap((await x<T>('x', [name, ...args])) as R<T>, name),
    err: async (name: string, ...args: unknown[]) => errOf(await x('x', [name, ...args]), name),
    r: (fn, ...args) => x(fn, args),
    fx: async <T>(fn: string, ...args: unknown[]) => unwrap(await x<T>(fn, args), fn),
    fxErr: async (fn: string, ...args: unknown[]) => errOf(await x(fn, args), fn),
    send: async (fd, data, fds = [], flags = 0) => unwrap(await x<number>('send', [fd, data, fds, flags]), 'sendmsg'),
    recv: async (fd, maxLen = 4096, maxFds = 16, flags = 0) => unwrap(await x<Msg>('recv', [fd, maxLen, maxFds, flags]), 'recvmsg'),
    recvErr: async (fd, maxLen = 4096, maxFds = 16, flags = 0) => errOf(await x<Msg>('recv', [fd, maxLen, maxFds, flags]), 'recvmsg'),
    readlink: async (fd) => unwrap(await x<string>('readlinkFd', [fd]), 'readlink'),
    openFds: () => proc.call<number[]>('openFds'),
  };
}

/**
 * Passes `fd` of process `from` to process `to` as a C program would: SCM_RIGHTS over a fresh socketpair, whose
 * ends are closed again. Resolves to the fd `to` received (its lowest free fd while it still held its end, so
 * usually one above what a plain dup would give). Both fixtures must export sendFd/recvFd (test/fixtures/dmabuf).
 */
export async function passFd(m: Machine, from: Proc, fd: number, to: Proc): Promise<number> {
  const [a, b] = await m.socketpair(from, to);
  await from.call('sendFd', a, fd);
  return to.call<number>('recvFd', b);
}

/**
 * Resolves once at least `n` syscalls are parked in `m`'s kernel (blocked in poll, recvmsg…) — the observable
 * state "it is blocked", instead of a blind delay. Rejects after `ms`.
 */
export async function waitParked(m: Machine, n: number, ms = 10_000): Promise<void> {
  const end = performance.now() + ms;
  for (;;) {
    const got = await parkedCalls(m);
    if (got >= n) return;
    if (performance.now() > end) throw new Error(`expected ${n} parked syscall(s), still ${got} after ${ms} ms`);
    await delay(2);
  }
}

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * The machine's dma-bufs once none is left or 5 s passed (the releases of files a dead process held run after its
 * exit, in driver workers): [] when all went.
 */
export async function dmabufsDrained(m: Machine): ReturnType<Machine['dmabufs']> {
  let left = await m.dmabufs();
  for (let i = 0; i < 250 && left.length > 0; i++) {
    await delay(20);
    left = await m.dmabufs();
  }
  return left;
}

/** Whether `p` settles within `ms` (without consuming its value). */
export async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  await delay(ms);
  return done;
}

/** Heaps most tests boot with: the system heap and a 64 MiB carve-out. */
export const TEST_HEAPS = { system: {}, reserved: { sizeBytes: 64 << 20 } } as const;

/**
 * Boots a machine that is shut down at the end of the test even when an assertion fails first; the test fails if
 * the machine made a lock report nobody expected, whether or not the test shut it down itself.
 */
export async function bootFor(t: ExecutionContext, heaps: BootOptions['heaps'] = TEST_HEAPS): Promise<Machine> {
  return bootChecked(t, { heaps });
}

/**
 * Machine.boot(opts) for a test: the machine is shut down at the end of the test if the test did not (a failed
 * assertion, a throw), and the test fails if the machine made a lock report nobody expected.
 */
export async function bootChecked(t: ExecutionContext, opts: BootOptions = {}): Promise<Machine> {
  const m = await Machine.boot(opts);
  t.teardown(async () => {
    await m.shutdown({ quiet: true }).catch(() => {});
    throwUnexpectedLockdep(m);
  });
  return m;
}

/**
 * Throws (for a t.teardown: ava fails the test with it) when `m` recorded a lock report no expectation matched —
 * the net under tests that shut their machine down without asserting its report.
 */
export function throwUnexpectedLockdep(m: Machine): void {
  const bad = m.lockdep.reports().filter((r) => r.expected !== true);
  if (bad.length > 0) throw new Error(`dmabuf-sim: ${formatUnexpectedLockdep(bad)}\n\n${bad.map((r) => r.text).join('\n\n')}`);
}

/**
 * Shuts `m` down and asserts no leaked kernel object, no oops and no lock report nobody expected (lockdep is on by
 * default under ava: a report the test provokes on purpose is labelled with expectLockdepReports); returns the
 * report for further checks (WARNs).
 */
export async function shutdownNoLeaks(t: ExecutionContext, m: Machine): Promise<ShutdownReport> {
  const r = await m.shutdown();
  t.deepEqual(r.leaks, [], 'no leaked kernel objects at shutdown');
  t.deepEqual(r.oopses, [], 'no kernel oops');
  noUnexpectedLockdep(t, r);
  return r;
}

/**
 * Runs `fn` with the lock reports of `m` matching `pattern` expected (expectLockdepReports in the machine's domain:
 * they are matched in whichever worker makes them, and print one summary line). Returns fn's result and the
 * expected reports; with lock validation off there is nothing to expect and the list is empty.
 */
export async function expectMachineLockdep<R>(m: Machine, pattern: ReportPattern, label: string, fn: () => Promise<R>): Promise<{ result: R; reports: LockdepReport[] }> {
  const d = m.lockdep.domain();
  if (!d) return { result: await fn(), reports: [] };
  return expectLockdepReports(d, pattern, label, fn);
}

/** Asserts a shutdown report holds no lock report nobody expected; each one is shown with its kind, key and text. */
export function noUnexpectedLockdep(t: ExecutionContext, r: ShutdownReport): void {
  t.deepEqual(
    r.lockdep.map((x) => `${x.kind} ${x.key}\n${x.text}`),
    [],
    'no unexpected lockdep report (label the ones this test provokes with expectLockdepReports)',
  );
}

/** Shuts `m` down and asserts the report is clean: no leak, no oops, no WARN. */
export async function shutdownClean(t: ExecutionContext, m: Machine): Promise<void> {
  const r = await shutdownNoLeaks(t, m);
  t.deepEqual(r.warnings, [], 'no warnings');
}

