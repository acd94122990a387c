/**
 * dma-heap: a port of tools/testing/selftests/dmabuf-heaps/dmabuf-heap.c run on every heap (system and a
 * carve-out), then every errno path of DMA_HEAP_IOCTL_ALLOC and the heap fd, ENOMEM / EMFILE with nothing leaked,
 * the carve-out allocator's reuse, zeroing, first-fit and coalescing, and its buffers' isolation from each other.
 */
import test from 'ava';
import { Machine, uapi, type DmaHeapInfo } from '../src/index.js';
import type { KsftResult, RawResult } from './fixtures/heap.js';
import { kunit } from '../src/testing.js';
import { bootFor, shutdownClean, TEST_HEAPS } from './helpers/sim.js';

const fixture = new URL('./fixtures/heap.js', import.meta.url);
const ONE_MEG = 1024 * 1024;

test.serial('dmabuf-heap selftest port: 11 results per heap, all pass, the import into vgem included', async (t) => {
  const m = await Machine.boot({ heaps: TEST_HEAPS, drivers: ['vgem'] });
  t.teardown(() => m.shutdown({ quiet: true }).then(() => {}, () => {}));
  const p = await m.spawn(fixture, { name: 'dmabuf-heap' });
  const heaps = (await m.heaps()).map((h) => h.name);
  t.deepEqual(heaps, ['reserved', 'system'], 'readdir(/dev/dma_heap)');
  const plan = 11 * heaps.length; // ksft_set_plan(11 * numer_of_heaps())
  const results: (KsftResult & { heap: string })[] = [];
  for (const heap of heaps) {
    const add = (rs: KsftResult[]): void => void results.push(...rs.map((r) => ({ ...r, heap })));
    add(await p.call<KsftResult[]>('test_alloc_and_import', heap));
    add(await p.call<KsftResult[]>('test_alloc_zeroed', heap, 4 * 1024));
    add(await p.call<KsftResult[]>('test_alloc_zeroed', heap, ONE_MEG));
    add(await p.call<KsftResult[]>('test_alloc_compat', heap));
    const errors = await p.call<{ results: KsftResult[]; errnos: number[] }>('test_alloc_errors', heap);
    add(errors.results);
    // fd 0 is /dev/null: not a heap, so ENOTTY; then EINVAL for heap_flags and for fd_flags.
    t.deepEqual(errors.errnos, [uapi.E.ENOTTY, uapi.E.EINVAL, uapi.E.EINVAL], `${heap}: alloc_errors errnos`);
  }
  t.is(results.length, plan, 'ran the planned number of tests');
  const fails = results.filter((r) => r.result === 'fail');
  t.deepEqual(fails, [], 'no failures');
  t.deepEqual(results.filter((r) => r.result === 'skip'), [], 'nothing skipped: vgem is at /dev/dri/card0');
  t.deepEqual(
    results.filter((r) => r.msg.startsWith('Import buffer')).map((r) => `${r.heap}: ${r.result} ${r.msg}`),
    heaps.map((h) => `${h}: pass Import buffer 0`),
    'PRIME_FD_TO_HANDLE imported each heap buffer',
  );
  t.deepEqual((await m.heaps()).map((h) => [h.name, h.usedBytes, h.buffers]), [['reserved', 0, 0], ['system', 0, 0]], 'every buffer returned');
  await shutdownClean(t, m);
});

test.serial('alloc_zeroed really reuses freed carve-out ranges, each buffer on pages of its own', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'zeroed' });
  const reserved = async (): Promise<DmaHeapInfo> => (await m.heaps()).find((h) => h.name === 'reserved')!;
  for (const size of [4 * 1024, ONE_MEG]) {
    const r = await p.call<KsftResult[]>('test_alloc_zeroed', 'reserved', size);
    t.deepEqual(r.map((x) => x.result), ['pass', 'pass']);
    const off = await p.call<{ first: number[]; second: number[]; sabBytes: number }>('lastZeroedOffsets');
    t.is(off.sabBytes, size, 'a mapping holds its own buffer\'s memory, not the pool');
    t.deepEqual([...off.first, ...off.second], new Array<number>(64).fill(0));
    // 32 buffers, freed, then 32 again: first fit from the bottom, and the second round got the freed ranges back
    // (had it not, the pool would have been used up to 64 buffers' worth).
    t.like(await reserved(), { highWaterBytes: Math.max(32 * size, 32 * 4096), usedBytes: 0, freeExtents: [{ start: 0, size: 64 << 20 }] });
  }
  // The system heap hands out fresh pages every time (nothing to reuse) and they are zero too.
  const s = await p.call<KsftResult[]>('test_alloc_zeroed', 'system', ONE_MEG);
  t.deepEqual(s.map((x) => x.result), ['pass', 'pass']);
  await shutdownClean(t, m);
});

