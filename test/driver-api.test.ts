/**
 * The dma-buf kernel API from driver workers against mainline's contract (issue 7): the reservation lock taken in
 * the caller's worker where dma-buf.c takes or asserts it, attach/map/unmap/detach/vmap lifetimes and their misuse
 * reported, driver WARN/BUG in the kernel's record, poll woken by the right queue only, and two user-written
 * drivers (test/fixtures/drv-exporter) exchanging buffers through processes that pass the fd.
 */
import test, { type ExecutionContext } from 'ava';
import { Machine, type Proc } from '../src/index.js';
import { delay, expectMachineLockdep, noUnexpectedLockdep, passFd, shutdownNoLeaks, waitParked } from './helpers/sim.js';
import { expectKernelWarnings } from '../src/testing.js';

const exporter = new URL('./fixtures/drv-exporter.js', import.meta.url);
const user = new URL('./fixtures/drv-user.js', import.meta.url);
const run = <T = unknown>(p: Proc, path: string, req: Record<string, unknown>): Promise<T> => p.call<T>('run', path, req);
const calls = (p: Proc, path = '/dev/testdrv'): Promise<Record<string, number>> => run<Record<string, number>>(p, path, { op: 'calls' });

/** testdrv (the exporter) and testimp (the importer), one process driving both. */
async function pair(m: Machine): Promise<Proc> {
  await m.loadDriver(exporter, { name: 'testdrv' });
  await m.loadDriver(exporter, { name: 'testimp' });
  return m.spawn(user, { name: 'user' });
}

/** A testdrv buffer in the process (fd), imported by testimp (id) and attached (att). */
async function imported(p: Proc, exp: Record<string, unknown> = {}, attach: Record<string, unknown> = {}): Promise<{ fd: number; id: number; att: number }> {
  const fd = await run<number>(p, '/dev/testdrv', { op: 'export', size: 8192, fill: 3, ...exp });
  const { id } = await run<{ id: number }>(p, '/dev/testimp', { op: 'get', fd });
  const att = await run<number>(p, '/dev/testimp', { op: 'attach', id, ...attach });
  return { fd, id, att };
}

/**
 * Boots a machine, runs `body`, then shuts down and checks the report: no leak, no oops, and no warning that was
 * not expected (every WARN a test provokes is inside an expectKernelWarnings window).
 */
async function checked(t: ExecutionContext, body: (m: Machine) => Promise<void>): Promise<void> {
  const m = await Machine.boot();
  try {
    await body(m);
  } finally {
    const r = await shutdownNoLeaks(t, m);
    t.deepEqual(
      r.warnings.filter((w) => !w.expected).map((w) => w.message),
      [],
      'no unexpected warning',
    );
  }
}

/** The errno code an answer carries, or 'ok'. */
const errOf = (v: unknown): string => (typeof v === 'object' && v !== null && 'err' in v ? (v as { err: string }).err : 'ok');

test('map/unmap run the exporter under the importer\'s reservation lock: the _unlocked variants take it, the locked ones assert it', async (t) => {
  await checked(t, async (m) => {
    const p = await pair(m);
    const { id, att } = await imported(p);
    // map_attachment_unlocked takes the lock in the importer's worker: the exporter's map sees it held, by another worker.
    const a = await run<{ id: number }>(p, '/dev/testimp', { op: 'map', att, dir: 1 });
    // The locked variant inside the importer's own dma_resv_lock/unlock: the same.
    const b = await run<{ id: number }>(p, '/dev/testimp', { op: 'map', att, dir: 1, locked: true });
    t.like(await calls(p), { map: 2, 'map-resv': 2 });
    // Without the lock: dma_resv_assert_held WARNs (the driver's WARN, in the kernel's record) and the call goes on.
    const w = await expectKernelWarnings(m, /dma_resv_assert_held/, 'map and unmap without the reservation lock');
    const c = await run<{ id: number }>(p, '/dev/testimp', { op: 'map', att, dir: 1, nolock: true });
    await run(p, '/dev/testimp', { op: 'unmap', map: c.id, dir: 1, nolock: true });
    const warned = await w.end();
    t.is(warned.length, 2);
    t.regex(warned[0]!, /^driver testimp: dma_buf_map_attachment: dma_resv_assert_held\(dmabuf->resv\)/);
    t.regex(warned[1]!, /^driver testimp: dma_buf_unmap_attachment: dma_resv_assert_held/);
    t.like(await calls(p), { map: 3, 'map-resv': 2, unmap: 1 });
    t.is((await calls(p))['unmap-resv'], undefined);
    await run(p, '/dev/testimp', { op: 'unmap', map: a.id, dir: 1 });
    await run(p, '/dev/testimp', { op: 'unmap', map: b.id, dir: 1 });
    t.like(await calls(p), { unmap: 3, 'unmap-resv': 2 });
    await run(p, '/dev/testimp', { op: 'detach', att });
    await run(p, '/dev/testimp', { op: 'put', id });
  });
});

