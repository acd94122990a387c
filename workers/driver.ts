/**
 * Worker entry of a driver: sets up the driver runtime (its channel to the kernel), attaches the fence table with
 * the kernel's state and the machine's lock domain, imports the driver module, runs its `probe(drv)` and then
 * serves upcalls from the event loop until it is terminated.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { initDriverRuntime, type DriverInit } from '../src/driver/runtime.js';
import { makeDriver, routeReportsToKernel, serveUpcall } from '../src/driver/index.js';
import { attachFenceTable } from '../src/fence/index.js';
import { setDefaultFenceOwner } from '../src/fence/runtime.js';
import { attachLocking, installFenceLockdep } from '../src/locking/index.js';
import { AliveTable } from '../src/shm/alive.js';
import { K_ALIVE } from '../src/fence/table.js';
import { attachResvTable } from '../src/fence/dma-resv.js';
import { LOADED, PROBING, type LoadReport, importReported } from '../src/rpc/process-loaded.js';

export interface DriverWorkerData extends DriverInit {
  readonly module: string;
  readonly fences: SharedArrayBuffer;
  readonly fenceKernel: SharedArrayBuffer;
  /** The kernel lock domain: reservation locks and the buffers' vmap locks live in it. */
  readonly locks: SharedArrayBuffer;
  /** The machine's reservation table (src/fence/resv-table.ts): kernel-side workers only. */
  readonly resv: SharedArrayBuffer;
  /** The machine was booted with lockdep: annotate fence waits too. */
  readonly lockdep: boolean;
  /** The driver's creator id in the fence table, allocated by the broker (it signals a dead driver's fences). */
  readonly fenceAttachId: number;
}

if (!parentPort) throw new Error('a driver must run in a worker thread');
const data = workerData as DriverWorkerData;
const rt = initDriverRuntime(data);
rt.server = serveUpcall;
routeReportsToKernel();
setDefaultFenceOwner(data.owner);
attachFenceTable(data.fences, { control: data.control, maxSpinners: data.maxSpinners, kernel: data.fenceKernel, attachId: data.fenceAttachId });
const alive = new AliveTable(new Int32Array(data.fenceKernel), K_ALIVE);
attachLocking(data.locks, `driver ${data.name}`, {}, { owner: data.owner, liveness: alive });
attachResvTable(data.resv, { locks: data.locks, name: `driver ${data.name}`, owner: { owner: data.owner, liveness: alive } });
if (data.lockdep) installFenceLockdep();

function report(r: LoadReport): void {
  parentPort!.postMessage({ [LOADED]: r });
}

/** Imports the module and runs its probe; reports the outcome (Machine.boot / loadDriver wait for it). */
async function load(): Promise<boolean> {
  const m = await importReported(data.module, report);
  if (!m) return false;
  if (typeof m['probe'] !== 'function') {
    report({ ok: false, missing: 'probe' });
    return false;
  }
  parentPort!.postMessage({ [PROBING]: true });
  try {
    await (m['probe'] as (drv: unknown) => unknown)(makeDriver(data.name));
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    report({ ok: false, message: `probe failed: ${err.message}` });
    return false;
  }
  report({ ok: true });
  return true;
}

if (await load()) rt.start();
else setInterval(() => {}, 1 << 30); // stay until the main thread terminates us (that is the reap)
