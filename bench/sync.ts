/**
 * sw_sync / sync_file benchmarks: sync_stress_parallelism's handoff rate (two processes taking turns through one
 * sw_sync timeline) against the same handoff done with raw Atomics between two workers, in libsync's two wait
 * modes; and sw_sync create + inc + wait + close cycles against a postMessage round trip. Every ratio's baseline
 * is measured in the same run.
 */
import { Worker } from 'node:worker_threads';
import { Machine } from '../src/index.js';
import { echoWorker, emit, medianOf, postMessageRate, round } from './util.js';

const procs = new URL('./sync-procs.js', import.meta.url);
const handoffWorker = new URL('./handoff-worker.js', import.meta.url);

/** Raw baseline: counter increments per second with two workers handing the turn over through Atomics. */
async function rawHandoffRate(iterations: number): Promise<number> {
  const words = new SharedArrayBuffer(8);
  const run = (id: 0 | 1): Promise<number> =>
    new Promise((resolve, reject) => {
      const w = new Worker(handoffWorker, { workerData: { id, words, iterations } });
      w.once('message', (ms: number) => resolve(ms));
      w.once('error', reject);
    });
  const [a, b] = await Promise.all([run(0), run(1)]);
  const c = new Int32Array(words)[0]!;
  if (c !== 2 * iterations) throw new Error(`raw handoff: counter ${c}`);
  return ((2 * iterations) / Math.max(a, b)) * 1000;
}

/** sync_stress_parallelism: counter increments per second (both processes), with libsync in `mode`. */
async function parallelismRate(m: Machine, mode: 'fence' | 'poll', iterations: number, runs: number): Promise<number> {
  const a = await m.spawn(procs, { name: 'sync_stress' });
  const b = await m.spawn(procs, { name: 'sync_stress' });
  const [sa, sb] = await m.socketpair(a, b);
  await Promise.all([a.call('waitMode', mode), b.call('waitMode', mode)]);
  await a.call('parallelSetup', sa);
  await b.call('parallelJoin', sb);
  let base = 0;
  const once = async (): Promise<number> => {
    const [ma, mb] = await Promise.all([
      a.call<number>('parallelThread', 0, iterations, base),
      b.call<number>('parallelThread', 1, iterations, base),
    ]);
    base += 2 * iterations;
    return ((2 * iterations) / Math.max(ma, mb)) * 1000;
  };
  await once(); // warm-up
  const rate = await medianOf(runs, once);
  const counter = await a.call<number>('parallelTeardown');
  await b.call('parallelTeardown');
  await Promise.all([a.kill(), b.kill()]);
  if (counter !== base) throw new Error(`sync_stress_parallelism: counter ${counter}, expected ${base}`);
  return rate;
}

export async function benchSync(): Promise<void> {
  const m = await Machine.boot();
  try {
    const iterations = 1 << 14;
    const raw = await medianOf(3, () => rawHandoffRate(iterations));
    const fast = await parallelismRate(m, 'fence', iterations, 3);
    const poll = await parallelismRate(m, 'poll', iterations, 3);
    emit({
      name: 'sync_stress_parallelism',
      iterations_per_s: round(fast, 0),
      poll_mode_iterations_per_s: round(poll, 0),
      fast_over_poll: round(fast / poll, 2),
      baseline: 'raw Atomics handoff between two workers (no kernel)',
      baseline_per_s: round(raw, 0),
      ratio: round(fast / raw, 2),
      goal: '>= 50000 iterations/s',
    });

    const w = echoWorker();
    await postMessageRate(w, 2000);
    const pm = await medianOf(3, () => postMessageRate(w, 20000));
    await w.terminate();
    const p = await m.spawn(procs, { name: 'sw_sync_bench' });
    const n = 20000;
    await p.call('swSyncCycles', 2000);
    const cycles = await medianOf(3, async () => (n / (await p.call<number>('swSyncCycles', n))) * 1000);
    await p.call('waitMode', 'poll');
    const cyclesPoll = await medianOf(3, async () => (n / (await p.call<number>('swSyncCycles', n))) * 1000);
    await p.kill();
    emit({
      name: 'sw_sync_cycle',
      cycles_per_s: round(cycles, 0),
      poll_mode_cycles_per_s: round(cyclesPoll, 0),
      us_per_cycle: round(1e6 / cycles, 1),
      baseline: 'postMessage round trip',
      baseline_per_s: round(pm, 0),
      ratio: round(cycles / pm, 2),
    });
  } finally {
    const r = await m.shutdown();
    if (r.leaks.length > 0) throw new Error(`bench/sync: ${r.leaks.length} leaked objects`);
  }
}