test('attach: the exporter\'s attach under dmabuf->lock; a dynamic exporter\'s pin and the cached mapping under the reservation lock; detach unmaps it under the lock too', async (t) => {
  await checked(t, async (m) => {
    const p = await pair(m);
    // Static importer, dynamic exporter: pinned and mapped at attach (mainline locks the resv around both).
    const { id, att } = await imported(p, { dynamic: true });
    t.like(await calls(p), { attach: 1, 'attach-buflock': 1, pin: 1, 'pin-resv': 1, map: 1, 'map-resv': 1 });
    t.is((await calls(p))['attach-resv'], undefined, 'the exporter\'s attach runs without the reservation lock');
    // The cached table comes back without the exporter.
    await run(p, '/dev/testimp', { op: 'map', att, dir: 0 });
    t.like(await calls(p), { map: 1 });
    await run(p, '/dev/testimp', { op: 'detach', att });
    t.like(await calls(p), { unmap: 1, 'unmap-resv': 1, unpin: 1, 'unpin-resv': 1, detach: 1 });
    // A dynamic importer of a static exporter: the core maps at attach, under the lock; detach unmaps it.
    const fd2 = await run<number>(p, '/dev/testdrv', { op: 'export', size: 4096 });
    const g2 = await run<{ id: number }>(p, '/dev/testimp', { op: 'get', fd: fd2 });
    const att2 = await run<number>(p, '/dev/testimp', { op: 'attach', id: g2.id, dynamic: true });
    t.like(await calls(p), { map: 2, 'map-resv': 2 });
    await run(p, '/dev/testimp', { op: 'detach', att: att2 });
    t.like(await calls(p), { unmap: 2, 'unmap-resv': 2, detach: 2 });
    await run(p, '/dev/testimp', { op: 'put', id });
    await run(p, '/dev/testimp', { op: 'put', id: g2.id });
  });
});

