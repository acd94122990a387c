/**
 * Implicit synchronisation on dma-bufs: the reservation object's fences as poll(), DMA_BUF_IOCTL_SYNC START,
 * EXPORT/IMPORT_SYNC_FILE and debugfs bufinfo see them — usage classes and their asymmetries, the poll callback
 * slots and the file reference they hold, waits that park a syscall (never the broker) until another worker
 * signals, the in-broker async kernel wait, and the kernel-side selftests.
 *
 * Fences come from a process playing a GPU (test/fixtures/dmabuf-sync.ts: it creates fences in the machine's
 * fence table and signals them) and reach a buffer through the test/driver hook dmaBufAddFence (dmabuf-sim/testing), or
 * through IMPORT_SYNC_FILE.
 */
import test, { type ExecutionContext } from 'ava';
import { uapi, type Machine, type Proc } from '../src/index.js';
import type { CreatedFence } from './fixtures/dmabuf-sync.js';
import type { Outcome } from './fixtures/dmabuf.js';
import { bootFor, delay, passFd, settlesWithin, shutdownClean } from './helpers/sim.js';
import * as testing from '../src/testing.js';
import { DMA_FROM_DEVICE, dmaBufAddFence, dmaBufCpuAccessAsync, dmaBufMapAsync, kunit, type DmaResvUsage } from '../src/testing.js';

const fixture = new URL('./fixtures/dmabuf-sync.js', import.meta.url);
const {
  POLLIN: IN,
  POLLOUT: OUT,
  DMA_BUF_SYNC_READ: READ,
  DMA_BUF_SYNC_WRITE: WRITE,
  DMA_BUF_SYNC_RW: RW,
} = uapi;
const { DMA_RESV_USAGE_KERNEL: U_KERNEL, DMA_RESV_USAGE_WRITE: U_WRITE, DMA_RESV_USAGE_READ: U_READ, DMA_RESV_USAGE_BOOKKEEP: U_BOOKKEEP } = testing;
const HEADER = '\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n';
const NO_DEVICES = '\tAttached Devices:\nTotal 0 devices attached\n\n';
const ok = (v: number = 0): Outcome => ({ ok: v });
const err = (code: string): Outcome => ({ code });

interface Sync {
  outcome: Outcome;
  ms: number;
}

/** Polls the control plane until `cond` holds (fence callbacks run in the broker, asynchronously). */
async function waitFor(t: ExecutionContext, what: string, cond: () => Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) {
      t.fail(`timed out waiting for ${what}`);
      return;
    }
    await delay(5);
  }
}

/** A GPU-like process: makes fences and puts them on buffers of other processes through the kernel hook. */
class Gpu {
  constructor(
    readonly m: Machine,
    readonly proc: Proc,
  ) {}
  static async spawn(m: Machine, name = 'gpu'): Promise<Gpu> {
    return new Gpu(m, await m.spawn(fixture, { name, kernelFences: true }));
  }
  create(driver: string, timeline: string, seqno: number, sameContextAs?: CreatedFence): Promise<CreatedFence> {
    return this.proc.call<CreatedFence>('fenceCreate', driver, timeline, seqno, sameContextAs?.id);
  }
  /** Creates a fence and adds it to the buffer behind (pid, fd) with `usage`. */
  async add(proc: Proc, fd: number, usage: DmaResvUsage, timeline = 'ring', seqno = 1, driver = 'gpu'): Promise<CreatedFence> {
    const f = await this.create(driver, timeline, seqno);
    await dmaBufAddFence(this.m, proc, fd, f.handle, usage);
    return f;
  }
  signal(f: CreatedFence): Promise<number> {
    return this.proc.call<number>('fenceSignal', f.id);
  }
  put(...fs: CreatedFence[]): Promise<void[]> {
    return Promise.all(fs.map((f) => this.proc.call<void>('fencePut', f.id)));
  }
}

// ---- poll ----------------------------------------------------------------------------------------------------------

