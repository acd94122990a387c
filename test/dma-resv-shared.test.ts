/**
 * The reservation table across workers (src/fence/resv-table.ts, dma-resv.ts): drivers — here processes spawned
 * with { kernelFences: true }, bodies in test/fixtures/resv-driver.ts — reach any dma_resv by id; fences one worker
 * adds are seen and waited on in others and by the kernel; concurrent adders lose nothing while an unlocked reader
 * sees only consistent lists; a worker killed holding the lock, or inside add_fence / reserve_fences, leaves a
 * recoverable lock and a consistent list; ww_acquire_ctx backs off across workers; the broker never sleeps on a
 * reservation lock; finalising puts the fences; leaks name where a resv was made; a full table is a loud ENOMEM.
 */
import test, { type ExecutionContext } from 'ava';
import { Machine } from '../src/index.js';
import { DMA_RESV_USAGE_READ, DMA_RESV_USAGE_WRITE, dmaBufAddFence, dmaBufResvId, expectKernelWarnings, fenceTable, parkedCalls } from '../src/testing.js';
import { attachFenceTable, type FenceHandle } from '../src/fence/index.js';
import { dmaResvEntries, dmaResvFromId } from '../src/fence/dma-resv.js';
import { FAULT_RESV_ADD, FAULT_RESV_RESERVE } from '../src/fault-inject.js';
import { DMA_BUF_SYNC_WRITE, POLLIN, POLLOUT } from '../src/uapi/index.js';
import { E } from '../src/uapi/errno.js';
import { Mutex, beginExpectLockdepReports, endExpectLockdepReports } from '../src/locking/index.js';
import { bootChecked, delay, expectMachineLockdep, noUnexpectedLockdep, settlesWithin, shutdownNoLeaks, spawnSock, waitParked, type SockProc } from './helpers/sim.js';

const fixture = new URL('./fixtures/resv-driver.js', import.meta.url);
/** lockdep's report of a lock recovered from a killed holder (the tests below kill holders on purpose). */
const OWNER_DIED = { kind: 'api', key: /^api:owner-died:/ } as const;

/** A driver-playing process of the resv-driver fixture. */
const driver = (m: Machine, name: string): Promise<SockProc> => spawnSock(m, name, { kernelFences: true }, fixture);

async function reached(sab: SharedArrayBuffer, what: string, ms = 10_000): Promise<void> {
  const w = new Int32Array(sab);
  const r = Atomics.waitAsync(w, 0, 0, ms);
  if (r.async) await r.value;
  if (Atomics.load(w, 0) === 0) throw new Error(`${what} never reported`);
}

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, guard]);
  } finally {
    clearTimeout(timer);
  }
}

async function machine(t: ExecutionContext, body: (m: Machine) => Promise<void>, opts: Parameters<typeof Machine.boot>[0] = {}): Promise<void> {
  const m = await bootChecked(t, opts);
  try {
    await body(m);
  } finally {
    await shutdownNoLeaks(t, m);
  }
}

test.serial('a fence a driver adds to a buffer\'s resv is seen and waited on in another worker, by the kernel and by the main thread', (t) =>
  machine(t, async (m) => {
    const P = await spawnSock(m, 'app');
    const A = await driver(m, 'gpu');
    const B = await driver(m, 'display');
    const fd = await P.fx<number>('heapBuffer', 4096, 1);
    const id = await dmaBufResvId(m, P.proc, fd);
    const h = await A.proc.call<FenceHandle>('addFence', id, DMA_RESV_USAGE_WRITE);
    const started = new SharedArrayBuffer(4);
    const wait = B.proc.call<number>('waitResv', id, DMA_RESV_USAGE_WRITE, 10_000, started);
    await reached(started, 'waiter');
    t.false(await settlesWithin(wait, 30), 'the other worker waits for the fence');
    t.deepEqual(await P.r('poll1', fd, POLLIN | POLLOUT, 0), { ok: 0 }, 'the kernel sees it: not readable, not writable');
    t.regex(await m.debugfs.read('dma_buf/bufinfo'), /\twrite fence:resv-driver ring seq 1 unsignalled\n/);
    // The main thread, kernel-side through dmabuf-sim/testing, reaches the same object by id.
    attachFenceTable(await fenceTable(m));
    t.deepEqual(
      dmaResvEntries(dmaResvFromId(id)).map((e) => `${e.fence.driverName} ${e.usage}`),
      ['resv-driver 1'],
    );
    await A.proc.call('signalFence', h);
    t.true((await within(wait, 5000, 'the waiter')) > 0, 'woken by the signal in the first worker');
    t.deepEqual(await P.r('poll1', fd, POLLIN | POLLOUT, 0), { ok: POLLIN | POLLOUT });
    t.deepEqual((await m.dmabufs())[0]!.fences.map((f) => [f.driver, f.usage, f.signaled]), [['resv-driver', 'write', true]]);
    await P.fx('unmapFd', fd);
    await P.ok('close', fd);
    t.throws(() => dmaResvFromId(id), { message: /no live reservation object/ }, 'the buffer\'s release finalised it: the id names nothing');
  }));

