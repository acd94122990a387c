/**
 * dma-buf: every errno path of the dma-buf file (SYNC, SET_NAME, unknown ioctls, mmap, lseek, read/write), poll,
 * fdinfo and readlink, lifetimes (dup/close, mappings, last put, exit and kill), a buffer shared by three
 * processes with concurrent writers and a reader, and the in-kernel exporter/importer API self-tests.
 */
import test from 'ava';
import { uapi } from '../src/index.js';
import type { Outcome } from './fixtures/dmabuf.js';
import { kunit } from '../src/testing.js';
import { bootFor, passFd, shutdownClean, shutdownNoLeaks } from './helpers/sim.js';

const fixture = new URL('./fixtures/dmabuf.js', import.meta.url);
const EMPTY_BUFINFO = '\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n\nTotal 0 objects, 0 bytes\n';
const {
  DMA_BUF_SYNC_START: START,
  DMA_BUF_SYNC_END: END,
  DMA_BUF_SYNC_READ: READ,
  DMA_BUF_SYNC_WRITE: WRITE,
  DMA_BUF_SYNC_RW: RW,
  PROT_READ,
  PROT_WRITE,
  MAP_SHARED,
  MAP_PRIVATE,
  SEEK_SET,
  SEEK_CUR,
  SEEK_END,
  POLLIN,
  POLLOUT,
} = uapi;

const ok = (v: number = 0): Outcome => ({ ok: v });
const err = (code: string): Outcome => ({ code });
const u64le = (v: bigint): number[] => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return [...b];
};

test.serial('DMA_BUF_IOCTL_SYNC flags and struct checks', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'sync' });
  const fd = await p.call<number>('alloc', 'system', 4096);
  const sync = (f: bigint | number): Promise<Outcome> => p.call<Outcome>('sync', fd, f);
  t.deepEqual(await sync(START | READ), ok());
  t.deepEqual(await sync(END | READ), ok());
  t.deepEqual(await sync(START | WRITE), ok());
  t.deepEqual(await sync(START | RW), ok());
  t.deepEqual(await sync(END | RW), ok());
  t.deepEqual(await sync(END | WRITE), ok(), 'unpaired END is accepted');
  t.deepEqual(await sync(END | WRITE), ok(), 'and again');
  t.deepEqual(await sync(START), err('EINVAL'), 'neither READ nor WRITE');
  t.deepEqual(await sync(END), err('EINVAL'), 'END alone');
  t.deepEqual(await sync(8 | READ), err('EINVAL'), 'flags & ~7');
  t.deepEqual(await sync(0x80 | RW), err('EINVAL'), 'high bit');
  t.deepEqual(await sync((1n << 40n) | BigInt(READ)), err('EINVAL'), 'a bit in the upper 32 of the u64');
  const { DMA_BUF_IOCTL_SYNC } = uapi;
  t.deepEqual(await p.call('ioctlRaw', fd, DMA_BUF_IOCTL_SYNC, [1, 0, 0, 0]), err('EFAULT'), 'struct shorter than 8 bytes');
  t.deepEqual(await p.call('ioctlRaw', fd, DMA_BUF_IOCTL_SYNC, null), err('EFAULT'), 'no pointer');
  t.deepEqual(await p.call('ioctlRaw', fd, DMA_BUF_IOCTL_SYNC, u64le(BigInt(START | READ))), ok(), 'raw struct');
  // The per-direction START/END counts the ownership checker will use.
  const [b] = await m.dmabufs();
  t.deepEqual(b!.cpuSync, { read: { start: 2, end: 1 }, write: { start: 1, end: 2 }, rw: { start: 1, end: 1 } });
  await p.call('close', fd);
  await shutdownClean(t, m);
});