test.serial('poll: EPOLLIN waits for WRITE/KERNEL fences, EPOLLOUT for READ ones too, BOOKKEEP for nothing', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'poller' });
  const gpu = await Gpu.spawn(m);
  const fd = await p.call<number>('alloc', 'system', 4096);
  const poll0 = (ev: number): Promise<number> => p.call<number>('poll', fd, ev);

  const bk = await gpu.add(p, fd, U_BOOKKEEP, 'bookkeep');
  t.is(await poll0(IN | OUT), IN | OUT, 'a BOOKKEEP fence is invisible to poll');
  t.like((await m.dmabufs())[0], { fileCount: 1, pollActive: { in: 0, out: 0 } }, 'no slot stays armed when ready');

  const rd = await gpu.add(p, fd, U_READ, 'reader');
  t.is(await poll0(IN), IN, 'EPOLLIN ignores READ fences');
  t.is(await poll0(OUT), 0, 'EPOLLOUT waits for them');
  t.like((await m.dmabufs())[0], { fileCount: 2, pollActive: { in: 0, out: OUT } }, 'the armed EPOLLOUT slot holds a file reference');
  t.is(await poll0(IN | OUT), IN, 'both asked: only IN');

  const pending = p.call<{ revents: number }>('pollWait', fd, OUT, -1);
  t.false(await settlesWithin(pending, 100), 'a blocking poll for EPOLLOUT sleeps');
  t.is(await gpu.signal(rd), 0);
  t.is((await pending).revents, OUT, 'the READ fence signalled by another process wakes it');
  t.like((await m.dmabufs())[0], { fileCount: 1, pollActive: { in: 0, out: 0 } }, 'slot released with its reference');

  const wr = await gpu.add(p, fd, U_WRITE, 'writer');
  t.is(await poll0(IN | OUT), 0, 'a WRITE fence blocks both directions');
  const both = p.call<{ revents: number }>('pollWait', fd, IN | OUT, 5000);
  t.false(await settlesWithin(both, 50));
  await gpu.signal(wr);
  t.is((await both).revents, IN | OUT, 'one signal frees both slots before the poller looks again');

  const kf = await gpu.add(p, fd, U_KERNEL, 'kernel');
  t.is(await poll0(IN | OUT), 0, 'a KERNEL fence blocks both directions');
  await gpu.signal(kf);
  await waitFor(t, 'slots released', async () => (await m.dmabufs())[0]!.fileCount === 1);
  t.is(await poll0(IN | OUT), IN | OUT);
  t.is(await poll0(uapi.POLLPRI), 0, 'neither IN nor OUT asked: 0, nothing armed');
  t.like((await m.dmabufs())[0], { fileCount: 1, pollActive: { in: 0, out: 0 } });

  await gpu.signal(bk);
  await gpu.put(bk, rd, wr, kf);
  await p.call('close', fd);
  await shutdownClean(t, m);
});

test.serial('poll: one callback slot per direction, watching one fence; busy slot means "not ready"', async (t) => {
  const m = await bootFor(t);
  const owner = await m.spawn(fixture, { name: 'owner' });
  const q1 = await m.spawn(fixture, { name: 'q1' });
  const q2 = await m.spawn(fixture, { name: 'q2' });
  const gpu = await Gpu.spawn(m);
  const fd = await owner.call<number>('alloc', 'system', 4096);
  const fd1 = await passFd(m, owner, fd, q1);
  const fd2 = await passFd(m, owner, fd, q2);

  const f1 = await gpu.add(owner, fd, U_WRITE, 'gfx', 1);
  const w1 = q1.call<{ revents: number }>('pollWait', fd1, IN, -1);
  const w2 = q2.call<{ revents: number }>('pollWait', fd2, IN, -1);
  // Wait until both polls are parked in the kernel (observable state, not a delay: a loaded machine may take long).
  await waitFor(t, 'both pollers to park', async () => (await testing.parkedCalls(m)) === 2);
  t.false(await settlesWithin(Promise.race([w1, w2]), 20), 'both pollers sleep');
  // Each sleeping poller's poll table holds the file too (__pollwait's get_file), as in Linux.
  t.like((await m.dmabufs())[0], { fileCount: 6, pollActive: { in: IN, out: 0 } }, '3 fds + 2 poll-table references + ONE slot reference');

  // A later fence of the same timeline, already signaled, replaces f1 in the reservation object: nothing there is
  // pending any more, but the slot still watches f1 — so the direction stays "not ready" until f1 signals.
  const f2 = await gpu.create('gpu', 'gfx', 2, f1);
  await gpu.signal(f2);
  await dmaBufAddFence(m, owner, fd, f2.handle, U_WRITE);
  const [b] = await m.dmabufs();
  t.deepEqual(b!.fences.map((f) => [f.usage, f.seqno, f.signaled]), [['write', 2n, true]], 'f1 replaced by f2');
  t.is(await owner.call('poll', fd, IN), 0, 'the busy slot reports not ready');
  t.is(await owner.call('poll', fd, OUT), OUT, 'the other direction has its own slot');
  t.false(await settlesWithin(Promise.race([w1, w2]), 50), 'the sleepers still sleep');

  await gpu.signal(f1);
  t.is((await w1).revents, IN, 'f1 signals: the one callback wakes every poller');
  t.is((await w2).revents, IN);
  t.is(await owner.call('poll', fd, IN), IN);
  t.like((await m.dmabufs())[0], { fileCount: 3, pollActive: { in: 0, out: 0 } });

  await gpu.put(f1, f2);
  for (const [pr, f] of [[owner, fd], [q1, fd1], [q2, fd2]] as const) await pr.call('close', f);
  await shutdownClean(t, m);
});