test.serial('concurrent adders under the lock lose nothing; an unlocked reader in another worker only ever sees consistent lists', (t) =>
  machine(t, async (m) => {
    const ws = await Promise.all(['a0', 'a1', 'a2', 'reader'].map((n) => driver(m, n)));
    const R = ws[3]!;
    const id = await R.proc.call<number>('makeResv', 'shared by four');
    const go = new SharedArrayBuffer(4);
    const stop = new SharedArrayBuffer(4);
    const n = 40;
    const adds = ws.slice(0, 3).map((w) => w.proc.call<FenceHandle[]>('addMany', id, n, go));
    const reader = R.proc.call<{ snapshots: number; max: number; bad: string[] }>('readWhileAdding', id, stop);
    await delay(5);
    Atomics.store(new Int32Array(go), 0, 1);
    Atomics.notify(new Int32Array(go), 0);
    const handles = await within(Promise.all(adds), 20_000, 'the adders');
    Atomics.store(new Int32Array(stop), 0, 1);
    const r = await within(reader, 20_000, 'the reader');
    t.deepEqual(r.bad, [], 'every snapshot: live driver fences, no duplicate, never shrinking');
    t.true(r.snapshots > 0 && r.max <= 3 * n, `${r.snapshots} snapshots, largest ${r.max}`);
    const es = await R.proc.call<string[]>('entries', id);
    t.is(es.length, 3 * n, 'every fence of every adder is in the list');
    t.is(new Set(es).size, 3 * n, 'each once');
    for (const [i, w] of ws.slice(0, 3).entries()) for (const h of handles[i]!) await w.proc.call('signalFence', h);
    await R.proc.call('finiResv', id);
  }));

test.serial('a worker killed holding the lock: the next locker takes it over (-EOWNERDEAD) and the list is intact', (t) =>
  machine(t, async (m) => {
    const A = await driver(m, 'gpu');
    const H = await driver(m, 'holder');
    const B = await driver(m, 'next');
    const id = await A.proc.call<number>('makeResv');
    const h = await A.proc.call<FenceHandle>('addFence', id, DMA_RESV_USAGE_READ);
    const held = new SharedArrayBuffer(4);
    const hold = H.proc.call('holdLock', id, held).catch(() => 0);
    await reached(held, 'holder');
    const next = B.proc.call<{ ret: number; warnings: number; entries: string[]; added: FenceHandle }>('lockAfterKill', id);
    t.false(await settlesWithin(next, 30), 'the next locker waits while the holder lives');
    const { result: r, reports } = await expectMachineLockdep(m, OWNER_DIED, 'the next locker after the holder was killed', async () => {
      await H.proc.kill();
      await hold;
      return within(next, 5000, 'the next locker');
    });
    t.is(reports.length, m.lockdep.domain() ? 1 : 0, 'lockdep reports the recovered lock once (when it validates)');
    t.is(r.ret, -E.EOWNERDEAD);
    t.is(r.warnings, 1, 'the takeover is reported');
    t.is(r.entries.length, 2, 'the old fence and the new one');
    t.true(r.entries.every((e) => e.startsWith('resv-driver:') && e.endsWith(':live')));
    await A.proc.call('signalFence', h);
    await B.proc.call('signalFence', r.added);
    await A.proc.call('finiResv', id);
  }));