test.serial('DMA_BUF_SET_NAME: lengths, both request numbers, rename, fdinfo and readlink', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'names' });
  const fd = await p.call<number>('alloc', 'system', 4096);
  const tail = async (): Promise<string> => (await p.call<string>('fdinfo', fd)).split('\n').slice(4).join('\n');
  t.is(await p.call('readlink', fd), '/dmabuf:', 'unnamed');
  t.is(await tail(), 'size:\t4096\ncount:\t1\nexp_name:\tsystem\n', 'no name line when unnamed');
  const n31 = 'x'.repeat(31);
  t.deepEqual(await p.call('setName', fd, n31), ok(), '31 chars');
  t.is(await p.call('readlink', fd), `/dmabuf:${n31}`);
  t.deepEqual(await p.call('setName', fd, 'y'.repeat(32)), err('EINVAL'), '32 chars');
  t.deepEqual(await p.call('setName', fd, 'z'.repeat(100)), err('EINVAL'), '100 chars');
  t.is(await p.call('readlink', fd), `/dmabuf:${n31}`, 'a failed rename keeps the old name');
  t.deepEqual(await p.call('setName', fd, 'camera', uapi.DMA_BUF_SET_NAME_A), ok(), '0x40046201');
  t.is(await tail(), 'size:\t4096\ncount:\t1\nexp_name:\tsystem\nname:\tcamera\n');
  t.deepEqual(await p.call('setName', fd, 'preview', uapi.DMA_BUF_SET_NAME_B), ok(), '0x40086201');
  t.is(await p.call('readlink', fd), '/dmabuf:preview', 'renamed any time');
  t.deepEqual(await p.call('setName', fd, ''), ok(), '"" is a name');
  t.is(await p.call('readlink', fd), '/dmabuf:', '"" reads back as no name in the dname');
  t.is(await tail(), 'size:\t4096\ncount:\t1\nexp_name:\tsystem\nname:\t\n', 'but fdinfo prints the empty name');
  t.deepEqual(await p.call('setName', fd, 'é'.repeat(16)), err('EINVAL'), '16 characters but 32 bytes');
  t.deepEqual(await p.call('setName', fd, 'café-ü'), ok(), 'UTF-8 name');
  t.is(await p.call('readlink', fd), '/dmabuf:café-ü');
  t.is(await tail(), 'size:\t4096\ncount:\t1\nexp_name:\tsystem\nname:\tcafé-ü\n');
  t.deepEqual(await p.call('ioctlRaw', fd, uapi.DMA_BUF_SET_NAME, null), err('EFAULT'), 'no pointer');
  t.deepEqual(await p.call('ioctlRaw', fd, uapi.DMA_BUF_SET_NAME, [0x61, 0x62]), err('EFAULT'), 'string runs off the buffer');
  t.is(uapi.DMA_BUF_SET_NAME_A, 0x40046201);
  t.is(uapi.DMA_BUF_SET_NAME_B, 0x40086201);
  await p.call('close', fd);
  await shutdownClean(t, m);
});

test.serial('unknown and size-mismatched ioctls are ENOTTY', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'enotty' });
  const fd = await p.call<number>('alloc', 'system', 4096);
  const eight = u64le(BigInt(START | RW));
  const { _IO, _IOW, _IOR, _IOWR } = uapi;
  const cases: [string, number][] = [
    ["_IO('b', 9)", _IO('b', 9)],
    ["_IOW('b', 0, 4): SYNC with the wrong size", _IOW('b', 0, 4)],
    ["_IOW('b', 0, 16)", _IOW('b', 0, 16)],
    ["_IOWR('b', 0, 8): SYNC with the wrong direction", _IOWR('b', 0, 8)],
    ["_IOR('b', 0, 8)", _IOR('b', 0, 8)],
    ["_IOW('c', 0, 8): another type", _IOW('c', 0, 8)],
    ["_IOW('b', 1, 2): SET_NAME with a bad size", _IOW('b', 1, 2)],
    ["_IOW('b', 2, 8): EXPORT_SYNC_FILE with the wrong direction", _IOW('b', 2, 8)],
    ["_IOWR('b', 3, 8): IMPORT_SYNC_FILE with the wrong direction", _IOWR('b', 3, 8)],
    ['DMA_HEAP_IOCTL_ALLOC on a dma-buf', uapi.DMA_HEAP_IOCTL_ALLOC],
  ];
  for (const [what, cmd] of cases) t.deepEqual(await p.call('ioctlRaw', fd, cmd, eight), err('ENOTTY'), what);
  t.deepEqual(await p.call('ioctlRaw', 99, uapi.DMA_BUF_IOCTL_SYNC, eight), err('EBADF'), 'closed fd');
  await p.call('close', fd);
  await shutdownClean(t, m);
});