test.serial('poll: a pending poll callback keeps the buffer alive after every fd is closed (and after exit)', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'poller' });
  const gpu = await Gpu.spawn(m);
  const used = async (): Promise<number> => (await m.heaps()).find((h) => h.name === 'reserved')!.usedBytes;

  const fd = await p.call<number>('alloc', 'reserved', 8192);
  const f = await gpu.add(p, fd, U_WRITE, 'gfx');
  t.is(await p.call('poll', fd, IN), 0, 'poll with timeout 0 arms the slot and returns');
  t.deepEqual(await p.call('close', fd), ok());
  const [b] = await m.dmabufs();
  t.like(b, { fileCount: 1, pollActive: { in: IN, out: 0 } }, 'no fd, no mapping: only the callback holds it');
  t.regex(await m.debugfs.read('dma_buf/bufinfo'), /^00008192\t00000002\t00080007\t00000001\treserved\t00000001\t<none>\n\twrite fence:gpu gfx seq 1 unsignalled\n/m);
  t.is(await used(), 8192);
  await gpu.signal(f);
  await waitFor(t, 'the callback to drop the last reference', async () => (await m.dmabufs()).length === 0);
  t.is(await used(), 0, 'released: pages back in the pool');

  // The same through exit: the process dies inside a blocking poll; the armed slot outlives it.
  const q = await m.spawn(fixture, { name: 'dies-polling' });
  const fd2 = await q.call<number>('alloc', 'reserved', 4096);
  const g = await gpu.add(q, fd2, U_READ, 'copy');
  const parked = await testing.parkedCalls(m);
  const pending = q.call('pollWait', fd2, OUT, -1);
  // Killed once its poll is parked in the kernel (the slot armed), not after a blind delay: under load the call
  // may not have reached the kernel 50 ms later, and a kill before it arms leaves nothing to keep the buffer alive.
  await waitFor(t, 'the poll to park', async () => (await testing.parkedCalls(m)) > parked);
  t.false(await settlesWithin(pending, 0));
  await q.kill();
  t.like((await m.dmabufs())[0], { fileCount: 1, pollActive: { in: 0, out: OUT } }, 'alive after its process died');
  await gpu.signal(g);
  await waitFor(t, 'release after the signal', async () => (await m.dmabufs()).length === 0);
  t.is(await used(), 0);
  await gpu.put(f, g);
  await shutdownClean(t, m);
});

// ---- DMA_BUF_IOCTL_SYNC --------------------------------------------------------------------------------------------

test.serial('SYNC START blocks until another process signals, and the reader then sees the writer’s data', async (t) => {
  const m = await bootFor(t);
  // The writer is its own GPU (it creates and signals a fence): trusted with the kernel's fence state.
  const writer = await m.spawn(fixture, { name: 'writer', kernelFences: true });
  const reader = await m.spawn(fixture, { name: 'reader' });
  const fd = await writer.call<number>('alloc', 'system', 4096);
  const waddr = ((await writer.call<Outcome>('map', fd, 4096)) as { ok: number }).ok;
  const rfd = await passFd(m, writer, fd, reader);
  const raddr = ((await reader.call<Outcome>('map', rfd, 4096)) as { ok: number }).ok;

  // The writer (as its own GPU) queues a render into the buffer: a WRITE fence it will signal when done.
  const render = await writer.call<CreatedFence>('fenceCreate', 'gpu', 'render', 1);
  await dmaBufAddFence(m, writer, fd, render.handle, U_WRITE);
  const read = reader.call<number[]>('readSynced', rfd, raddr, 100, 4);
  t.false(await settlesWithin(read, 150), 'SYNC START READ sleeps on the WRITE fence');
  t.deepEqual((await m.dmabufs())[0]!.cpuSync.read, { start: 0, end: 0 }, 'a parked START is not counted yet');
  t.is(await writer.call('writeThenSignal', waddr, 100, [0xca, 0xfe, 0xba, 0xbe], render.id), 0);
  t.deepEqual(await read, [0xca, 0xfe, 0xba, 0xbe], 'woken after the signal, the reader sees the data');
  t.deepEqual((await m.dmabufs())[0]!.cpuSync.read, { start: 1, end: 1 });

  await writer.call('fencePut', render.id);
  await reader.call('unmap', raddr);
  await writer.call('unmap', waddr);
  await reader.call('close', rfd);
  await writer.call('close', fd);
  await shutdownClean(t, m);
});