test.serial('carve-out allocator: first fit, exhaustion, fragmentation, coalescing, zeroed reuse', async (t) => {
  const m = await bootFor(t, { reserved: { sizeBytes: 64 << 20 } });
  const p = await m.spawn(fixture, { name: 'carveout' });
  type A = { fd: number; offset: number } | { code: string };
  const get = (a: A): { fd: number; offset: number } => {
    if ('code' in a) throw new Error(a.code);
    return a;
  };
  const free = async (): Promise<DmaHeapInfo['freeExtents']> => (await m.heaps())[0]!.freeExtents;
  const MB16 = 16 << 20;
  const bufs = [];
  for (let i = 0; i < 4; i++) {
    bufs.push(get(await p.call<A>('allocMapped', 'reserved', MB16)));
    t.deepEqual(await free(), i < 3 ? [{ start: (i + 1) * MB16, size: (3 - i) * MB16 }] : [], `first fit: buffer ${i}`);
  }
  t.deepEqual(await p.call('allocMapped', 'reserved', 4096), { code: 'ENOMEM' }, 'pool exhausted');
  t.deepEqual(await p.call('allocMapped', 'reserved', 128 << 20), { code: 'ENOMEM' }, 'larger than the pool');
  await p.call('dirty', bufs[0]!.fd);
  await p.call('dirty', bufs[2]!.fd);
  await p.call('release', bufs[0]!.fd);
  await p.call('release', bufs[2]!.fd);
  t.deepEqual(await free(), [{ start: 0, size: MB16 }, { start: 2 * MB16, size: MB16 }]);
  t.deepEqual(await p.call('allocMapped', 'reserved', 2 * MB16), { code: 'ENOMEM' }, '32 MiB free, but in two holes');
  await p.call('release', bufs[1]!.fd);
  t.deepEqual(await free(), [{ start: 0, size: 3 * MB16 }], 'the three freed neighbours coalesced into one extent');
  const big = get(await p.call<A>('allocMapped', 'reserved', 3 * MB16));
  t.deepEqual(await free(), [], 'the coalesced extent was handed out whole');
  t.true(await p.call<boolean>('isZero', big.fd), 'dirty memory was zeroed before reuse');
  await p.call('release', big.fd);
  await p.call('release', bufs[3]!.fd);
  const info = (await m.heaps())[0]!;
  t.like(info, { name: 'reserved', kind: 'carveout', sizeBytes: 64 << 20, usedBytes: 0, buffers: 0, highWaterBytes: 64 << 20 });
  t.deepEqual(info.freeExtents, [{ start: 0, size: 64 << 20 }]);
  await shutdownClean(t, m);
});

test.serial('carve-out isolation: a stale view after munmap + close, or a small mapping, reaches no other buffer', async (t) => {
  const m = await bootFor(t, { reserved: { sizeBytes: 64 << 20 } });
  const owner = await m.spawn(fixture, { name: 'stale-owner' });
  const next = await m.spawn(fixture, { name: 'next-owner' });
  const r = await owner.call<{ sabBytes: number; reach: number }>('staleViewSetup', 'reserved', 4096);
  t.is(r.sabBytes, 4096, 'a PROT_READ mapping of 4 KiB holds 4 KiB of memory');
  t.is(r.reach, 4096, 'writing every byte the mapping\'s memory holds reaches only the mapped buffer');
  // The neighbour the owner allocated after its buffer is untouched by that write.
  t.true(await owner.call<boolean>('neighbourIsZero'));
  // The owner unmapped and closed its buffer; the next owner gets the same range of the pool (first fit)…
  await owner.call('staleViewRelease');
  const nb = await next.call<{ fd: number } | { code: string }>('allocMapped', 'reserved', 4096);
  if ('code' in nb) throw new Error(nb.code);
  t.deepEqual((await m.heaps())[0]!.freeExtents, [{ start: 8192, size: (64 << 20) - 8192 }], 'the freed range went to the next owner');
  // …and the stale view, still usable in JavaScript, writes the freed buffer's own memory, not the next owner's.
  await owner.call('staleViewScribble', 0x77);
  t.true(await next.call<boolean>('isZero', nb.fd), 'the next owner\'s buffer is untouched by the stale view');
  await next.call('release', nb.fd);
  await owner.call('staleViewDone');
  await shutdownClean(t, m);
});