for (const [point, name] of [
  [FAULT_RESV_ADD, 'dma_resv_add_fence (entry stored, num_fences not raised)'],
  [FAULT_RESV_RESERVE, 'dma_resv_reserve_fences (new list filled, not published)'],
] as const) {
  test.serial(`a worker killed inside ${name} leaves a consistent list`, (t) =>
    machine(t, async (m) => {
      const A = await driver(m, 'gpu');
      const K = await driver(m, 'victim');
      const B = await driver(m, 'next');
      const id = await A.proc.call<number>('makeResv');
      const h = await A.proc.call<FenceHandle>('addFence', id, DMA_RESV_USAGE_READ);
      const at = new SharedArrayBuffer(12);
      const stopped = K.proc.call('addStopped', id, DMA_RESV_USAGE_WRITE, point, at).catch(() => 0);
      await reached(at, 'the fault point');
      const w = new Int32Array(at);
      const lost: FenceHandle = { index: w[1]!, gen: w[2]! };
      await K.proc.kill();
      await stopped;
      const { result: r } = await expectMachineLockdep(m, OWNER_DIED, `the next locker after a kill inside ${name.replace(/ .*/, '')}`, () =>
        within(B.proc.call<{ ret: number; warnings: number; entries: string[]; added: FenceHandle }>('lockAfterKill', id), 5000, 'the next locker'),
      );
      t.is(r.ret, -E.EOWNERDEAD);
      t.is(r.entries.length, 2, 'the first fence and the next locker\'s: the half-added one never appears');
      t.true(r.entries.every((e) => e.endsWith(':live')));
      // What the victim held dies with it, as any worker's own references: its fence (and, killed after add's get,
      // the list's would-be reference) — a leak, never a corrupt list. Cleaned up here so the machine ends clean.
      const refs = point === FAULT_RESV_ADD ? 2 : 1;
      t.is(await A.proc.call<number>('fenceRefcount', lost), refs);
      await A.proc.call('putFence', lost, refs);
      await A.proc.call('signalFence', h);
      await B.proc.call('signalFence', r.added);
      await A.proc.call('finiResv', id);
    }));
}

test.serial('ww_acquire_ctx across workers: an ABBA over two reservation objects backs off with -EDEADLK and both transactions finish (lockdep: nothing to report)', (t) =>
  machine(
    t,
    async (m) => {
      const A = await driver(m, 'dev1');
      const B = await driver(m, 'dev2');
      const x = await A.proc.call<number>('makeResv');
      const y = await A.proc.call<number>('makeResv');
      const sync = new SharedArrayBuffer(8);
      const [ra, rb] = await within(
        Promise.all([A.proc.call<{ backoffs: number; handles: FenceHandle[] }>('wwPair', x, y, sync, 0), B.proc.call<{ backoffs: number; handles: FenceHandle[] }>('wwPair', y, x, sync, 1)]),
        10_000,
        'the two transactions',
      );
      // Wait-Die: only the younger context ever backs off (maybe twice: after lock_slow it may meet the older one's
      // second lock still held); the older one only waits.
      t.true(Math.min(ra.backoffs, rb.backoffs) === 0 && ra.backoffs + rb.backoffs >= 1, `backoffs ${ra.backoffs} and ${rb.backoffs}`);
      t.is((await A.proc.call<string[]>('entries', x)).length, 2);
      t.is((await A.proc.call<string[]>('entries', y)).length, 2);
      t.deepEqual(m.lockdep.reports().map((r) => r.key), [], 'same-class locks under one context in any order are fine');
      for (const h of ra.handles) await A.proc.call('signalFence', h);
      for (const h of rb.handles) await B.proc.call('signalFence', h);
      await A.proc.call('finiResv', x);
      await A.proc.call('finiResv', y);
    },
    { lockdep: true },
  ));