test.serial('SYNC START: read waits for usage ≤ WRITE, write and rw for usage ≤ READ, BOOKKEEP never', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'cpu' });
  const gpu = await Gpu.spawn(m);
  const fd = await p.call<number>('alloc', 'system', 4096);
  const start = (flags: number): Promise<Sync> => p.call<Sync>('syncStart', fd, flags);

  const bk = await gpu.add(p, fd, U_BOOKKEEP, 'bookkeep');
  for (const f of [READ, WRITE, RW]) t.deepEqual((await start(f)).outcome, ok(), `BOOKKEEP does not block ${f}`);

  const rd = await gpu.add(p, fd, U_READ, 'reader');
  t.deepEqual((await start(READ)).outcome, ok(), 'a CPU read does not wait for other readers');
  const sw = start(WRITE);
  t.false(await settlesWithin(sw, 80), 'a CPU write waits for readers');
  await gpu.signal(rd);
  t.deepEqual((await sw).outcome, ok());
  const rd2 = await gpu.add(p, fd, U_READ, 'reader2');
  const srw = start(RW);
  t.false(await settlesWithin(srw, 80), 'so does a CPU read/write');
  await gpu.signal(rd2);
  t.deepEqual((await srw).outcome, ok());

  const wr = await gpu.add(p, fd, U_WRITE, 'writer');
  const s1 = start(READ);
  t.false(await settlesWithin(s1, 80), 'a CPU read waits for writers');
  await gpu.signal(wr);
  t.deepEqual((await s1).outcome, ok());

  const kf = await gpu.add(p, fd, U_KERNEL, 'kernel');
  const s2 = start(READ);
  t.false(await settlesWithin(s2, 80), 'and for KERNEL fences');
  await gpu.signal(kf);
  t.deepEqual((await s2).outcome, ok());

  const counts = (await m.dmabufs())[0]!.cpuSync;
  t.deepEqual(counts, { read: { start: 4, end: 0 }, write: { start: 2, end: 0 }, rw: { start: 2, end: 0 } });
  await gpu.signal(bk);
  await gpu.put(bk, rd, rd2, wr, kf);
  await p.call('close', fd);
  await shutdownClean(t, m);
});

test.serial('SYNC START parked when its process is killed: the fence callback is removed, nothing leaks', async (t) => {
  const m = await bootFor(t);
  const owner = await m.spawn(fixture, { name: 'owner' });
  const victim = await m.spawn(fixture, { name: 'victim' });
  const gpu = await Gpu.spawn(m);
  const fd = await owner.call<number>('alloc', 'system', 4096);
  const vfd = await passFd(m, owner, fd, victim);
  const f = await gpu.add(owner, fd, U_WRITE, 'gfx');
  const s = victim.call<Sync>('syncStart', vfd, RW);
  t.false(await settlesWithin(s, 80));
  await victim.kill();
  t.like((await m.dmabufs())[0], { fileCount: 1 }, 'the victim’s fd is gone');
  await gpu.signal(f);
  await gpu.put(f);
  await owner.call('close', fd);
  t.deepEqual(await m.dmabufs(), []);
  await shutdownClean(t, m);
});

// ---- the in-broker kernel wait ---------------------------------------------------------------------------------------

test.serial('an in-broker kernel caller waits for fences asynchronously while the broker keeps serving', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'p' });
  const gpu = await Gpu.spawn(m);
  const fd = await p.call<number>('alloc', 'system', 4096);
  const rd = await gpu.add(p, fd, U_READ, 'reader');
  await dmaBufCpuAccessAsync(m, p, fd, DMA_FROM_DEVICE);
  t.pass('a kernel CPU read does not wait for a READ fence');
  const wr = await gpu.add(p, fd, U_WRITE, 'writer');
  const access = dmaBufCpuAccessAsync(m, p, fd, DMA_FROM_DEVICE);
  t.false(await settlesWithin(access, 100), 'the kernel caller waits for the WRITE fence');
  t.like((await m.dmabufs())[0], { fileCount: 2 }, 'the kernel caller holds a reference across its wait');
  t.is(await p.call('poll', fd, IN), 0, 'syscalls are served meanwhile (the broker is not blocked)');
  await gpu.signal(wr);
  await access;
  t.pass('done once another process signalled');
  t.is(await dmaBufMapAsync(m, p, fd, 'gpu.0'), 4096, 'a static importer’s map does not wait for READ fences');
  await gpu.signal(rd);
  await gpu.put(rd, wr);
  await t.throwsAsync(dmaBufCpuAccessAsync(m, p, 0, DMA_FROM_DEVICE), { message: /EINVAL/ }, 'not a dma-buf');

  // A static importer's map waits for KERNEL fences (the exporter's moves/clears), the same way.
  const kf = await gpu.add(p, fd, U_KERNEL, 'clear');
  const mapped = dmaBufMapAsync(m, p, fd, 'gpu.0');
  t.false(await settlesWithin(mapped, 100), 'a KERNEL fence does');
  t.regex(await m.debugfs.read('dma_buf/bufinfo'), /\tkernel fence:gpu clear seq 1 unsignalled\n\tAttached Devices:\n\tgpu\.0\n/, 'attached, waiting');
  await gpu.signal(kf);
  t.is(await mapped, 4096);
  await gpu.put(kf);
  await p.call('close', fd);
  await shutdownClean(t, m);
});

