/**
 * `npm run bench`: every figure as one JSON line, each with its baseline measured in the same run (a ratio), since
 * these machines are noisy. Figures: syscall round trips (1 and 8 processes) vs postMessage; more are added by
 * the benches of each subsystem, the reservation objects' (bench/resv.ts) and the fault figures (bench/faults.ts).
 */
import { Machine } from '../src/index.js';
import { echoWorker, emit, medianOf, postMessageRate, round } from './util.js';
import { benchSubsystems } from './subsystems.js';
import { benchFaults } from './faults.js';
import { benchDrivers } from './drivers.js';
import { benchResv } from './resv.js';

const procs = new URL('./procs.js', import.meta.url);

async function syscallRoundTrips(): Promise<void> {
  const m = await Machine.boot();
  try {
    // Baseline: postMessage ping-pong main ↔ one worker.
    const w = echoWorker();
    await postMessageRate(w, 2000);
    const pm1 = await medianOf(3, () => postMessageRate(w, 20000));
    const p = await m.spawn(procs, { name: 'bench' });
    await p.call('nopLoop', 20000);
    const n = 300000;
    const ours1 = await medianOf(3, async () => (n / (await p.call<number>('getfdLoop', n))) * 1000);
    emit({ name: 'syscall_roundtrip_1proc', calls_per_s: round(ours1, 0), baseline: 'postMessage round trip', baseline_per_s: round(pm1, 0), ratio: round(ours1 / pm1, 1), goal: '>= 20' });

    // 8 processes at once vs 8 workers ping-ponging with the main thread at once.
    const ws = [w, ...Array.from({ length: 7 }, () => echoWorker())];
    await Promise.all(ws.map((x) => postMessageRate(x, 500)));
    const pm8 = await medianOf(3, async () => {
      const t0 = performance.now();
      await Promise.all(ws.map((x) => postMessageRate(x, 4000)));
      return ((8 * 4000) / (performance.now() - t0)) * 1000;
    });
    await Promise.all(ws.map((x) => x.terminate()));
    const ps = [p, ...(await Promise.all(Array.from({ length: 7 }, (_, i) => m.spawn(procs, { name: `bench${i + 1}` }))))];
    await Promise.all(ps.map((x) => x.call('nopLoop', 2000)));
    const per = 30000;
    const ours8 = await medianOf(3, async () => {
      const t0 = performance.now();
      await Promise.all(ps.map((x) => x.call('getfdLoop', per)));
      return ((8 * per) / (performance.now() - t0)) * 1000;
    });
    emit({ name: 'syscall_roundtrip_8proc', calls_per_s: round(ours8, 0), baseline: '8 workers postMessage round trips', baseline_per_s: round(pm8, 0), ratio: round(ours8 / pm8, 1), goal: '>= 1' });
  } finally {
    await m.shutdown();
  }
}

await syscallRoundTrips();
await benchSubsystems();
benchResv();
await benchFaults();
await benchDrivers();
