/**
 * Worker body of the physical-limit baseline (bench/drivers.ts): a raw request/reply over one SharedArrayBuffer, no
 * kernel, with the spin discipline of the syscall channel — so the ratio against a no-op syscall measures only what
 * the kernel adds. The client plays a process (post, ring a doorbell, spin in a spin slot with AdaptiveSpin's
 * budget, then Atomics.wait), the server plays the broker (a hot loop that keeps spinning SERVER_SPIN_MS after its
 * last request, as the serve loop does, then sleeps on the doorbell).
 *
 * Words (Int32): 0 STATE (0 idle, 1 request, 2 reply), 1 DOORBELL; the spin slot block follows at word 16.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { AdaptiveSpin, initSpinBlock, SPIN_BLOCK_WORDS } from '../src/shm/spin.js';

export interface RawPingPongData {
  readonly sab: SharedArrayBuffer;
  readonly role: 'server' | 'client';
  readonly n: number;
  readonly maxSpinners: number;
}

const STATE = 0;
const DOORBELL = 1;
const SPIN = 16;
export const RAW_WORDS = SPIN + SPIN_BLOCK_WORDS;
/** As the broker's serve loop (SPIN_MS in src/kernel/entry.ts). */
const SERVER_SPIN_MS = 0.1;

/** The server's loop (the broker's part). */
function server(d: RawPingPongData, w: Int32Array): void {
  let last = performance.now();
  for (let i = 0; i < d.n; ) {
    const seen = Atomics.load(w, DOORBELL);
    if (Atomics.load(w, STATE) === 1) {
      Atomics.store(w, STATE, 2);
      Atomics.notify(w, STATE, 1);
      last = performance.now();
      i++;
      continue;
    }
    // Race-free: the doorbell is read before STATE; the client stores STATE and then bumps the doorbell.
    if (performance.now() - last > SERVER_SPIN_MS) Atomics.wait(w, DOORBELL, seen, 100);
  }
  parentPort!.postMessage(0);
}

/** The client's loop (a process's part): posts its elapsed ms. */
function client(d: RawPingPongData, w: Int32Array): void {
  const block = new Int32Array(d.sab, SPIN * 4, SPIN_BLOCK_WORDS);
  initSpinBlock(block, d.maxSpinners);
  const spin = new AdaptiveSpin(block, 1, null, d.maxSpinners);
  const t0 = performance.now();
  for (let i = 0; i < d.n; i++) {
    Atomics.store(w, STATE, 1);
    Atomics.add(w, DOORBELL, 1);
    Atomics.notify(w, DOORBELL, 1);
    if (!spin.spinWhileEquals(w, STATE, 1)) while (Atomics.load(w, STATE) === 1) Atomics.wait(w, STATE, 1, 100);
    Atomics.store(w, STATE, 0);
  }
  parentPort!.postMessage(performance.now() - t0);
}

// Imported by bench/drivers.ts for the layout only; runs as a worker with its role.
if (!isMainThread) {
  const d = workerData as RawPingPongData;
  const w = new Int32Array(d.sab);
  if (d.role === 'server') server(d, w);
  else client(d, w);
}