// ---- the reservation object --------------------------------------------------------------------------------------

test.serial('re-adding a fence of the same context: weaker usage keeps two entries, stronger usage replaces', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'p' });
  const gpu = await Gpu.spawn(m);
  const fd = await p.call<number>('alloc', 'system', 4096);
  const entries = async (): Promise<[string, bigint][]> => (await m.dmabufs())[0]!.fences.map((f) => [f.usage, f.seqno]);
  const f1 = await gpu.create('gpu', 'tl', 1);
  await dmaBufAddFence(m, p, fd, f1.handle, U_READ);
  const f2 = await gpu.create('gpu', 'tl', 2, f1);
  await dmaBufAddFence(m, p, fd, f2.handle, U_WRITE);
  t.deepEqual(await entries(), [['write', 2n]], 'stronger (WRITE over READ): replaced');
  const f3 = await gpu.create('gpu', 'tl', 3, f1);
  await dmaBufAddFence(m, p, fd, f3.handle, U_READ);
  t.deepEqual(await entries(), [['write', 2n], ['read', 3n]], 'weaker (READ after WRITE): two entries');
  t.is(
    await m.debugfs.read('dma_buf/bufinfo'),
    HEADER +
      '00004096\t00000002\t00080007\t00000001\tsystem\t00000001\t<none>\n' +
      '\twrite fence:gpu tl seq 2 unsignalled\n\tread fence:gpu tl seq 3 unsignalled\n' +
      NO_DEVICES +
      '\nTotal 1 objects, 4096 bytes\n',
  );
  // Signaled entries do not stay forever: reserving a slot after an unlock (which forgets unused reserved slots,
  // CONFIG_DEBUG_MUTEXES-style) grows the list, and growing drops every signaled fence.
  await gpu.signal(f2);
  const other = await gpu.add(p, fd, U_BOOKKEEP, 'other');
  t.deepEqual(await entries(), [['read', 3n], ['bookkeep', 1n]], 'the signaled entry was dropped');
  await t.throwsAsync(dmaBufAddFence(m, p, fd, f3.handle, 4 as DmaResvUsage), { message: /EINVAL/ });
  await t.throwsAsync(dmaBufAddFence(m, p, 77, f3.handle, U_READ), { message: /EBADF/ });
  for (const f of [f1, f3, other]) await gpu.signal(f);
  await gpu.put(f1, f2, f3, other);
  await p.call('close', fd);
  await shutdownClean(t, m);
});

test.serial('bufinfo golden: per-fence lines as dma_resv_describe prints them, BOOKKEEP left out', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'golden' });
  const gpu = await Gpu.spawn(m);
  const a = await p.call<number>('alloc', 'system', 4096); // ino 1
  const b = await p.call<number>('alloc', 'reserved', 8192, uapi.O_RDONLY); // ino 2
  await p.call('setName', a, 'frame');
  const kf = await gpu.add(p, a, U_KERNEL, 'ring0', 1, 'ttm');
  const wf = await gpu.add(p, a, U_WRITE, 'gfx', 5);
  const rf = await gpu.add(p, a, U_READ, 'cam0', 7, 'v4l2');
  const bk = await gpu.add(p, a, U_BOOKKEEP, 'vm', 9);
  const rb = await gpu.add(p, b, U_READ, 'dma', 4294967297, 'copy');
  await gpu.signal(rb);
  const expected = (wState: string): string =>
    HEADER +
    '00008192\t00000000\t00080005\t00000001\treserved\t00000002\t<none>\n' +
    '\tread fence:copy dma seq 4294967297 signalled\n' +
    NO_DEVICES +
    '00004096\t00000002\t00080007\t00000001\tsystem\t00000001\tframe\n' +
    '\tkernel fence:ttm ring0 seq 1 unsignalled\n' +
    `\twrite fence:gpu gfx seq 5 ${wState}\n` +
    '\tread fence:v4l2 cam0 seq 7 unsignalled\n' +
    NO_DEVICES +
    '\nTotal 2 objects, 12288 bytes\n';
  t.is(await m.debugfs.read('dma_buf/bufinfo'), expected('unsignalled'));
  await gpu.signal(wf);
  t.is(await m.debugfs.read('dma_buf/bufinfo'), expected('signalled'), 'a signaled fence stays listed');
  t.is(await p.call('readFile', '/sys/kernel/debug/dma_buf/bufinfo'), expected('signalled'), 'the same through the file');
  t.deepEqual((await m.dmabufs())[1]!.fences.map((f) => f.usage), ['kernel', 'write', 'read', 'bookkeep'], 'BOOKKEEP is there');
  for (const f of [kf, rf, bk]) await gpu.signal(f);
  await gpu.put(kf, wf, rf, bk, rb);
  await p.call('close', a);
  await p.call('close', b);
  t.is(await m.debugfs.read('dma_buf/bufinfo'), `${HEADER}\nTotal 0 objects, 0 bytes\n`, 'release put every fence');
  await shutdownClean(t, m);
});

