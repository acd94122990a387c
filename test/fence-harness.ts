/**
 * Helpers for the fence self-test ports: worker threads attached to the test's fence table (bodies in
 * test/fixtures/fence-workers.ts) whose every failure reaches the test, leak and warning checks.
 */
import test, { type ExecutionContext } from 'ava';
import { Worker } from 'node:worker_threads';
import { FenceTable } from '../src/fence/table.js';
import { takeWarnings } from '../src/bug.js';

const fixture = new URL('./fixtures/fence-workers.js', import.meta.url);

export interface WorkerMessage {
  readonly type: 'ready' | 'done' | 'log';
  readonly result?: unknown;
  readonly line?: string;
}

/** What every fence worker's result carries (with its body's own fields): the warnings it recorded. */
export interface WorkerResult {
  readonly warnings: string[];
}

/** A running fence worker: `ready` resolves at its first 'ready' message, `done` with its result. */
export interface FenceWorker<T> {
  readonly worker: Worker;
  readonly ready: Promise<void>;
  readonly done: Promise<T>;
  readonly logs: string[];
}

/**
 * Starts `body` of fence-workers.ts in a new worker with `data` (plus the table). `done` rejects when the body
 * throws, the worker exits without a result, or `timeoutMs` passes (the worker is then terminated).
 */
export function startFenceWorker<T>(
  body: string,
  table: SharedArrayBuffer,
  data: Record<string, unknown> = {},
  timeoutMs = 30_000,
): FenceWorker<T> {
  const worker = new Worker(fixture, { workerData: { body, table, ...data } });
  const logs: string[] = [];
  let markReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    markReady = resolve;
  });
  const done = new Promise<T>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      void worker.terminate();
      reject(new Error(`fence worker '${body}' timed out after ${timeoutMs} ms (logs: ${logs.join(' | ')})`));
    }, timeoutMs);
    worker.on('message', (m: WorkerMessage) => {
      if (m.type === 'ready') markReady();
      else if (m.type === 'log' && m.line !== undefined) logs.push(m.line);
      else if (m.type === 'done' && !settled) {
        settled = true;
        clearTimeout(timer);
        resolve(m.result as T);
      }
    });
    worker.on('error', (e) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      markReady();
      reject(new Error(`fence worker '${body}' failed: ${e.message}`, { cause: e }));
    });
    worker.on('exit', (code) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      markReady();
      reject(new Error(`fence worker '${body}' exited with code ${code} before reporting a result`));
    });
  });
  // A failure before 'ready' must not leave the test awaiting `ready` forever.
  void done.catch(() => markReady());
  return { worker, ready, done, logs };
}

/**
 * Waits for every worker; the first failure terminates the others and is rethrown, so no worker's error is
 * swallowed (unlike kthread_stop results the C tests sometimes dropped).
 */
export async function joinAll<T>(workers: readonly FenceWorker<T>[]): Promise<T[]> {
  try {
    return await Promise.all(workers.map((w) => w.done));
  } catch (e) {
    await Promise.all(workers.map((w) => w.worker.terminate()));
    await Promise.allSettled(workers.map((w) => w.done));
    throw e;
  }
}

/** Sleeps without blocking the event loop. */
export const msleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Asserts that only the global stub is alive in the table (every test puts everything it got). */
export function assertNoLiveFences(t: ExecutionContext, table: SharedArrayBuffer): void {
  const live = new FenceTable(table).liveFences();
  t.deepEqual(
    live.map((f) => `${f.kind} ${f.driver}:${f.timeline} seq ${f.seqno} ref ${f.refcount}`),
    [],
    'fences leaked',
  );
}

/** Asserts that this thread recorded no kernel warnings since the last check (and clears them). */
export function assertNoWarnings(t: ExecutionContext): void {
  t.deepEqual(
    takeWarnings().map((w) => w.message),
    [],
    'unexpected kernel warnings',
  );
}

/** The body of one fence self-test case. */
export type FenceCaseBody = (t: ExecutionContext) => void | Promise<void>;

/**
 * Declares the serial case `title`: runs `body`, then `beforeChecks` (if any), then asserts that nothing is left
 * alive in `table` but the stub and that this thread recorded no warning.
 */
export function fenceCase(title: string, table: SharedArrayBuffer, body: FenceCaseBody, beforeChecks?: () => void): void {
  test.serial(title, async (t) => {
    await body(t);
    beforeChecks?.();
    assertNoLiveFences(t, table);
    assertNoWarnings(t);
  });
}

/**
 * The two kinds of case of a self-test port on `table`: `subtest(n, name)` — the C file's subtests, titled
 * "<selftest> <n>: <name>" — and `model(name)` — the model-specific ones, titled "model: <name>", which run
 * `beforeModelChecks` (if any) before their checks.
 */
export function fenceSuite(
  selftest: string,
  table: SharedArrayBuffer,
  beforeModelChecks?: () => void,
): { subtest(n: number, name: string, body: FenceCaseBody): void; model(name: string, body: FenceCaseBody): void } {
  return {
    subtest: (n, name, body) => fenceCase(`${selftest} ${n}: ${name}`, table, body),
    model: (name, body) => fenceCase(`model: ${name}`, table, body, beforeModelChecks),
  };
}