test('dynamic importers: move_notify runs in the importer\'s worker under the exporter\'s reservation lock; a pinned buffer cannot move (EBUSY); pin/unpin/move_notify assert the lock', async (t) => {
  await checked(t, async (m) => {
    const p = await pair(m);
    const fd = await run<number>(p, '/dev/testdrv', { op: 'export', size: 4096, dynamic: true });
    const own = await run<{ id: number }>(p, '/dev/testdrv', { op: 'get', fd });
    const { id } = await run<{ id: number }>(p, '/dev/testimp', { op: 'get', fd });
    const att = await run<number>(p, '/dev/testimp', { op: 'attach', id, dynamic: true });
    t.is(await run(p, '/dev/testdrv', { op: 'move', id: own.id }), 0);
    t.is((await run<number[]>(p, '/dev/testimp', { op: 'moves' })).length, 1);
    t.like(await calls(p, '/dev/testimp'), { 'move_notify-resv': 1 });
    await run(p, '/dev/testimp', { op: 'pin', att });
    t.like(await calls(p), { pin: 1, 'pin-resv': 1 });
    t.deepEqual(await run(p, '/dev/testdrv', { op: 'move', id: own.id }), { err: 'EBUSY' }, 'pinned: it cannot move');
    await run(p, '/dev/testimp', { op: 'unpin', att });
    // A static importer of a dynamic exporter maps (and pins) at attach: it cannot move until that one detaches.
    const st = await run<number>(p, '/dev/testimp', { op: 'attach', id, dev: 'static0' });
    t.like(await calls(p), { pin: 2, map: 1 });
    t.deepEqual(await run(p, '/dev/testdrv', { op: 'move', id: own.id }), { err: 'EBUSY' });
    await run(p, '/dev/testimp', { op: 'detach', att: st });
    t.like(await calls(p), { unpin: 2, unmap: 1 });
    const w = await expectKernelWarnings(m, /dma_resv_assert_held/, 'pin, unpin, move_notify without the lock');
    await run(p, '/dev/testimp', { op: 'pin', att, nolock: true });
    await run(p, '/dev/testimp', { op: 'unpin', att, nolock: true });
    t.is(await run(p, '/dev/testdrv', { op: 'move', id: own.id, nolock: true }), 0);
    const warned = await w.end();
    t.deepEqual(
      warned.map((x) => /^driver (\w+): (dma_buf_\w+):/.exec(x)?.slice(1).join(' ')),
      ['testimp dma_buf_pin', 'testimp dma_buf_unpin', 'testdrv dma_buf_move_notify'],
    );
    await run(p, '/dev/testimp', { op: 'detach', att });
    await run(p, '/dev/testimp', { op: 'put', id });
    await run(p, '/dev/testdrv', { op: 'put', id: own.id });
  });
});

test('begin/end_cpu_access from a driver: the exporter\'s hooks run without the reservation lock; calling them with it held WARNs (might_lock)', async (t) => {
  await checked(t, async (m) => {
    const p = await pair(m);
    const { id, att } = await imported(p);
    await run(p, '/dev/testimp', { op: 'cpu', id, dir: 1 });
    await run(p, '/dev/testimp', { op: 'cpu', id, dir: 1, end: true });
    t.like(await calls(p), { begin_cpu_access: 1, end_cpu_access: 1 });
    t.is((await calls(p))['begin_cpu_access-resv'], undefined);
    const w = await expectKernelWarnings(m, /might_lock/, 'CPU access under the reservation lock');
    await run(p, '/dev/testimp', { op: 'cpu', id, dir: 2, locked: true });
    await run(p, '/dev/testimp', { op: 'cpu', id, dir: 2, end: true, locked: true });
    t.deepEqual(
      (await w.end()).map((x) => /^driver testimp: (dma_buf_\w+): might_lock/.exec(x)?.[1]),
      ['dma_buf_begin_cpu_access', 'dma_buf_end_cpu_access'],
    );
    await run(p, '/dev/testimp', { op: 'detach', att });
    await run(p, '/dev/testimp', { op: 'put', id });
  });
});

test('vmap counts under the buffer\'s lock (dmabuf->lock), taken in the caller\'s worker', async (t) => {
  await checked(t, async (m) => {
    const p = await pair(m);
    const { id, att } = await imported(p);
    const v = await run<{ id: number }>(p, '/dev/testimp', { op: 'vmap', id });
    t.like(await calls(p), { vmap: 1, 'vmap-buflock': 1 });
    t.is((await calls(p))['vmap-resv'], undefined);
    await run(p, '/dev/testimp', { op: 'vunmap', vmap: v.id });
    await run(p, '/dev/testimp', { op: 'detach', att });
    await run(p, '/dev/testimp', { op: 'put', id });
  });
});