test.serial('an unsignaled fence on a buffer released with it is put, not leaked', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'p' });
  const gpu = await Gpu.spawn(m);
  const fd = await p.call<number>('alloc', 'system', 4096);
  const f = await gpu.add(p, fd, U_WRITE, 'gfx');
  await p.call('close', fd);
  t.deepEqual(await m.dmabufs(), [], 'dma_resv_fini at release');
  // The GPU's own reference is all that is left: signal and put it, and the table is empty.
  await gpu.signal(f);
  await gpu.put(f);
  await shutdownClean(t, m);
});

// ---- EXPORT_SYNC_FILE / IMPORT_SYNC_FILE -----------------------------------------------------------------------

type Info = { name: string; status: number; fences: [string, string, number][] };
const fdOf = (o: Outcome): number => {
  if (!('ok' in o)) throw new Error(`expected an fd, got ${o.code}`);
  return o.ok;
};
const STUB: [string, string, number] = ['stub', 'stub', 1];

test.serial('EXPORT_SYNC_FILE: the stub when idle, the usage asymmetry, BOOKKEEP invisible, an O_CLOEXEC fd', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'exporter' });
  const gpu = await Gpu.spawn(m);
  const fd = await p.call<number>('alloc', 'system', 4096);
  const exp = async (flags: number): Promise<number> => fdOf(await p.call<Outcome>('exportSyncFile', fd, flags));
  const info = (sfd: number): Promise<Info> => p.call<Info>('fileInfo', sfd);

  const idle = await exp(RW);
  t.like(await info(idle), { status: 1, fences: [STUB] }, 'no fences: the global signaled stub');
  t.is(await p.call('getfd', idle), uapi.FD_CLOEXEC, 'the sync_file fd is O_CLOEXEC');
  t.is(await p.call('syncReady', idle), IN);

  const bk = await gpu.add(p, fd, U_BOOKKEEP, 'vm');
  t.like(await info(await exp(RW)), { status: 1, fences: [STUB] }, 'BOOKKEEP fences are not exported');
  const rd = await gpu.add(p, fd, U_READ, 'reader');
  t.like(await info(await exp(READ)), { status: 1, fences: [STUB] }, 'READ asks for usage ≤ WRITE: a READ fence is not in it');
  const forWrite = await exp(WRITE);
  t.deepEqual((await info(forWrite)).fences, [['gpu', 'reader', 0]], 'the WRITE bit asks for usage ≤ READ: one fence, that very fence');
  t.like(await info(await exp(RW)), { status: 0, fences: [['gpu', 'reader', 0]] }, 'RW is the WRITE bit too');

  // Snapshot: a fence added after the export is not in the exported sync_file.
  const wr = await gpu.add(p, fd, U_WRITE, 'writer');
  t.deepEqual((await info(forWrite)).fences, [['gpu', 'reader', 0]], 'the earlier export is unchanged');
  const both = await exp(WRITE);
  t.deepEqual((await info(both)).fences, [['gpu', 'reader', 0], ['gpu', 'writer', 0]], 'a new export: an array of both');
  t.deepEqual((await info(await exp(READ))).fences, [['gpu', 'writer', 0]], 'READ: only the writer');
  await gpu.signal(rd);
  t.is(await p.call('syncReady', forWrite), IN, 'the snapshot signals with its own fence…');
  t.is(await p.call('syncReady', both), 0, '…while the array still waits for the writer');
  t.is(await p.call('poll', fd, OUT), 0, 'and so does the buffer');
  await gpu.signal(wr);
  await waitFor(t, 'the array to signal', async () => (await p.call<number>('syncReady', both)) === IN);
  t.like(await info(both), { status: 1 });

  await gpu.signal(bk);
  await gpu.put(bk, rd, wr);
  await p.call('close', fd);
  await shutdownClean(t, m);
});

