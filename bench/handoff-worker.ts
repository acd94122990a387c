/**
 * Baseline worker of bench/sync.ts: two workers take turns bumping a plain counter in a SharedArrayBuffer, handing
 * the turn over with Atomics.store + notify / Atomics.wait — the same handoff sync_stress_parallelism makes, minus
 * the kernel. No spinning: the bare futex-style wake.
 */
import { parentPort, workerData } from 'node:worker_threads';

interface Data {
  readonly id: 0 | 1;
  readonly words: SharedArrayBuffer;
  readonly iterations: number;
}

const { id, words, iterations } = workerData as Data;
const w = new Int32Array(words);
const COUNTER = 0;
const TURN = 1;
const t0 = performance.now();
for (let i = 0; i < iterations; i++) {
  // Race-free: sleeps only while TURN still names the other side; the other side stores TURN before notifying.
  for (let t = Atomics.load(w, TURN); t !== id; t = Atomics.load(w, TURN)) Atomics.wait(w, TURN, t);
  w[COUNTER] = w[COUNTER]! + 1;
  Atomics.store(w, TURN, 1 - id);
  Atomics.notify(w, TURN);
}
parentPort!.postMessage(performance.now() - t0);