test.serial('lockdep checks reservation locks across workers: resv → device lock in one driver, device lock → resv in another is reported, nothing blocks', (t) =>
  machine(
    t,
    async (m) => {
      const A = await driver(m, 'dev1');
      const B = await driver(m, 'dev2');
      const id = await A.proc.call<number>('makeResv');
      const exp = beginExpectLockdepReports(m.lockdep.domain()!, { kind: 'circular' }, 'reservation lock vs a device lock');
      try {
        const dev = new Mutex('dev_lock');
        await A.proc.call('lockPair', id, dev.handle, true);
        await B.proc.call('lockPair', id, dev.handle, false);
        const reps = endExpectLockdepReports(exp);
        t.is(reps.length, 1);
        t.deepEqual([...reps[0]!.locks].sort(), ['dev_lock', 'reservation_ww_class_mutex']);
      } finally {
        endExpectLockdepReports(exp);
      }
      await A.proc.call('finiResv', id);
    },
    { lockdep: true },
  ));

test.serial('the broker never sleeps on a reservation lock a driver holds: poll and bufinfo answer, IMPORT_SYNC_FILE and the add-fence hook wait parked', (t) =>
  machine(t, async (m) => {
    const P = await spawnSock(m, 'app');
    const A = await driver(m, 'gpu');
    const fd = await P.fx<number>('heapBuffer', 4096, 1);
    const id = await dmaBufResvId(m, P.proc, fd);
    const h = await A.proc.call<FenceHandle>('addFence', id, DMA_RESV_USAGE_READ);
    const H = await driver(m, 'holder');
    const held = new SharedArrayBuffer(4);
    const release = new SharedArrayBuffer(4);
    const hold = H.proc.call('holdLockUntil', id, held, release);
    await reached(held, 'holder');
    t.deepEqual(await within(P.r('poll1', fd, POLLIN | POLLOUT, 0), 2000, 'poll'), { ok: POLLIN }, 'poll: the unlocked walk (a READ fence: readable, not writable)');
    t.regex(await within(m.debugfs.read('dma_buf/bufinfo'), 2000, 'bufinfo'), /\tread fence:resv-driver ring seq 1 unsignalled\n/);
    const tl = await P.ok<number>('swSyncTimelineCreate');
    const sf = await P.ok<number>('swSyncFenceCreate', tl, 'import', 1);
    const before = await parkedCalls(m);
    const imp = P.ok('dmaBufImportSyncFile', fd, DMA_BUF_SYNC_WRITE, sf);
    await waitParked(m, before + 1);
    const hook = dmaBufAddFence(m, P.proc, fd, h, DMA_RESV_USAGE_READ);
    t.false(await settlesWithin(Promise.race([imp, hook]), 30), 'both wait for the lock');
    const Q = await spawnSock(m, 'bystander');
    t.is(await within(Q.ok<number>('getpid'), 2000, 'a bystander\'s syscall'), Q.pid, 'the kernel keeps serving');
    Atomics.store(new Int32Array(release), 0, 1);
    Atomics.notify(new Int32Array(release), 0);
    await hold;
    t.is(await within(imp, 5000, 'IMPORT_SYNC_FILE'), 0);
    await within(hook, 5000, 'the add-fence hook');
    t.deepEqual((await m.dmabufs())[0]!.fences.map((f) => `${f.driver} ${f.usage}`).sort(), ['resv-driver read', 'sw_sync write']);
    await P.ok('swSyncTimelineInc', tl, 1);
    await A.proc.call('signalFence', h);
    await P.fx('unmapFd', fd);
    for (const x of [sf, tl, fd]) await P.ok('close', x);
  }));

test.serial('a driver killed holding a buffer\'s lock while the kernel waits for it: the broker takes it over (reported) and the call completes', (t) =>
  machine(t, async (m) => {
    const P = await spawnSock(m, 'app');
    const fd = await P.fx<number>('heapBuffer', 4096, 1);
    const id = await dmaBufResvId(m, P.proc, fd);
    const H = await driver(m, 'holder');
    const held = new SharedArrayBuffer(4);
    const hold = H.proc.call('holdLock', id, held).catch(() => 0);
    await reached(held, 'holder');
    const tl = await P.ok<number>('swSyncTimelineCreate');
    const sf = await P.ok<number>('swSyncFenceCreate', tl, 'import', 1);
    const before = await parkedCalls(m);
    const imp = P.ok('dmaBufImportSyncFile', fd, DMA_BUF_SYNC_WRITE, sf);
    await waitParked(m, before + 1);
    const expecting = await expectKernelWarnings(m, /EOWNERDEAD/, 'the broker taking over a dead driver\'s resv lock');
    await expectMachineLockdep(m, OWNER_DIED, 'the broker taking over a dead driver\'s resv lock', async () => {
      await H.proc.kill();
      await hold;
      t.is(await within(imp, 5000, 'IMPORT_SYNC_FILE'), 0);
    });
    t.is((await expecting.end()).length, 1, 'the takeover is reported once');
    await P.ok('swSyncTimelineInc', tl, 1);
    await P.fx('unmapFd', fd);
    for (const x of [sf, tl, fd]) await P.ok('close', x);
  }));