test('lifetimes: use after detach, detach twice, unmap of a table never mapped are reported and change nothing', async (t) => {
  await checked(t, async (m) => {
    const p = await pair(m);
    const { id, att } = await imported(p);
    const att2 = await run<number>(p, '/dev/testimp', { op: 'attach', id, dev: 'other0' });
    const a = await run<{ id: number }>(p, '/dev/testimp', { op: 'map', att, dir: 1 });
    const w = await expectKernelWarnings(m, /never mapped|after dma_buf_detach|detached already|dmabuf != attach->dmabuf/, 'attachment lifetimes');
    // The table of `att` unmapped through `att2`: a WARN, the exporter not called.
    t.is(await run(p, '/dev/testimp', { op: 'unmap', map: a.id, att: att2, dir: 1, keep: true }), 0);
    t.is((await calls(p))['unmap'], undefined);
    t.is(await run(p, '/dev/testimp', { op: 'unmap', map: a.id, dir: 1 }), 0);
    t.like(await calls(p), { unmap: 1 });
    const other = await run<number>(p, '/dev/testdrv', { op: 'export', size: 4096 });
    const og = await run<{ id: number }>(p, '/dev/testimp', { op: 'get', fd: other });
    t.is(await run(p, '/dev/testimp', { op: 'detach', att, id: og.id, keep: true }), 0, 'detach from the wrong buffer: WARN, nothing');
    await run(p, '/dev/testimp', { op: 'put', id: og.id });
    await p.call('closeFd', other);
    t.deepEqual((await m.dmabufs()).find((b) => b.size === 8192)!.attachments, ['other0', 'testdev']);
    t.is(await run(p, '/dev/testimp', { op: 'detach', att, keep: true }), 0);
    t.deepEqual(await run(p, '/dev/testimp', { op: 'map', att, dir: 1 }), { err: 'EINVAL' }, 'map after detach');
    t.is(await run(p, '/dev/testimp', { op: 'detach', att }), 0, 'a second detach returns (void), reported');
    const warned = await w.end();
    t.is(warned.length, 4, warned.join('\n'));
    t.like(await calls(p), { map: 1, detach: 1 });
    t.deepEqual((await m.dmabufs())[0]!.attachments, ['other0']);
    await run(p, '/dev/testimp', { op: 'detach', att: att2 });
    await run(p, '/dev/testimp', { op: 'put', id });
  });
});

test('lifetimes: the last put while attached WARNs at release (the attachment is freed with it); the last put while vmapped is a reported BUG, refused', async (t) => {
  await checked(t, async (m) => {
    const p = await pair(m);
    const { fd, id, att } = await imported(p);
    const v = await run<{ id: number }>(p, '/dev/testimp', { op: 'vmap', id });
    await p.call('closeFd', fd);
    const w = await expectKernelWarnings(m, /while it is vmapped|attachments/, 'puts too early');
    t.deepEqual(await run(p, '/dev/testimp', { op: 'put', id, forget: false }), { err: 'EINVAL' });
    t.is((await m.dmabufs()).length, 1, 'the refused put released nothing');
    await run(p, '/dev/testimp', { op: 'vunmap', vmap: v.id });
    t.is(await run(p, '/dev/testimp', { op: 'put', id, forget: false }), 0);
    const warned = await w.end();
    t.is(warned.length, 2, warned.join('\n'));
    t.regex(warned[0]!, /BUG: dma_buf_put: the last reference of dma-buf ino 1 while it is vmapped \(1\)/);
    t.regex(warned[1]!, /dma_buf_release: WARN_ON\(!list_empty\(&dmabuf->attachments\)\)/);
    t.like(await calls(p), { release: 1 });
    // The importer detaches afterwards: the core forgets it without calling the exporter of a released buffer.
    t.is(await run(p, '/dev/testimp', { op: 'detach', att }), 0);
    t.is((await calls(p))['detach'], undefined);
  });
});

