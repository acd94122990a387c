/**
 * Driver figures (issue 7): a no-op ioctl served by a driver worker against the broker's own no-op syscall, and
 * the physical limit — a raw request/reply over a SharedArrayBuffer between two spinning workers, no kernel —
 * all in the same run.
 */
import { Worker } from 'node:worker_threads';
import { Machine } from '../src/index.js';
import { emit, medianOf, round } from './util.js';

const procs = new URL('./procs.js', import.meta.url);
const exporter = new URL('../test/fixtures/drv-exporter.js', import.meta.url);
const user = new URL('../test/fixtures/drv-user.js', import.meta.url);

/** Raw SAB ping-pong between the main thread's helper worker and a second worker, both spinning. */
async function rawPingPong(n: number): Promise<number> {
  const sab = new SharedArrayBuffer(8);
  const src = `
    const { workerData, parentPort } = require('node:worker_threads');
    const w = new Int32Array(workerData.sab);
    const n = workerData.n;
    if (workerData.role === 'server') {
      for (let i = 0; i < n; i++) { while (Atomics.load(w, 0) !== 1) {} Atomics.store(w, 0, 2); }
      parentPort.postMessage(0);
    } else {
      const t0 = performance.now();
      for (let i = 0; i < n; i++) { Atomics.store(w, 0, 1); while (Atomics.load(w, 0) !== 2) {} }
      parentPort.postMessage(performance.now() - t0);
    }`;
  const server = new Worker(src, { eval: true, workerData: { sab, n, role: 'server' } });
  const client = new Worker(src, { eval: true, workerData: { sab, n, role: 'client' } });
  const ms = await new Promise<number>((r) => client.once('message', r));
  await Promise.all([server.terminate(), client.terminate()]);
  return (n / ms) * 1000;
}

export async function benchDrivers(): Promise<void> {
  const m = await Machine.boot();
  try {
    await m.loadDriver(exporter, { name: 'testdrv' });
    const p = await m.spawn(procs, { name: 'bench' });
    const d = await m.spawn(user, { name: 'drvbench' });
    await p.call('nopLoop', 20000);
    await d.call('nopLoop', '/dev/testdrv', 5000);
    const n = 50000;
    let broker = 0;
    let driver = 0;
    // Alternating rounds, so load from elsewhere hits both sides alike.
    const rounds: [number, number][] = [];
    for (let i = 0; i < 3; i++) {
      const b = (n / (await p.call<number>('getfdLoop', n))) * 1000;
      const dv = (n / (await d.call<number>('nopLoop', '/dev/testdrv', n))) * 1000;
      rounds.push([b, dv]);
    }
    broker = await medianOf(1, async () => rounds.map((r) => r[0]).sort((a, b) => a - b)[1]!);
    driver = rounds.map((r) => r[1]).sort((a, b) => a - b)[1]!;
    emit({ name: 'driver_ioctl_roundtrip', calls_per_s: round(driver, 0), baseline: 'broker no-op syscall', baseline_per_s: round(broker, 0), ratio: round(broker / driver, 2), goal: 'cost <= 2x (ratio <= 2)' });
    const raw = await medianOf(3, () => rawPingPong(200000));
    emit({ name: 'syscall_vs_raw_sab_pingpong', calls_per_s: round(broker, 0), baseline: 'raw SAB request/reply, two spinning workers', baseline_per_s: round(raw, 0), ratio: round(broker / raw, 2), goal: '>= 0.8' });
  } finally {
    await m.shutdown();
  }
}
