/**
 * Fault figures: how fast the machine still serves a process after 60 processes were killed while hammering
 * syscalls (most kills land while the victim waits for its reply, often in a spin slot). Baseline: the same
 * process body on a fresh machine, measured alternately in the same run.
 */
import { Machine } from '../src/index.js';
import { emit, medianOf, round } from './util.js';
import { spinSlots } from '../src/testing.js';

const procs = new URL('./procs.js', import.meta.url);

async function killSpinners(m: Machine, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const p = await m.spawn(procs, { name: `victim${i}` });
    const started = new SharedArrayBuffer(4);
    const loop = p.call('nopUntilKilled', started).catch(() => 0);
    const w = new Int32Array(started);
    const r = Atomics.waitAsync(w, 0, 0, 10_000);
    if (r.async) await r.value;
    await new Promise((res) => setTimeout(res, i % 4));
    await p.kill();
    await loop;
  }
}

export async function benchFaults(): Promise<void> {
  const fresh = await Machine.boot();
  const used = await Machine.boot();
  try {
    await killSpinners(used, 60);
    const slots = await spinSlots(used);
    const a = await fresh.spawn(procs, { name: 'fresh' });
    const b = await used.spawn(procs, { name: 'after-kills' });
    await a.call('nopRate', 20000);
    await b.call('nopRate', 20000);
    const ra: number[] = [];
    const rb: number[] = [];
    // Alternately, and in both orders (ABBA): whichever runs second in a pair measures a little slower here.
    let i = 0;
    await medianOf(6, async () => {
      if (i++ % 2 === 0) {
        ra.push(await a.call<number>('nopRate', 50000));
        rb.push(await b.call<number>('nopRate', 50000));
      } else {
        rb.push(await b.call<number>('nopRate', 50000));
        ra.push(await a.call<number>('nopRate', 50000));
      }
      return 0;
    });
    const med = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
    const fr = med(ra);
    const ar = med(rb);
    emit({
      name: 'nop_rate_after_60_kills_mid_syscall',
      calls_per_s: round(ar, 0),
      baseline: 'the same process on a fresh machine, measured alternately',
      baseline_per_s: round(fr, 0),
      ratio: round(ar / fr, 2),
      spin_slots_leaked: slots.inUse,
      goal: '>= 0.8',
    });
  } finally {
    await used.shutdown();
    await fresh.shutdown();
  }
}
