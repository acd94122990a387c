/**
 * Faults (issue 6 §1): a worker killed at the worst moment — spinning for a reply, parked in a syscall, holding a
 * reservation lock, between a fence's signal and its timestamp, with fds in flight — must not wedge, slow down or
 * leak anything of the machine. Every random choice comes from a seed printed with each test (t.log, shown on
 * failure); DMABUF_SIM_SEED=<seed> replays it.
 */
import test, { type ExecutionContext } from 'ava';
import { Machine, type Proc } from '../src/index.js';
import { chooseSeed, Prng } from '../src/shm/prng.js';
import { bootChecked, delay, expectMachineLockdep, noUnexpectedLockdep, spawnSock, waitParked, type SockProc } from './helpers/sim.js';
import { dmaBufAddFence, DMA_RESV_USAGE_WRITE, expectKernelWarnings, spinSlots } from '../src/testing.js';
import { DMA_BUF_SYNC_READ } from '../src/uapi/dma-buf.js';
import { E } from '../src/uapi/errno.js';
import type { FenceHandle } from '../src/fence/dma-fence.js';
import { createFenceTable, FenceTable, K_NAMES_LOCK, LOCK_WAITERS } from '../src/fence/table.js';
import { expectWarnings } from '../src/bug.js';

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

/**
 * No-op syscall rates of `a` and `b`, measured alternately (a, b, a, b, …) so that load from the rest of the
 * machine hits both alike; returns each side's best round.
 */
async function pairedRates(a: Proc, b: Proc, rounds = 20, n = 5_000): Promise<[number, number]> {
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
  // The best round of each: contention from other threads only ever lowers a round, while a leaked spin slot
  // lowers every round of the affected machine — so the maxima compare capability, not the machine's load. Many
  // short rounds rather than a few long ones: under `npm test` another test file shares the two vCPUs, and each
  // side needs only one round in a quiet moment.
  return [Math.max(...ra), Math.max(...rb)];
}

/**
 * rb/ra from pairedRates, measured again (up to `tries` times, 8: under `npm test` with lockdep on, the other test
 * file sharing the two vCPUs depressed three tries in a row) while it is below `min`: a burst of load on a shared
 * 2-vCPU machine can depress one measurement, a leaked slot depresses all of them. Returns the best ratio seen.
 */
async function bestRatio(a: Proc, b: Proc, min: number, tries = 8): Promise<{ ratio: number; ra: number; rb: number }> {
  let best = { ratio: 0, ra: 0, rb: 0 };
  for (let i = 0; i < tries && best.ratio < min; i++) {
    const [ra, rb] = await pairedRates(a, b);
    if (rb / ra > best.ratio) best = { ratio: rb / ra, ra, rb };
  }
  return best;
}

/** Shuts `m` down within a bound and asserts the report: no leak, no oops. Returns the kernel's warnings. */
async function shutdownBounded(t: ExecutionContext, m: Machine, what: string): Promise<string[]> {
  const r = await within(m.shutdown(), 15_000, `${what}: shutdown`);
  t.deepEqual(r.leaks, [], `${what}: nothing leaked`);
  t.deepEqual(r.oopses, [], `${what}: no oops`);
  noUnexpectedLockdep(t, r);
  return r.warnings.map((w) => w.message);
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
  const fresh = await bootChecked(t);
  const used = await bootChecked(t);
  try {
    await within(killSpinners(used, prng, 60, 1), 90_000, 'killing 60 spinning processes');
    t.deepEqual(await spinSlots(used), await spinSlots(fresh), 'every spin slot is free again');
    const a = await fresh.spawn(fixture, { name: 'fresh-machine' });
    const b = await used.spawn(fixture, { name: 'after-kills' });
    const { ratio, ra, rb } = await bestRatio(a, b, 0.5);
    t.log(`no-op syscalls/s: fresh machine ${ra.toFixed(0)}, after 60 kills ${rb.toFixed(0)}, ratio ${ratio.toFixed(2)}`);
    t.true(ratio >= 0.5, `a process on the machine that saw 60 kills runs at ${ratio.toFixed(2)}× a fresh machine's speed (seed ${seed})`);
  } finally {
    await shutdownBounded(t, fresh, 'fresh machine');
    await shutdownBounded(t, used, 'machine after kills');
  }
});


/** A victim process: a SockProc of the faults fixture (it makes and signals fences: it plays a driver). */
async function victim(m: Machine, name: string): Promise<SockProc> {
  return spawnSock(m, name, { kernelFences: true }, fixture);
}

type Case = 'parked' | 'spinning' | 'signal' | 'resv' | 'fdpass' | 'fence-wait';
const CASES: readonly Case[] = ['parked', 'spinning', 'signal', 'resv', 'fdpass', 'fence-wait'];

/**
 * One kill at an interesting point, on machine `m`, with `survivor` (a process that lives through every case) as
 * the peer where one is needed. Each case ends with every process it started dead, and checks what the other
 * processes see.
 */
