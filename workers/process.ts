/**
 * Worker entry of a simulated process: sets up the syscall runtime, imports the user's module, runs its `main`
 * (if any) and serves `call`s from the main thread over comlink.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { expose } from '../src/rpc/comlink.js';
import { initRuntime, type RuntimeInit } from '../src/user/runtime.js';
import { exit, ProcessExit } from '../src/user/syscalls.js';

export interface ProcessWorkerData extends RuntimeInit {
  readonly module: string;
  readonly args: readonly unknown[] | null;
}

if (!parentPort) throw new Error('a process must run in a worker thread');
const data = workerData as ProcessWorkerData;
initRuntime(data);

type Fn = (...args: unknown[]) => unknown;
const mod = (await import(data.module)) as Record<string, unknown>;

/** Ends the worker after exit(): the kernel already tore the process down. */
function leave(code: number): void {
  setImmediate(() => process.exit(code));
}

const api = {
  async call(name: string, args: unknown[]): Promise<unknown> {
    const f = mod[name];
    if (typeof f !== 'function') throw new TypeError(`process module has no exported function '${name}'`);
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