test.serial('DMA_HEAP_IOCTL_ALLOC errno paths, in the kernel order', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'heap-errno' });
  const raw = (heap: string, o: Record<string, unknown>): Promise<RawResult> => p.call<RawResult>('rawAlloc', heap, o);
  const code = async (heap: string, o: Record<string, unknown>): Promise<string | null> => (await raw(heap, o)).code;
  const opened: number[] = [];
  const ok = async (heap: string, o: Record<string, unknown>): Promise<RawResult> => {
    const r = await raw(heap, o);
    t.is(r.code, null, JSON.stringify(o, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v)));
    opened.push(r.fd);
    return r;
  };
  const { _IOWR, _IOW, _IOR, _IO, DMA_HEAP_IOC_MAGIC: H } = uapi;
  for (const heap of ['system', 'reserved']) {
    // _IOC_NR(cmd) >= 1 → EINVAL, whatever the rest of the cmd says.
    t.is(await code(heap, { cmd: _IOWR(H, 1, 24) }), 'EINVAL', 'nr 1');
    t.is(await code(heap, { cmd: _IOWR(H, 0xff, 24) }), 'EINVAL', 'nr 255');
    // Only the nr is looked at: another type byte with nr 0 is still ALLOC.
    await ok(heap, { cmd: _IOWR('b', 0, 24) });
    // No direction bits: nothing copied in → a zeroed struct → len 0 → EINVAL.
    t.is(await code(heap, { cmd: _IO(H, 0) }), 'EINVAL', '_IO: zero struct');
    // _IOW: copied in but not back out: the call succeeds, the user never learns the fd (it leaks into the table).
    const w = await raw(heap, { cmd: _IOW(H, 0, 24) });
    t.is(w.code, null, '_IOW allocates');
    t.is(w.fd, 0, '_IOW: no copy back');
    // _IOR: nothing copied in: zero struct → EINVAL.
    t.is(await code(heap, { cmd: _IOR(H, 0, 24) }), 'EINVAL', '_IOR: zero struct');
    // Shorter struct (older userspace): missing heap_flags read as 0.
    const older = await ok(heap, { cmd: _IOWR(H, 0, 16), bufBytes: 16 });
    t.true(older.fd > 2, 'fd written into the short struct');
    // Longer struct (newer userspace): the tail is ignored and comes back untouched.
    const newer = await ok(heap, { cmd: _IOWR(H, 0, 48), bufBytes: 48, tailFill: 0x77 });
    t.deepEqual(newer.bytes.slice(24), new Array(24).fill(0x77), 'tail untouched');
    // User buffer shorter than the size the cmd encodes: EFAULT.
    t.is(await code(heap, { bufBytes: 16 }), 'EFAULT', 'buffer shorter than _IOC_SIZE');
    t.is(await code(heap, { intArg: true }), 'EFAULT', 'no buffer at all');
    // Field checks, in order; all EINVAL.
    t.is(await code(heap, { fd: 5 }), 'EINVAL', 'input fd != 0');
    t.is(await code(heap, { fdFlags: uapi.O_NONBLOCK }), 'EINVAL', 'fd_flags outside O_CLOEXEC|O_ACCMODE');
    t.is(await code(heap, { fdFlags: ~(uapi.O_RDWR | uapi.O_CLOEXEC) }), 'EINVAL', 'fd_flags ~(O_RDWR|O_CLOEXEC)');
    t.is(await code(heap, { heapFlags: 1n }), 'EINVAL', 'heap_flags 1');
    t.is(await code(heap, { heapFlags: 1n << 40n }), 'EINVAL', 'heap_flags high bits');
    t.is(await code(heap, { len: 0n }), 'EINVAL', 'len 0');
    t.is(await code(heap, { len: 0xffff_ffff_ffff_ffffn }), 'EINVAL', 'PAGE_ALIGN wraps to 0');
    t.is(await code(heap, { len: 0xffff_ffff_ffff_f001n }), 'EINVAL', 'PAGE_ALIGN wraps to 0 (lowest such len)');
    t.is(await code(heap, { len: 0xffff_ffff_ffff_f000n }), 'ENOMEM', 'largest aligned len: ENOMEM');
    // EINVAL checks come before the allocation: a huge len with bad flags is EINVAL, not ENOMEM.
    t.is(await code(heap, { len: 1n << 40n, heapFlags: 1n }), 'EINVAL', 'flags checked before allocating');
    t.is(await code(heap, { len: 1n << 40n }), 'ENOMEM', '1 TiB');
    // len is rounded up to pages.
    const one = await ok(heap, { len: 1n });
    t.is(one.fd > 0, true);
  }
  // fd_flags access mode 3 (O_ACCMODE) is accepted: a file with neither read nor write.
  await ok('system', { fdFlags: uapi.O_ACCMODE });
  await p.call('closeFds', opened);
  // The two _IOW buffers are still installed at fds the caller never saw; they go with the process.
  const bufs = await m.dmabufs();
  t.is(bufs.length, 2, 'only the _IOW buffers remain');
  await p.kill();
  t.deepEqual(await m.dmabufs(), [], 'process exit released them');
  t.deepEqual((await m.heaps()).map((h) => h.usedBytes), [0, 0]);
  await shutdownClean(t, m);
});