test.serial('EXPORT_SYNC_FILE: n fences make an array that is not deduplicated (unlike SYNC_IOC_MERGE)', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'exporter' });
  const gpu = await Gpu.spawn(m);
  const fd = await p.call<number>('alloc', 'system', 4096);
  const f1 = await gpu.create('gpu', 'tl', 1);
  await dmaBufAddFence(m, p, fd, f1.handle, U_WRITE);
  const f2 = await gpu.create('gpu', 'tl', 2, f1);
  await dmaBufAddFence(m, p, fd, f2.handle, U_READ);
  const all = fdOf(await p.call<Outcome>('exportSyncFile', fd, WRITE));
  const info = await p.call<Info>('fileInfo', all);
  t.deepEqual(info.fences, [['gpu', 'tl', 0], ['gpu', 'tl', 0]], 'two components of one context');
  t.regex(info.name, /^dma_fence_array-unbound\d+-1$/, 'a new array: its own context, seqno 1');
  const merged = await p.call<number>('merge', all, all);
  t.deepEqual((await p.call<Info>('fileInfo', merged)).fences, [['gpu', 'tl', 0]], 'a merge keeps the later one per context');
  t.deepEqual((await p.call<Info>('fileInfo', fdOf(await p.call<Outcome>('exportSyncFile', fd, READ)))).fences, [['gpu', 'tl', 0]], 'READ: f1 alone');
  await gpu.signal(f1);
  await gpu.signal(f2);
  await gpu.put(f1, f2);
  await p.call('close', fd);
  await shutdownClean(t, m);
});

test.serial('IMPORT_SYNC_FILE: WRITE bit → WRITE usage else READ, containers unwrapped; round trip through export', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'importer' });
  const fd = await p.call<number>('alloc', 'system', 4096);
  const usages = async (): Promise<string[]> => (await m.dmabufs())[0]!.fences.map((f) => `${f.usage} ${f.driver}:${f.timeline}:${f.seqno}`);
  const tlA = await p.call<number>('timeline');
  const tlB = await p.call<number>('timeline');
  const a1 = await p.call<number>('swFence', tlA, 1);
  const b1 = await p.call<number>('swFence', tlB, 1);

  t.deepEqual(await p.call('importSyncFile', fd, READ, a1), ok());
  t.deepEqual(await usages(), ['read sw_sync:importer:1'], 'READ → READ usage');
  t.deepEqual(await p.call('importSyncFile', fd, RW, a1), ok());
  t.deepEqual(await usages(), ['write sw_sync:importer:1'], 'RW → WRITE usage (and the stronger entry replaced the weaker)');

  // A merged sync_file is a fence array: its components are added one by one, never the container.
  const ab = await p.call<number>('merge', a1, b1);
  const fd2 = await p.call<number>('alloc', 'system', 4096);
  t.deepEqual(await p.call('importSyncFile', fd2, WRITE, ab), ok());
  const [second] = await m.dmabufs();
  t.deepEqual(second!.fences.map((f) => [f.usage, f.driver, f.seqno]), [['write', 'sw_sync', 1n], ['write', 'sw_sync', 1n]], 'unwrapped');
  t.not(second!.fences[0]!.context, second!.fences[1]!.context);

  // Round trip: what was imported comes back out (as an array again: two unsignaled fences), and waits like it.
  const out = fdOf(await p.call<Outcome>('exportSyncFile', fd2, READ));
  t.deepEqual((await p.call<Info>('fileInfo', out)).fences, [['sw_sync', 'importer', 0], ['sw_sync', 'importer', 0]]);
  const q = await m.spawn(fixture, { name: 'cpu' });
  const qfd = await passFd(m, p, fd2, q);
  const s = q.call<Sync>('syncStart', qfd, READ);
  t.false(await settlesWithin(s, 80), 'SYNC START waits for the imported fences');
  await p.call('inc', tlA);
  t.false(await settlesWithin(s, 80), 'both of them');
  await p.call('inc', tlB);
  t.deepEqual((await s).outcome, ok());
  await waitFor(t, 'the exported array to signal', async () => (await p.call<number>('syncReady', out)) === IN);

  // Importing the stub of an idle export adds an already-signaled fence: nothing to wait for.
  const fd3 = await p.call<number>('alloc', 'system', 4096);
  const stub = fdOf(await p.call<Outcome>('exportSyncFile', fd3, RW));
  t.deepEqual(await p.call('importSyncFile', fd3, WRITE, stub), ok());
  t.like((await m.dmabufs())[0]!.fences, [{ usage: 'write', driver: 'stub', signaled: true }]);
  t.deepEqual((await p.call<Sync>('syncStart', fd3, RW)).outcome, ok());

  await q.call('close', qfd);
  for (const f of [fd, fd2, fd3, tlA, tlB]) await p.call('close', f);
  await shutdownClean(t, m);
});