async function killCase(t: ExecutionContext, m: Machine, c: Case, prng: Prng, survivor: SockProc): Promise<void> {
  switch (c) {
    case 'parked': {
      // Mid-syscall, parked in the kernel: recvmsg on a socket nobody writes to.
      const P = await victim(m, 'parked');
      const [p, s] = await m.socketpair(P.proc, survivor.proc);
      const before = await parkedCallsOf(m);
      const started = new SharedArrayBuffer(4);
      const call = P.proc.call('recvUntilKilled', p, started).catch(() => -1);
      await reached(started, 'parked victim');
      await waitParked(m, before + 1);
      await delay(prng.below(5));
      await P.proc.kill();
      await call;
      t.like(await survivor.recv(s), { n: 0 }, 'parked: the peer sees EOF');
      await survivor.ok('close', s);
      return;
    }
    case 'spinning': {
      // Mid-syscall, spinning for the reply in a machine spin slot (most of a no-op loop's time).
      const n = 1 + prng.below(3);
      const ps = await Promise.all(Array.from({ length: n }, (_, i) => m.spawn(fixture, { name: `spinning${i}` })));
      const started = ps.map(() => new SharedArrayBuffer(4));
      const loops = ps.map((p, i) => p.call('nopUntilKilled', started[i]).catch(() => 0));
      await Promise.all(started.map((x) => reached(x, 'spinning victim')));
      for (const p of ps) {
        await delay(prng.below(4));
        await p.kill();
      }
      await Promise.all(loops);
      return;
    }
    case 'signal': {
      // Mid-signal: the signaller stops between its S_SIGNAL compareExchange and its timestamp store (the fault
      // seam) and is killed there, while another process sleeps on the fence and a buffer's sync_file holds it.
      const P = await victim(m, 'signaller');
      const Q = await victim(m, 'buffer-owner');
      const W = await victim(m, 'fence-waiter');
      const h = await P.proc.call<FenceHandle>('makeFence');
      const buf = await Q.fx<number>('heapBuffer', 4096, 1);
      await dmaBufAddFence(m, Q.proc, buf, h, DMA_RESV_USAGE_WRITE);
      const syncFd = await Q.ok<number>('dmaBufExportSyncFile', buf, DMA_BUF_SYNC_READ);
      const waiting = new SharedArrayBuffer(4);
      const wait = W.proc.call<number>('waitFence', h, 60_000, waiting);
      await reached(waiting, 'fence waiter');
      await delay(5 + prng.below(10)); // (only makes it likelier that the waiter is asleep, not just spinning)
      const stopped = new SharedArrayBuffer(4);
      const signal = P.proc.call('signalFenceStopped', stopped).catch(() => 0);
      await reached(stopped, 'the signal fault point');
      const repair = await expectKernelWarnings(m, /never published the timestamp/, 'the kill loop\'s mid-signal case');
      await P.proc.kill();
      await signal;
      // The broker reads the timestamp the dead signaller never published (it repairs the signal, with a warning).
      const info = await within(Q.ok<{ status: number }>('syncFileInfo', syncFd), 5000, 'signal: SYNC_IOC_FILE_INFO');
      t.is(info.status, 1, 'signal: the sync_file reads signaled');
      t.true((await within(wait, 5000, 'signal: a waiter asleep on the fence')) > 0, 'signal: the waiter sees it signaled');
      await within(m.debugfs.read('sync/info'), 5000, 'signal: sync/info');
      await within(m.debugfs.read('dma_buf/bufinfo'), 5000, 'signal: bufinfo');
      await repair.end();
      await W.proc.kill();
      await Q.proc.kill();
      return;
    }
    case 'resv': {
      // Holding the reservation lock: the next locker takes it over and is told (EOWNERDEAD).
      const H = await victim(m, 'resv-holder');
      const L = await victim(m, 'resv-locker');
      const id = await H.proc.call<number>('makeResv');
      const held = new SharedArrayBuffer(4);
      const hold = H.proc.call('holdResvLock', id, held).catch(() => 0);
      await reached(held, 'resv holder');
      const lock = L.proc.call('lockResv', id);
      await delay(prng.below(20));
      const { result } = await expectMachineLockdep(m, { kind: 'api', key: /^api:owner-died:/ }, 'resv: the next locker after the holder was killed', async () => {
        await H.proc.kill();
        await hold;
        return within(lock, 5000, 'resv: the next locker');
      });
      t.deepEqual(result, { ret: -E.EOWNERDEAD, warnings: 1 }, 'resv: taken over, EOWNERDEAD, reported');
      t.deepEqual(await within(L.proc.call('lockResv', id), 5000, 'resv: locking again'), { ret: 0, warnings: 0 }, 'resv: then an ordinary lock');
      await L.proc.call('finiResv', id);
      await L.proc.kill();
      return;
    }
    case 'fence-wait': {
      // Mid-wait on fence words (syncWait's fast path on a merged sync_file: an array, two leaves to sleep on).
      const P = await victim(m, 'fence-waiter');
      const started = new SharedArrayBuffer(4);
      const wait = P.proc.call('mergedWaitUntilKilled', started).catch(() => 0);
      await reached(started, 'merged waiter');
      await delay(prng.below(10));
      await P.proc.kill();
      await wait;
      return;
    }
    case 'fdpass': {
      // Mid-fd-pass: sendmsg with SCM_RIGHTS done, recvmsg not yet. Seeded: the sender or the receiver dies.
      const P = await victim(m, 'fd-sender');
      const Q = await victim(m, 'fd-receiver');
      const [p, q] = await m.socketpair(P.proc, Q.proc);
      const buf = await P.fx<number>('heapBuffer', 8192, 7);
      const sent = new SharedArrayBuffer(4);
      const pass = P.proc.call('passFdAndWait', p, buf, sent).catch(() => 0);
      await reached(sent, 'fd sender');
      if (prng.below(2) === 0) {
        await P.proc.kill();
        const msg = await Q.recv(q);
        t.is(msg.fds.length, 1, 'fdpass: the fd in flight outlives its sender');
        t.deepEqual(await Q.r('mapFd', msg.fds[0]!, 8192), { ok: 8192 });
        t.deepEqual(await Q.r('checkMapped', msg.fds[0]!, 7), { ok: -1 }, 'fdpass: with the sender\'s bytes');
        await Q.proc.kill();
      } else {
        await Q.proc.kill();
        await P.proc.kill();
      }
      await pass;
      return;
    }
  }
}