test.serial('mmap: bounds, len 0, offsets, MAP_PRIVATE, read-only buffers', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'mmap' });
  for (const heap of ['system', 'reserved']) {
    const fd = await p.call<number>('alloc', heap, 4 * 4096);
    const map = (len: number, prot = PROT_READ | PROT_WRITE, flags = MAP_SHARED, off = 0): Promise<Outcome> =>
      p.call<Outcome>('map', fd, len, prot, flags, off);
    t.deepEqual(await map(0), err('EINVAL'), 'len 0');
    t.deepEqual(await map(5 * 4096), err('EINVAL'), 'longer than the buffer');
    t.deepEqual(await map(4 * 4096 + 1), err('EINVAL'), 'one byte too long (rounds up to a fifth page)');
    t.deepEqual(await map(2 * 4096, undefined, undefined, 3 * 4096), err('EINVAL'), 'offset + len past the end');
    t.deepEqual(await map(4096, undefined, undefined, 4 * 4096), err('EINVAL'), 'offset at the end');
    t.deepEqual(await map(4096, undefined, undefined, 100), err('EINVAL'), 'unaligned offset');
    t.deepEqual(await map(4096, PROT_READ, MAP_PRIVATE), err('EINVAL'), 'MAP_PRIVATE');
    const last = await map(4096, undefined, undefined, 3 * 4096);
    t.true('ok' in last, 'the last page alone');
    const whole = await map(4 * 4096 - 100);
    t.true('ok' in whole, 'a length that rounds up to exactly the buffer');
    // Both mappings see the same memory: the last page through either.
    const [a, b] = [(last as { ok: number }).ok, (whole as { ok: number }).ok];
    await p.call('writeBytes', a, 10, [1, 2, 3]);
    t.deepEqual(await p.call('readBytes', b, 3 * 4096 + 10, 3), [1, 2, 3]);
    await p.call('unmap', a);
    await p.call('unmap', b);
    await p.call('close', fd);

    const ro = await p.call<number>('alloc', heap, 4096, uapi.O_RDONLY);
    t.deepEqual(await p.call('map', ro, 4096, PROT_READ | PROT_WRITE, MAP_SHARED), err('EACCES'), 'writable shared map of a read-only buffer');
    const r = await p.call<Outcome>('map', ro, 4096, PROT_READ, MAP_SHARED);
    t.true('ok' in r, 'read-only map');
    await p.call('unmap', (r as { ok: number }).ok);
    await p.call('close', ro);
  }
  t.is(await m.debugfs.read('dma_buf/bufinfo'), EMPTY_BUFINFO);
  await shutdownClean(t, m);
});

test.serial('lseek finds the end only; read and write are EINVAL; poll is ready at once', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'seek' });
  const fd = await p.call<number>('alloc', 'reserved', 12000);
  t.deepEqual(await p.call('lseek', fd, 0, SEEK_END), ok(12288), 'SEEK_END → size (page aligned)');
  t.deepEqual(await p.call('lseek', fd, 0, SEEK_SET), ok(0));
  t.deepEqual(await p.call('lseek', fd, 0, SEEK_CUR), err('EINVAL'));
  t.deepEqual(await p.call('lseek', fd, 1, SEEK_END), err('EINVAL'));
  t.deepEqual(await p.call('lseek', fd, -1, SEEK_END), err('EINVAL'));
  t.deepEqual(await p.call('lseek', fd, 4096, SEEK_SET), err('EINVAL'));
  t.deepEqual(await p.call('lseek', fd, 0, 3), err('EINVAL'), 'SEEK_DATA');
  t.regex(await p.call<string>('fdinfo', fd), /^pos:\t0\n/, 'lseek does not move f_pos');
  t.deepEqual(await p.call('readWrite', fd), { read: err('EINVAL'), write: err('EINVAL') });
  t.is(await p.call('poll', fd, POLLIN | POLLOUT), POLLIN | POLLOUT, 'no fences: IN|OUT at once');
  t.is(await p.call('poll', fd, POLLIN), POLLIN);
  t.is(await p.call('poll', fd, POLLOUT), POLLOUT);
  await p.call('close', fd);
  await shutdownClean(t, m);
});

test.serial('fdinfo and readlink of a dma-buf', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'fdinfo' });
  const a = await p.call<number>('alloc', 'system', 1 << 20);
  const b = await p.call<number>('alloc', 'reserved', 100, uapi.O_RDONLY);
  t.is(await p.call('fdinfo', a), `pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1\nsize:\t1048576\ncount:\t1\nexp_name:\tsystem\n`);
  t.is(await p.call('fdinfo', b), `pos:\t0\nflags:\t00\nmnt_id:\t15\nino:\t2\nsize:\t4096\ncount:\t1\nexp_name:\treserved\n`);
  await p.call('fcntl', b, uapi.F_SETFL, uapi.O_NONBLOCK);
  t.regex(await p.call<string>('fdinfo', b), /^pos:\t0\nflags:\t04000\n/, 'F_SETFL shows in f_flags');
  t.is(await p.call('readlink', a), '/dmabuf:');
  await p.call('setName', b, 'lut');
  t.is(await p.call('readlink', b), '/dmabuf:lut');
  await p.call('close', a);
  await p.call('close', b);
  await shutdownClean(t, m);
});