test.serial('EXPORT/IMPORT_SYNC_FILE errno paths: flags, bad fds, short structs, EMFILE without leaks', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'errnos' });
  const gpu = await Gpu.spawn(m);
  const fd = await p.call<number>('alloc', 'system', 4096);
  const tl = await p.call<number>('timeline');
  const sf = await p.call<number>('swFence', tl, 1);
  for (const flags of [0, uapi.DMA_BUF_SYNC_END, uapi.DMA_BUF_SYNC_END | READ, 8 | WRITE, 0x80000000 | RW]) {
    t.deepEqual(await p.call('exportSyncFile', fd, flags), err('EINVAL'), `export flags ${flags}`);
    t.deepEqual(await p.call('importSyncFile', fd, flags, sf), err('EINVAL'), `import flags ${flags}`);
  }
  t.deepEqual(await p.call('importSyncFile', fd, READ, 99), err('EINVAL'), 'a closed fd is EINVAL, not EBADF');
  t.deepEqual(await p.call('importSyncFile', fd, READ, -1), err('EINVAL'), 'fd -1');
  t.deepEqual(await p.call('importSyncFile', fd, READ, fd), err('EINVAL'), 'a dma-buf is not a sync_file');
  t.deepEqual(await p.call('importSyncFile', fd, READ, tl), err('EINVAL'), 'nor is a sw_sync timeline');
  const { DMA_BUF_IOCTL_EXPORT_SYNC_FILE: EXP, DMA_BUF_IOCTL_IMPORT_SYNC_FILE: IMP } = uapi;
  t.deepEqual(await p.call('ioctlRaw', fd, EXP, [3, 0, 0, 0]), err('EFAULT'), 'export: struct shorter than 8 bytes');
  t.deepEqual(await p.call('ioctlRaw', fd, IMP, null), err('EFAULT'), 'import: no pointer');
  t.deepEqual(await p.call('ioctlRaw', 99, EXP, [3, 0, 0, 0, 0, 0, 0, 0]), err('EBADF'), 'closed dma-buf fd');
  t.deepEqual(await p.call('ioctlRaw', sf, EXP, [3, 0, 0, 0, 0, 0, 0, 0]), err('ENOTTY'), 'a sync_file is not a dma-buf');
  t.deepEqual((await m.dmabufs())[0]!.fences, [], 'nothing was added by the failures');

  // EMFILE: two pending fences (an export would build an array) and a full fd table.
  const f1 = await gpu.add(p, fd, U_WRITE, 'a');
  const f2 = await gpu.add(p, fd, U_READ, 'b');
  const open = await p.call<number>('openCount');
  const files = async (): Promise<number> => (await m.stats()).objects['file'] ?? 0;
  const before = await files();
  await p.call('setNofile', open);
  t.deepEqual(await p.call('exportSyncFile', fd, RW), err('EMFILE'));
  t.is(await files(), before, 'no sync_file was made');
  t.deepEqual(await p.call('importSyncFile', fd, WRITE, sf), ok(), 'import needs no fd');
  await p.call('setNofile', 1024);
  t.is(await p.call('openCount'), open, 'no fd was installed');
  await p.call('inc', tl);
  for (const f of [f1, f2]) await gpu.signal(f);
  await gpu.put(f1, f2);
  for (const f of [fd, tl, sf]) await p.call('close', f);
  await shutdownClean(t, m);
});

// ---- kernel-side API kunit cases ------------------------------------------------------------------------------------

for (const name of ['dma_buf_resv_lifetime', 'dma_buf_cpu_access_fences', 'dma_buf_map_kernel_fences', 'dma_buf_poll_slots']) {
  test.serial(`kernel API kunit ${name}`, async (t) => {
    const m = await bootFor(t);
    const r = await kunit(m, name);
    t.deepEqual(r.failures, []);
    t.is(r.oops, null);
    await shutdownClean(t, m);
  });
}

test.serial('releasing a buffer with an active poll callback is a BUG, recorded as an oops', async (t) => {
  const m = await bootFor(t);
  const r = await kunit(m, 'dma_buf_release_poll_active_bug');
  t.false(r.ok);
  t.regex(r.oops ?? '', /^BUG: dma-buf ino 1 released with an active poll callback \(cb_in 1, cb_out 0\)/);
  t.deepEqual(r.failures, [], 'the cleanup finished the release');
  const rep = await m.shutdown({ quiet: true });
  t.deepEqual(rep.leaks, []);
  t.is(rep.oopses.length, 1);
  t.deepEqual(rep.warnings, []);
});