async function parkedCallsOf(m: Machine): Promise<number> {
  const { parkedCalls } = await import('../src/testing.js');
  return parkedCalls(m);
}

// Before the fixes: 'signal' hangs the broker in dma_fence_timestamp (and the sleeping waiter forever), 'resv'
// leaves the next locker asleep forever, 'spinning' leaks the machine's spin slot (see the test above),
// 'fence-wait' leaks the references the sleeper took on the leaves it slept on.
test.serial('seeded kill loop: a process killed mid-syscall, while spinning, mid-signal, holding the resv lock or mid-fd-pass wedges, slows and leaks nothing', async (t) => {
  const prng = logSeed(t);
  const fresh = await bootChecked(t);
  const m = await bootChecked(t);
  let signals = -1;
  try {
    const survivor = await victim(m, 'survivor');
    const order: Case[] = [];
    for (let round = 0; round < 2; round++) {
      const cs = [...CASES];
      for (let i = cs.length - 1; i > 0; i--) {
        const j = prng.below(i + 1);
        [cs[i], cs[j]] = [cs[j]!, cs[i]!];
      }
      order.push(...cs);
    }
    t.log(`order: ${order.join(', ')}`);
    for (const c of order) {
      await within(killCase(t, m, c, prng, survivor), 30_000, `kill case ${c}`);
      t.is(await within(survivor.ok<number>('getpid'), 5000, `after ${c}: the survivor is served`), survivor.pid);
    }
    t.deepEqual(await spinSlots(m), await spinSlots(fresh), 'every spin slot is free again');
    const a = await fresh.spawn(fixture, { name: 'fresh-machine' });
    const { ratio, ra, rb } = await bestRatio(a, survivor.proc, 0.5);
    t.log(`no-op syscalls/s: fresh machine ${ra.toFixed(0)}, survivor after the kills ${rb.toFixed(0)}, ratio ${ratio.toFixed(2)}`);
    t.true(ratio >= 0.5, `the survivor runs at ${ratio.toFixed(2)}× a fresh machine's speed (seed ${seed})`);
    signals = order.filter((c) => c === 'signal').length;
  } finally {
    await shutdownBounded(t, fresh, 'fresh machine');
    const warnings = await shutdownBounded(t, m, 'machine after the kill loop');
    // Each half-finished signal was repaired by its first reader and reported as a kernel warning, once.
    t.is(warnings.length, signals, `one warning per repaired signal: ${warnings.join(' | ')}`);
    for (const w of warnings) t.regex(w, /dma_fence_timestamp: .* never published the timestamp .* completed by the reader/);
  }
});

// Before the fix the names lock was a bare 0/1 word: a worker killed under it left it held for good, and every
// later intern of a new name spun forever (here: until ava's timeout).
test('the fence names lock of a worker killed holding it is taken over with a warning, not waited on forever', (t) => {
  const table = new FenceTable(createFenceTable({ slots: 16, names: 8 }));
  const alive = table.alive!;
  const dead = alive.register();
  Atomics.store(table.k!, K_NAMES_LOCK, dead | LOCK_WAITERS); // a worker took the lock (and someone waited)…
  alive.clear(dead); // …and was killed holding it: whoever reaps it clears its token
  table.owner = alive.register();
  const { result: id, warnings } = expectWarnings(/EOWNERDEAD/, 'names lock takeover', () => table.internNames('faults', 'dead-holder'));
  t.deepEqual(table.names(id), ['faults', 'dead-holder'], 'the intern completed');
  t.is(warnings.length, 1, 'the takeover is reported');
  t.is(Atomics.load(table.k!, K_NAMES_LOCK), 0, 'and the lock is free again');
});