test.serial('heap sizes, exp_name, fdinfo, O_CLOEXEC and access modes', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'heap-modes' });
  const r = await p.call<RawResult>('rawAlloc', 'reserved', { len: 5000n, fdFlags: uapi.O_RDWR });
  const [b] = await m.dmabufs();
  t.like(b, { size: 8192, expName: 'reserved', name: null, fileCount: 1, fileFlags: uapi.O_RDWR, fileMode: 0x80007 });
  await p.call('closeFds', [r.fd]);

  type AM = { mmap: string | null; cloexec: number; fdinfo: string };
  const { PROT_READ, PROT_WRITE, MAP_PRIVATE, O_RDONLY, O_WRONLY, O_RDWR, O_CLOEXEC, FD_CLOEXEC } = uapi;
  for (const heap of ['system', 'reserved']) {
    const rw = await p.call<AM>('allocAndMap', heap, O_RDWR | O_CLOEXEC, PROT_READ | PROT_WRITE);
    t.is(rw.mmap, null, `${heap}: O_RDWR buffer maps read/write`);
    t.is(rw.cloexec, FD_CLOEXEC, 'O_CLOEXEC honoured');
    t.regex(rw.fdinfo, /^pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t\d+\nsize:\t8192\ncount:\t1\nexp_name:\t(system|reserved)\n$/);
    const ro = await p.call<AM>('allocAndMap', heap, O_RDONLY, PROT_READ | PROT_WRITE);
    t.is(ro.mmap, 'EACCES', `${heap}: shared writable mapping of a read-only buffer`);
    t.is(ro.cloexec, 0, 'no O_CLOEXEC asked, none set');
    t.is((await p.call<AM>('allocAndMap', heap, O_RDONLY, PROT_READ)).mmap, null, 'read-only mapping of a read-only buffer');
    t.is((await p.call<AM>('allocAndMap', heap, O_WRONLY, PROT_WRITE)).mmap, 'EACCES', 'write-only file: no FMODE_READ');
    t.is((await p.call<AM>('allocAndMap', heap, O_RDWR, PROT_READ, MAP_PRIVATE)).mmap, 'EINVAL', 'MAP_PRIVATE refused');
  }
  await shutdownClean(t, m);
});

test.serial('the heap fd supports only ioctl', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'heap-fd' });
  t.deepEqual(await p.call('heapFdOps', 'system'), {
    read: 'EINVAL',
    write: 'EINVAL',
    lseek: 'ESPIPE',
    mmap: 'ENODEV',
    poll: uapi.POLLIN | uapi.POLLOUT,
    link: '/dev/dma_heap/system',
    unknownHeap: 'ENOENT',
  });
  await shutdownClean(t, m);
});

test.serial('ENOMEM and EMFILE leave nothing behind', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'heap-limits' });
  for (const heap of ['system', 'reserved']) {
    const before = await m.stats();
    // EMFILE: the buffer was allocated, then dma_buf_fd failed and the heap put it (released at once).
    t.deepEqual(await p.call('allocWithFullTable', heap, 4096n), { code: 'EMFILE', fdsOpen: 4 }, `${heap}: EMFILE`);
    // Allocation happens before the fd: out of memory with a full table is ENOMEM.
    t.deepEqual(await p.call('allocWithFullTable', heap, 1n << 40n), { code: 'ENOMEM', fdsOpen: 4 }, `${heap}: ENOMEM first`);
    t.deepEqual(await p.call('rawAlloc', heap, { len: 1n << 40n }).then((r) => (r as RawResult).code), 'ENOMEM');
    const after = await m.stats();
    t.deepEqual(after.objects, before.objects, `${heap}: no object left`);
    t.deepEqual(await m.dmabufs(), []);
    t.is(await m.debugfs.read('dma_buf/bufinfo'), '\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n\nTotal 0 objects, 0 bytes\n');
  }
  t.deepEqual((await m.heaps()).map((h) => [h.name, h.usedBytes, h.buffers]), [['reserved', 0, 0], ['system', 0, 0]]);
  await shutdownClean(t, m);
});

test.serial('heap kernel-side dma-buf ops (in-kernel kunit case)', async (t) => {
  const m = await bootFor(t);
  const r = await kunit(m, 'dma_heap_buffer_ops');
  t.deepEqual(r.failures, []);
  t.true(r.ok);
  await shutdownClean(t, m);
});