test('vunmap at count 0 or of another mapping is a reported BUG and refused (EINVAL): the count stays right', async (t) => {
  await checked(t, async (m) => {
    const p = await pair(m);
    const { id, att } = await imported(p);
    const v = await run<{ id: number }>(p, '/dev/testimp', { op: 'vmap', id });
    const w = await expectKernelWarnings(m, /BUG: dma_buf_vunmap/, 'vunmap misuse');
    t.deepEqual(await run(p, '/dev/testimp', { op: 'vunmap', vmap: v.id, bogus: true, keep: true }), { err: 'EINVAL' });
    t.is((await m.dmabufs())[0]!.vmappingCounter, 1);
    t.is(await run(p, '/dev/testimp', { op: 'vunmap', vmap: v.id, keep: true }), 0);
    t.deepEqual(await run(p, '/dev/testimp', { op: 'vunmap', vmap: v.id }), { err: 'EINVAL' }, 'count 0');
    const warned = await w.end();
    t.is(warned.length, 2);
    t.regex(warned[0]!, /unmapping a different mapping/);
    t.regex(warned[1]!, /is not vmapped/);
    t.like(await calls(p), { vmap: 1, vunmap: 1 });
    // A vmap holds no reference: the importer may put its own (the process's fd keeps the buffer) and vunmap after.
    const v2 = await run<{ id: number }>(p, '/dev/testimp', { op: 'vmap', id });
    await run(p, '/dev/testimp', { op: 'detach', att });
    await run(p, '/dev/testimp', { op: 'put', id, forget: false });
    t.is(await run(p, '/dev/testimp', { op: 'vunmap', vmap: v2.id }), 0);
    t.like(await calls(p), { vmap: 2, vunmap: 2 });
  });
});

test('dma_buf_get: a closed fd EBADF, a device fd EINVAL; dma_buf_fd honours only O_CLOEXEC of its flags', async (t) => {
  await checked(t, async (m) => {
    const p = await pair(m);
    await calls(p, '/dev/testimp'); // opens the device first: the closed fd's number must stay free
    const fd = await run<number>(p, '/dev/testdrv', { op: 'export', size: 4096 });
    await p.call('closeFd', fd);
    t.deepEqual(await run(p, '/dev/testimp', { op: 'get', fd }), { err: 'EBADF' });
    const dev = await p.call<number>('openDev', '/dev/testimp');
    t.deepEqual(await run(p, '/dev/testimp', { op: 'get', fd: dev }), { err: 'EINVAL' });
    const heap = await p.call<number>('alloc', 'system', 4096);
    const g = await run<{ id: number }>(p, '/dev/testimp', { op: 'get', fd: heap });
    await run(p, '/dev/testimp', { op: 'get-ref', id: g.id });
    // Bits other than O_CLOEXEC are ignored (get_unused_fd_flags); -1 has O_CLOEXEC among them.
    const plain = await run<number>(p, '/dev/testimp', { op: 'fd', id: g.id, flags: 0x7ff00000, keep: true });
    const cloexec = await run<number>(p, '/dev/testimp', { op: 'fd', id: g.id, flags: -1 });
    t.is(await p.call('fdFlags', plain), 0);
    t.is(await p.call('fdFlags', cloexec), 1);
    t.is((await m.dmabufs())[0]!.fileCount, 3, 'both references went to the fds');
    for (const f of [plain, cloexec, heap, dev]) await p.call('closeFd', f);
  });
});

