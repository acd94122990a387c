/**
 * Worker entry of a simulated process: sets up the syscall runtime, imports the user's module, runs its `main`
 * (if any) and serves `call`s from the main thread over comlink.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { expose } from '../src/rpc/comlink.js';
import { initRuntime, rt, type RuntimeInit } from '../src/user/runtime.js';
import { exit, ProcessExit } from '../src/user/syscalls.js';
import { simError } from '../src/errors.js';
import { LOADED, type LoadReport, importReported } from '../src/rpc/process-loaded.js';
import { attachLocking, installFenceLockdep } from '../src/locking/index.js';
import { attachResvTable } from '../src/fence/dma-resv.js';

export interface ProcessWorkerData extends RuntimeInit {
  readonly module: string;
  readonly args: readonly unknown[] | null;
  /** Made by clone (fork or thread): the module must export `main`, whose end is the task's end. */
  readonly cloned?: boolean;
  /** The machine's lock domain (Machine.boot({ lockdep: true })): attached after the fence table. */
  readonly locks?: SharedArrayBuffer;
  /**
   * { kernelFences: true } only (a process that plays a driver): the machine's reservation table and the kernel lock
   * domain its locks live in. A plain process is never handed them.
   */
  readonly resv?: SharedArrayBuffer;
  readonly kernelLocks?: SharedArrayBuffer;
}

if (!parentPort) throw new Error('a process must run in a worker thread');
const data = workerData as ProcessWorkerData;
initRuntime(data);
if (data.locks) {
  // Lock words carry the process's machine owner token, so reap (which clears it) makes its locks recoverable.
  // Only a process trusted with the kernel's fence state reads the alive table; a plain one asks the kernel.
  const liveness = data.fences ? rt().ownerLiveness() : null;
  const name = `${data.name} (pid ${data.tid ?? data.pid})`;
  attachLocking(data.locks, name, {}, liveness && data.owner !== undefined ? { owner: data.owner, liveness } : {});
  installFenceLockdep();
}
if (data.resv && data.kernelLocks) {
  // Its lock words carry this process's machine token (cleared by reap), so a lock it dies holding is recovered.
  const owner = data.owner !== undefined ? { owner: data.owner, liveness: rt().ownerLiveness() } : {};
  attachResvTable(data.resv, { locks: data.kernelLocks, name: `${data.name} (pid ${data.tid ?? data.pid})`, owner });
}

type Fn = (...args: unknown[]) => unknown;

/**
 * Imports the user's module and reports the outcome to Machine.spawn() before anything else (see
 * src/rpc/process-loaded.ts). On failure the process idles until the main thread kills it: that kill is its
 * teardown, as for any other process.
 */
async function load(): Promise<Record<string, unknown> | null> {
  const m = await importReported(data.module, report);
  if (!m) return null;
  if (data.args && typeof m['main'] !== 'function') {
    report({ ok: false, missing: 'main' });
    return null;
  }
  report({ ok: true });
  return m;
}

function report(r: LoadReport): void {
  parentPort!.postMessage({ [LOADED]: r });
}

const loaded = await load();
if (!loaded) {
  // A cloned task has no spawn() waiting to kill it: it ends with status 1, which its parent's waitpid sees.
  if (data.cloned) process.exit(1);
  setInterval(() => {}, 1 << 30); // stay alive (and quiet) until spawn() kills us
  await new Promise(() => {});
}
const mod = loaded!;

/** Ends the worker after exit(): the kernel already tore the process down. */
function leave(code: number): void {
  // The worker's exit code is the status the kernel recorded: its low 8 bits (exit(256) is 0, exit(-1) is 255).
  setImmediate(() => process.exit(code & 0xff));
}

const api = {
  async call(name: string, args: unknown[]): Promise<unknown> {
    const f = mod[name];
    if (typeof f !== 'function') throw simError('ERR_DMABUF_SIM_NO_EXPORT', [data.module, name]);
    try {
      return await (f as Fn)(...args);
    } catch (e) {
      if (e instanceof ProcessExit) leave(e.code);
      throw e;
    }
  },
};
expose(api, parentPort);

if (typeof mod['main'] === 'function' && data.args) {
  try {
    const code = await (mod['main'] as Fn)(...data.args);
    exit(typeof code === 'number' ? code : 0);
  } catch (e) {
    if (!(e instanceof ProcessExit)) throw e;
    leave(e.code);
  }
}
