/** Worker of bench/fence.ts: the ping or pong side of the fence-wake and raw-wake ping-pongs. */
import { parentPort, workerData } from 'node:worker_threads';
import {
  attachFenceTable,
  dmaFenceFromHandle,
  dmaFenceSignal,
  dmaFenceWait,
  type FenceHandle,
} from '../src/fence/index.js';

interface Data {
  readonly role: 'ping' | 'pong';
  readonly table: SharedArrayBuffer;
  readonly words: SharedArrayBuffer;
  readonly go: SharedArrayBuffer;
  readonly n: number;
  readonly ping: FenceHandle[];
  readonly pong: FenceHandle[];
}

const d = workerData as Data;
attachFenceTable(d.table);
const ping = d.ping.map((h) => dmaFenceFromHandle(h));
const pong = d.pong.map((h) => dmaFenceFromHandle(h));
const w = new Int32Array(d.words);
const go = new Int32Array(d.go);

/** Both sides start together: each checks in, then waits for the other (race-free: wait only while below 2). */
function barrier(slot: number): void {
  Atomics.add(go, slot, 1);
  Atomics.notify(go, slot);
  for (let v = Atomics.load(go, slot); v < 2; v = Atomics.load(go, slot)) Atomics.wait(go, slot, v);
}

const raw: number[] = [];
const fence: number[] = [];
const n = d.n;
if (d.role === 'ping') {
  barrier(0);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    Atomics.store(w, 2 * i, 1);
    Atomics.notify(w, 2 * i);
    // Race-free: sleeps only while the pong word still reads 0; pong stores 1 before notifying.
    while (Atomics.load(w, 2 * i + 1) === 0) Atomics.wait(w, 2 * i + 1, 0);
    raw.push(performance.now() - t0);
  }
  barrier(1);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    dmaFenceSignal(ping[i]!);
    dmaFenceWait(pong[i]!, false);
    fence.push(performance.now() - t0);
  }
  parentPort!.postMessage({ result: { fence, raw } });
} else {
  barrier(0);
  for (let i = 0; i < n; i++) {
    // Race-free: sleeps only while the ping word still reads 0; ping stores 1 before notifying.
    while (Atomics.load(w, 2 * i) === 0) Atomics.wait(w, 2 * i, 0);
    Atomics.store(w, 2 * i + 1, 1);
    Atomics.notify(w, 2 * i + 1);
  }
  barrier(1);
  for (let i = 0; i < n; i++) {
    dmaFenceWait(ping[i]!, false);
    dmaFenceSignal(pong[i]!);
  }
}