test('driver WARNs and BUGs are in the kernel\'s record: with the calling process, expected or not, counted at shutdown', async (t) => {
  const m = await Machine.boot();
  let pid = 0;
  try {
    await m.loadDriver(exporter, { name: 'testdrv' });
    const p = await m.spawn(user, { name: 'user' });
    pid = p.pid;
    const w = await expectKernelWarnings(m, /kernel-expected/, 'a driver warning the test expects');
    t.is(await run(p, '/dev/testdrv', { op: 'warn', msg: 'kernel-expected one' }), 0);
    t.deepEqual(await w.end(), ['driver testdrv: kernel-expected one']);
    t.is(await run(p, '/dev/testdrv', { op: 'warn', msg: 'driver-expected', expected: true }), 0);
    t.is(await run(p, '/dev/testdrv', { op: 'warn', msg: 'nobody expected this' }), 0);
    t.deepEqual(await run(p, '/dev/testdrv', { op: 'crash', msg: 'boom' }), { err: 'EIO' });
    t.is(await run(p, '/dev/testdrv', { op: 'calls' }).then(errOf), 'ok', 'the driver goes on serving');
    // An exporter op that crashes while serving a process's mmap of the buffer: the oops names that process.
    const fd = await run<number>(p, '/dev/testdrv', { op: 'export', size: 4096 });
    await run(p, '/dev/testdrv', { op: 'knobs', set: { crashIn: 'mmap' } });
    t.deepEqual(await p.call('mapRead', fd, 4096), { err: 'EIO' });
    await run(p, '/dev/testdrv', { op: 'knobs', set: { crashIn: '' } });
    await p.call('closeFd', fd);
  } finally {
    const r = await m.shutdown({ quiet: true });
    t.deepEqual(r.leaks, []);
    noUnexpectedLockdep(t, r);
    t.deepEqual(
      r.warnings.map((w) => ({ pid: w.pid, expected: w.expected, message: w.message })),
      [
        { pid, expected: true, message: 'driver testdrv: kernel-expected one' },
        { pid, expected: true, message: 'driver testdrv: driver-side driver-expected' },
        { pid, expected: false, message: 'driver testdrv: nobody expected this' },
      ],
    );
    t.is(r.oopses.length, 2);
    t.like(r.oopses[0], { pid, expected: false });
    t.regex(r.oopses[0]!.message, /BUG: driver testdrv: BUG in upcall ioctl: TypeError: fixture crash: boom/);
    t.like(r.oopses[1], { pid, expected: false });
    t.regex(r.oopses[1]!.message, /BUG: driver testdrv: BUG in upcall exp_mmap: TypeError: fixture crash in mmap/);
  }
});

test('poll: a driver\'s wake re-polls only the files whose poll waited on that queue', async (t) => {
  await checked(t, async (m) => {
    await m.loadDriver(exporter, { name: 'testdrv' });
    const p = await m.spawn(user, { name: 'poller' });
    const q = await m.spawn(user, { name: 'waker' });
    const polling = p.call<number>('pollIn', '/dev/testdrv', 10_000);
    await waitParked(m, 1);
    // The poll's own first ask may still be on its way: wait until the driver's count of polls is steady.
    let before = -1;
    for (let n = (await calls(q))['poll'] ?? 0; n !== before; n = (await calls(q))['poll'] ?? 0) {
      before = n;
      await delay(50);
    }
    for (let i = 0; i < 5; i++) await run(q, '/dev/testdrv', { op: 'wake-other' });
    t.is((await calls(q))['poll'] ?? 0, before, 'a queue the poll did not wait on wakes nobody');
    await run(q, '/dev/testdrv', { op: 'readable', n: 1 });
    t.is(await polling, 1);
    t.true(((await calls(q))['poll'] ?? 0) > before);
  });
});