test.serial('finalising a reservation object puts its fences, whichever worker finalises it', (t) =>
  machine(t, async (m) => {
    const A = await driver(m, 'gpu');
    const B = await driver(m, 'owner');
    const id = await B.proc.call<number>('makeResv');
    const h = await A.proc.call<FenceHandle>('addFence', id, DMA_RESV_USAGE_WRITE);
    t.is(await A.proc.call<number>('fenceRefcount', h), 2, 'the driver\'s and the list\'s');
    await B.proc.call('finiResv', id);
    t.is(await A.proc.call<number>('fenceRefcount', h), 1, 'the list\'s reference was put');
    await A.proc.call('signalFence', h);
  }));

test.serial('leak reports name where a reservation object was made', async (t) => {
  const m = await bootChecked(t);
  const K = await driver(m, 'leaky');
  await K.proc.call('makeResv');
  await K.proc.call('makeResv', 'my gem object');
  await K.proc.kill();
  const r = await m.shutdown({ quiet: true });
  noUnexpectedLockdep(t, r);
  const resvs = r.leaks.filter((l) => l.kind === 'dma_resv');
  t.is(resvs.length, 2);
  t.regex(resvs[0]!.createdBy.comm, /^leaky \(pid \d+\) resv-driver\.[jt]s:\d+$/, 'the worker and the line of the dma_resv_init call');
  t.is(resvs[1]!.createdBy.comm, 'my gem object');
  t.regex(resvs[0]!.what, /^dma_resv \d+ 0 fence\(s\)$/);
});

test.serial('a full table is ENOMEM with a message naming Machine.boot\'s resv option; a full list arena too', (t) =>
  machine(
    t,
    async (m) => {
      const A = await driver(m, 'gpu');
      const full = await A.proc.call<{ made: number; message: string; code: string }>('fillTable');
      t.is(full.made, 4);
      t.is(full.code, 'ENOMEM');
      t.regex(full.message, /dma_resv table full: all 4 reservation objects in use.*Machine\.boot\(\{ resv: \{ objects \} \}\)/);
      const P = await spawnSock(m, 'app');
      const fds: number[] = [];
      for (let i = 0; i < 4; i++) fds.push(await P.fx<number>('heapBuffer', 4096, i));
      t.is(await P.fxErr('heapBuffer', 4096, 9), 'ENOMEM', 'a dma-buf whose resv does not fit: ENOMEM, nothing leaked');
      const last = fds.pop()!;
      await P.fx('unmapFd', last);
      await P.ok('close', last);
      const id = await A.proc.call<number>('makeResv');
      t.is(await A.proc.call<number>('reserve', id, 1000), -E.ENOMEM, 'a list larger than the arena');
      t.is(await A.proc.call<number>('reserve', id, 1), 0);
      await A.proc.call('finiResv', id);
      for (const fd of fds) {
        await P.fx('unmapFd', fd);
        await P.ok('close', fd);
      }
    },
    { resv: { objects: 4, listBytes: 4096 } },
  ));

test('Machine.boot checks the resv option like the others', async (t) => {
  await t.throwsAsync(Machine.boot({ resv: { objects: 0 } }), { code: 'ERR_OUT_OF_RANGE', message: /options\.resv\.objects/ });
  await t.throwsAsync(Machine.boot({ resv: { listBytes: 1.5 } }), { code: 'ERR_OUT_OF_RANGE', message: /options\.resv\.listBytes/ });
  await t.throwsAsync(Machine.boot({ resv: { slots: 3 } as never }), { message: /options\.resv/ });
});