test.serial('lifetimes: dup/close and mmap references, release on the last put only', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'lifetimes' });
  const count = async (fd: number): Promise<number> => Number(/count:\t(\d+)/.exec(await p.call<string>('fdinfo', fd))![1]);
  const fd = await p.call<number>('alloc', 'reserved', 8192);
  t.is(await count(fd), 1);
  const d1 = await p.call<number>('dup', fd);
  t.is(await count(fd), 2, 'dup');
  const d2 = await p.call<number>('fcntl', fd, uapi.F_DUPFD_CLOEXEC, 10);
  t.is(d2, 10);
  t.is(await count(d1), 3, 'F_DUPFD_CLOEXEC');
  const addr = ((await p.call<Outcome>('map', fd, 8192)) as { ok: number }).ok;
  t.is(await count(fd), 4, 'a mapping holds a reference');
  await p.call('writeBytes', addr, 0, [0xde, 0xad]);
  await p.call('close', d2);
  t.is(await count(fd), 3);
  await p.call('close', fd);
  t.is(await count(d1), 2, 'fd closed: the dup and the mapping remain');
  await p.call('close', d1);
  // Every fd is closed; the mapping alone keeps the buffer alive.
  const [b] = await m.dmabufs();
  t.like(b, { size: 8192, fileCount: 1 });
  t.regex(await m.debugfs.read('dma_buf/bufinfo'), /^00008192\t00000002\t00080007\t00000001\treserved\t/m);
  t.deepEqual(await p.call('readBytes', addr, 0, 2), [0xde, 0xad], 'the memory is still there');
  t.is((await m.heaps()).find((h) => h.name === 'reserved')!.usedBytes, 8192, 'not released yet');
  await p.call('unmap', addr);
  t.deepEqual(await m.dmabufs(), [], 'munmap dropped the last reference: released');
  t.is((await m.heaps()).find((h) => h.name === 'reserved')!.usedBytes, 0, 'pages back in the pool');
  t.deepEqual(await p.call('close', fd), err('EBADF'));
  await shutdownClean(t, m);
});

test.serial('exit and kill release every buffer a process holds', async (t) => {
  const m = await bootFor(t);
  const exiting = await m.spawn(fixture, { name: 'exiting', args: ['reserved'] });
  await exiting.join();
  t.is(await m.debugfs.read('dma_buf/bufinfo'), EMPTY_BUFINFO, 'exit(0) with buffers open and mapped');

  const killed = await m.spawn(fixture, { name: 'killed' });
  t.deepEqual(await killed.call('holdBuffers', 'system'), [4, 5], 'fd 3 was each allocation’s heap fd');
  t.is((await m.dmabufs()).length, 2);
  await killed.kill();
  t.is(await m.debugfs.read('dma_buf/bufinfo'), EMPTY_BUFINFO, 'terminate');
  t.deepEqual((await m.heaps()).map((h) => h.usedBytes), [0, 0]);
  await shutdownClean(t, m);
});

test.serial('one buffer mapped by three processes: two concurrent writers on disjoint ranges, one reader', async (t) => {
  const m = await bootFor(t);
  const owner = await m.spawn(fixture, { name: 'reader' });
  const w1 = await m.spawn(fixture, { name: 'writer-1' });
  const w2 = await m.spawn(fixture, { name: 'writer-2' });
  const SIZE = 1 << 20;
  const fd = await owner.call<number>('alloc', 'system', SIZE);
  await owner.call('setName', fd, 'shared');
  const fd1 = await passFd(m, owner, fd, w1);
  const fd2 = await passFd(m, owner, fd, w2);
  t.is(await w1.call('readlink', fd1), '/dmabuf:shared', 'the same buffer');
  const mapIn = async (pr: typeof owner, f: number): Promise<number> => ((await pr.call<Outcome>('map', f, SIZE)) as { ok: number }).ok;
  const [a0, a1, a2] = [await mapIn(owner, fd), await mapIn(w1, fd1), await mapIn(w2, fd2)];
  t.like((await m.dmabufs())[0], { fileCount: 6 }, '3 fds + 3 mappings');

  const WORDS = SIZE / 4;
  const half = (WORDS - 1024) / 2; // the last page holds the done flags
  const done1 = WORDS - 2;
  const done2 = WORDS - 1;
  const passes = 64;
  const [r, n1, n2] = await Promise.all([
    owner.call<{ samples: number; violations: number; sawProgress: boolean; final: boolean; timedOut: boolean }>(
      'reader', fd, a0, [[0, half], [half, half]], passes, [done1, done2], 60_000),
    w1.call<number>('writer', fd1, a1, 0, half, passes, done1),
    w2.call<number>('writer', fd2, a2, half, half, passes, done2),
  ]);
  t.is(n1, passes);
  t.is(n2, passes);
  t.false(r.timedOut);
  t.is(r.violations, 0, 'every word only ever grew');
  t.true(r.final, 'the reader sees both writers’ last pass everywhere');
  t.true(r.samples > 0);
  t.log(`reader sampled ${r.samples} times, saw writes in progress: ${r.sawProgress}`);
  const dump = await m.dmabufDump();
  t.regex(dump, /^\s+1 \|\s+1024 kB \|\s+3 \|\s+3 \|\s+1\(\s+1\) refs \|\s+1\(\s+1\) refs \|\s+1\(\s+1\) refs \|$/m, 'dmabuf_dump table row');
  const [b] = await m.dmabufs();
  t.deepEqual(b!.cpuSync.write, { start: 2, end: 2 });
  t.deepEqual(b!.cpuSync.read, { start: 1, end: 1 });
  for (const [pr, addr, f] of [[owner, a0, fd], [w1, a1, fd1], [w2, a2, fd2]] as const) {
    await pr.call('unmap', addr);
    await pr.call('close', f);
  }
  t.is(await m.debugfs.read('dma_buf/bufinfo'), EMPTY_BUFINFO);
  await shutdownClean(t, m);
});