test('two user-written drivers exchange buffers both ways through processes passing the fd; bufinfo and dmabuf_dump name exporter and importer', async (t) => {
  await checked(t, async (m) => {
    await m.loadDriver(exporter, { name: 'testdrv' });
    await m.loadDriver(exporter, { name: 'testimp' });
    const a = await m.spawn(user, { name: 'appA' });
    const b = await m.spawn(user, { name: 'appB' });
    /** `from`'s driver exports into process `src`, which passes the fd to `dst`, whose driver imports and maps it. */
    const trade = async (src: Proc, from: string, dst: Proc, to: string, size: number, fill: number, dev: string) => {
      const fdSrc = await run<number>(src, `/dev/${from}`, { op: 'export', size, fill });
      const fdDst = await passFd(m, src, fdSrc, dst);
      const g = await run<{ id: number; expName: string }>(dst, `/dev/${to}`, { op: 'get', fd: fdDst });
      t.is(g.expName, from);
      const att = await run<number>(dst, `/dev/${to}`, { op: 'attach', id: g.id, dev });
      const map = await run<{ id: number; byte0: number }>(dst, `/dev/${to}`, { op: 'map', att, dir: 2 });
      t.is(map.byte0, fill, `${to} sees ${from}'s pages`);
      return { fdSrc, fdDst, id: g.id, att, map };
    };
    const one = await trade(a, 'testdrv', b, 'testimp', 8192, 0x11, 'imp-dev');
    const two = await trade(b, 'testimp', a, 'testdrv', 4096, 0x22, 'drv-dev');
    t.like(await calls(a, '/dev/testdrv'), { map: 1, 'map-resv': 1 });
    t.like(await calls(a, '/dev/testimp'), { map: 1, 'map-resv': 1 });

    const info = await m.debugfs.read('dma_buf/bufinfo');
    t.regex(info, /\n00004096\t00000002\t000[0-9a-f]{5}\t00000003\ttestimp\t00000002\t<none>\n\tAttached Devices:\n\tdrv-dev\nTotal 1 devices attached\n/);
    t.regex(info, /\n00008192\t00000002\t000[0-9a-f]{5}\t00000003\ttestdrv\t00000001\t<none>\n\tAttached Devices:\n\timp-dev\nTotal 1 devices attached\n/);
    const dump = await m.dmabufDump();
    t.regex(dump, /\n +<unknown> +8 kB +4 kB +2 +1 +testdrv\n/);
    t.regex(dump, /\n +<unknown> +4 kB +2 kB +2 +2 +testimp\n/);

    for (const [p, path, x] of [[b, '/dev/testimp', one], [a, '/dev/testdrv', two]] as const) {
      await run(p, path, { op: 'unmap', map: x.map.id, dir: 2 });
      await run(p, path, { op: 'detach', att: x.att });
      await run(p, path, { op: 'put', id: x.id });
    }
    for (const [p, f] of [[a, one.fdSrc], [b, one.fdDst], [b, two.fdSrc], [a, two.fdDst]] as const) await p.call('closeFd', f);
    t.like(await calls(a, '/dev/testdrv'), { release: 1 });
    t.like(await calls(a, '/dev/testimp'), { release: 1 });
  });
});

test('an importer killed while it holds the reservation lock in a map: the exporter takes the lock over (EOWNERDEAD, a WARN) and moves; nothing leaks', async (t) => {
  await checked(t, async (m) => {
    await m.loadDriver(exporter, { name: 'testdrv' });
    const imp = await m.loadDriver(exporter, { name: 'testimp' });
    const p = await m.spawn(user, { name: 'user' });
    const fd = await run<number>(p, '/dev/testdrv', { op: 'export', size: 4096, dynamic: true });
    const own = await run<{ id: number }>(p, '/dev/testdrv', { op: 'get', fd });
    const { id } = await run<{ id: number }>(p, '/dev/testimp', { op: 'get', fd });
    const att = await run<number>(p, '/dev/testimp', { op: 'attach', id, dynamic: true });
    await run(p, '/dev/testdrv', { op: 'knobs', set: { slowMapMs: 400 } });
    const q = await m.spawn(user, { name: 'q' });
    const qfd = await passFd(m, p, fd, q);
    void qfd;
    const mapping = run(p, '/dev/testimp', { op: 'map', att, dir: 1 }).catch(() => 'killed');
    await delay(150); // the importer holds the lock now; the exporter sits in its slow map
    const w = await expectKernelWarnings(m, /died holding the lock/, 'a dead importer\'s reservation lock');
    // lockdep reports the recovered lock as well (when it validates: the default under ava).
    await expectMachineLockdep(m, { kind: 'api', key: /^api:owner-died:/ }, 'a dead importer\'s reservation lock', async () => {
      await imp.kill();
      await mapping;
      await run(q, '/dev/testdrv', { op: 'knobs', set: { slowMapMs: 0 } });
      t.is(await run(q, '/dev/testdrv', { op: 'move', id: own.id }), 0);
    });
    t.is((await w.end()).length, 1);
    await run(q, '/dev/testdrv', { op: 'put', id: own.id });
  });
});
