/**
 * Faults (issue 6 §1): a worker killed at the worst moment — spinning for a reply, parked in a syscall, holding a
 * reservation lock, between a fence's signal and its timestamp, with fds in flight — must not wedge, slow down or
 * leak anything of the machine. Every random choice comes from a seed printed with each test (t.log, shown on
 * failure); DMABUF_SIM_SEED=<seed> replays it.
 */
import test, { type ExecutionContext } from 'ava';
import { Machine, type Proc } from '../src/index.js';
import { chooseSeed, Prng } from '../src/shm/prng.js';
import { delay } from './helpers/sim.js';
import { spinSlots } from '../src/testing.js';

const fixture = new URL('./fixtures/faults.js', import.meta.url);
const seed = chooseSeed();

function logSeed(t: ExecutionContext): Prng {
  t.log(`seed ${seed} (replay with DMABUF_SIM_SEED=${seed})`);
  return new Prng(seed);
}

/** Resolves once word 0 of `sab` is non-zero; rejects after `ms` (a fixture that never got there). */
async function reached(sab: SharedArrayBuffer, what: string, ms = 10_000): Promise<number> {
  const w = new Int32Array(sab);
  const r = Atomics.waitAsync(w, 0, 0, ms);
  if (r.async) await r.value;
  const v = Atomics.load(w, 0);
  if (v === 0) throw new Error(`${what} never reported (seed ${seed})`);
  return v;
}

/** Settles `p`, or fails with `what` after `ms`: a hang becomes a failure with a message, not an ava timeout. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still not done after ${ms} ms (seed ${seed})`)), ms);
  });
  try {
    return await Promise.race([p, guard]);
  } finally {
    clearTimeout(timer);
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/**
 * No-op syscall rates of `a` and `b`, measured alternately (a, b, a, b, …) so that load from the rest of the
 * machine hits both alike; returns the medians.
 */
async function pairedRates(a: Proc, b: Proc, rounds = 6, n = 20_000): Promise<[number, number]> {
  await a.call('nopRate', 5000);
  await b.call('nopRate', 5000);
  const ra: number[] = [];
  const rb: number[] = [];
  // Both orders (ABBA…): whichever runs second in a pair measures a little slower on these machines.
  for (let i = 0; i < rounds; i++) {
    if (i % 2 === 0) {
      ra.push(await a.call<number>('nopRate', n));
      rb.push(await b.call<number>('nopRate', n));
    } else {
      rb.push(await b.call<number>('nopRate', n));
      ra.push(await a.call<number>('nopRate', n));
    }
  }
  return [median(ra), median(rb)];
}

/** Shuts `m` down within a bound and asserts the report: no leak, no oops. */
async function shutdownBounded(t: ExecutionContext, m: Machine, what: string): Promise<void> {
  const r = await within(m.shutdown(), 15_000, `${what}: shutdown`);
  t.deepEqual(r.leaks, [], `${what}: nothing leaked`);
  t.deepEqual(r.oopses, [], `${what}: no oops`);
}

/**
 * Kills `count` processes while they hammer no-op syscalls (so most kills land while the victim waits for a
 * reply, often spinning in the machine's spin slot), `batch` at a time, at seeded moments.
 */
async function killSpinners(m: Machine, prng: Prng, count: number, batch: number): Promise<void> {
  for (let done = 0; done < count; done += batch) {
    const ps = await Promise.all(Array.from({ length: batch }, (_, i) => m.spawn(fixture, { name: `spin${done + i}` })));
    const started = ps.map(() => new SharedArrayBuffer(4));
    const loops = ps.map((p, i) => p.call('nopUntilKilled', started[i]).catch(() => 0));
    await Promise.all(started.map((s, i) => reached(s, `spinner ${done + i}`)));
    for (const p of ps) {
      await delay(prng.below(4));
      await p.kill();
    }
    await Promise.all(loops);
  }
}

// Threshold: on the 2-vCPU machines this runs on, a lost spin slot makes every later call sleep for its reply
// (a futex wake, 30–45 µs, against under 5 µs spinning): 2–6× slower, so a ratio of 0.5 or less. A healthy
// machine measures ~1 (the two processes run the same loop alternately, so machine load hits both alike); 0.5
// leaves room for that noise and still fails on the leak.
test.serial('60 processes killed mid-syscall while spinning leak no spin slot: a fresh process runs at a fresh machine\'s speed', async (t) => {
  const prng = logSeed(t);
  const fresh = await Machine.boot();
  const used = await Machine.boot();
  try {
    await within(killSpinners(used, prng, 60, 1), 90_000, 'killing 60 spinning processes');
    t.deepEqual(await spinSlots(used), await spinSlots(fresh), 'every spin slot is free again');
    const a = await fresh.spawn(fixture, { name: 'fresh-machine' });
    const b = await used.spawn(fixture, { name: 'after-kills' });
    const [ra, rb] = await pairedRates(a, b);
    const ratio = rb / ra;
    t.log(`no-op syscalls/s: fresh machine ${ra.toFixed(0)}, after 60 kills ${rb.toFixed(0)}, ratio ${ratio.toFixed(2)}`);
    t.true(ratio >= 0.5, `a process on the machine that saw 60 kills runs at ${ratio.toFixed(2)}× a fresh machine's speed (seed ${seed})`);
  } finally {
    await shutdownBounded(t, fresh, 'fresh machine');
    await shutdownBounded(t, used, 'machine after kills');
  }
});