// ---- the kernel API (in-broker exporters and importers) -----------------------------------------------------

for (const name of [
  'dma_buf_attach_map_cached',
  'dma_buf_attach_map_uncached',
  'dma_buf_cpu_access',
  'dma_buf_vmap',
]) {
  test.serial(`kernel API kunit ${name}`, async (t) => {
    const m = await bootFor(t);
    const r = await kunit(m, name);
    t.deepEqual(r.failures, []);
    t.true(r.ok);
    const rep = await shutdownNoLeaks(t, m);
    // dma_buf_vmap's failing exporter is a WARN_ON_ONCE.
    t.is(rep.warnings.length, name === 'dma_buf_vmap' ? 1 : 0);
  });
}

test.serial('kernel API kunit dma_buf_export_checks (7 expected WARN_ONs)', async (t) => {
  const m = await bootFor(t);
  const r = await kunit(m, 'dma_buf_export_checks');
  t.deepEqual(r.failures, []);
  const rep = await shutdownNoLeaks(t, m);
  t.is(rep.warnings.length, 7);
  t.true(rep.warnings.every((w) => w.message.startsWith('dma_buf_export: WARN_ON')));
});

test.serial('kernel API kunit dma_buf_fd_get_put (as a process)', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'kapi' });
  const r = await kunit(m, 'dma_buf_fd_get_put', p);
  t.deepEqual(r.failures, []);
  t.true(r.ok);
  await shutdownClean(t, m);
});

test.serial('kernel API kunit dma_buf_dynamic_attach (2 expected WARNs)', async (t) => {
  const m = await bootFor(t);
  const r = await kunit(m, 'dma_buf_dynamic_attach');
  t.deepEqual(r.failures, []);
  const rep = await shutdownNoLeaks(t, m);
  t.deepEqual(rep.warnings.map((w) => w.message), [
    'dma_buf_dynamic_attach: WARN_ON(importer_ops && !move_notify)',
    'dma_buf_pin: WARN_ON(!dma_buf_attachment_is_dynamic)',
  ]);
});

test.serial('vunmap of a foreign mapping is a BUG, recorded as an oops', async (t) => {
  const m = await bootFor(t);
  const r = await kunit(m, 'dma_buf_vunmap_bug');
  t.false(r.ok);
  t.regex(r.oops ?? '', /^BUG: dma_buf_vunmap: .* unmapping a different mapping$/);
  t.deepEqual(r.failures, [], 'the deferred cleanup (the right vunmap, the put) ran fine');
  const rep = await m.shutdown({ quiet: true });
  t.deepEqual(rep.leaks, []);
  t.is(rep.oopses.length, 1);
  t.like(rep.oopses[0], { pid: 0, call: 'kunit(dma_buf_vunmap_bug)' });
});

test.serial('releasing a buffer with attachments WARNs', async (t) => {
  const m = await bootFor(t);
  const r = await kunit(m, 'dma_buf_release_with_attachment');
  t.deepEqual(r.failures, []);
  const rep = await shutdownNoLeaks(t, m);
  t.is(rep.warnings.length, 1);
  t.regex(rep.warnings[0]!.message, /^dma_buf_release: WARN_ON\(!list_empty\(&dmabuf->attachments\)\)/);
});
