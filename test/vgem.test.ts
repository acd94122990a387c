/**
 * vgem at /dev/dri/card0 (a driver worker, src/drivers/vgem, on the DRM core of src/drivers/drm): IGT's vgem_basic,
 * prime_self_import (on vgem) and dmabuf_sync_file ports (test/fixtures/igt-vgem.ts) with their subtest names, then
 * the DRM core's own rules — drm_ioctl's dispatch and copy rules, handles, PRIME's one-dma-buf-per-object and
 * one-handle-per-dma-buf, bufinfo's counts and attached devices, mmap of the card fd, vgem fences and their timeout.
 */
import test, { type ExecutionContext } from 'ava';
import { Machine, uapi } from '../src/index.js';
import type { IgtResult } from './fixtures/igt-vgem.js';
import type { RawIoctl } from './fixtures/drm.js';
import { passFd, settlesWithin, shutdownClean, spawnSock, waitParked, type SockProc } from './helpers/sim.js';
import { Idr } from '../src/drivers/drm/drm-gem.js';

const igt = new URL('./fixtures/igt-vgem.js', import.meta.url);
const drmFixture = new URL('./fixtures/drm.js', import.meta.url);
const HEADER = '\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n';
const { O_RDWR, O_CLOEXEC, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_PRIVATE, DRM_CLOEXEC, DRM_RDWR } = uapi;

async function bootVgem(t: ExecutionContext): Promise<Machine> {
  const m = await Machine.boot({ heaps: { system: {} }, drivers: ['vgem'] });
  t.teardown(async () => {
    await m.shutdown({ quiet: true }).catch(() => {});
  });
  return m;
}

const drm = (m: Machine, name: string): Promise<SockProc> => spawnSock(m, name, {}, drmFixture);

function allPass(t: ExecutionContext, results: IgtResult[], names: readonly string[]): void {
  t.deepEqual(
    results.map((r) => `${r.subtest}: ${r.result}${r.result === 'SUCCESS' ? '' : ` (${r.msg ?? ''})`}`),
    names.map((n) => `${n}: SUCCESS`),
  );
}

// ---- IGT ports --------------------------------------------------------------------------------------------------------

test.serial('IGT vgem_basic: every dma-buf and fence subtest passes on the vgem driver worker', async (t) => {
  const m = await bootVgem(t);
  const p = await m.spawn(igt, { name: 'vgem_basic' });
  const names = await p.call<string[]>('VGEM_BASIC_SUBTESTS_LIST');
  t.deepEqual(names, [
    'setversion',
    'second-client',
    'create',
    'mmap',
    'bad-flag',
    'bad-pad',
    'bad-handle',
    'bad-fence',
    'busy-fence',
    'dmabuf-export',
    'dmabuf-mmap',
    'dmabuf-fence',
    'dmabuf-fence-before',
  ]);
  const results = await p.call<IgtResult[]>('vgem_basic', names);
  allPass(t, results, names);
  t.is(results[0]!.msg, 'vgem DRM interface v1.4, device v1.0', 'igt_info of setversion');
  await p.kill();
  t.deepEqual(await m.dmabufs(), [], 'every dma-buf went with the objects');
  await shutdownClean(t, m);
});

test.serial('IGT prime_self_import on vgem: handle identity, flink, fd dup, llseek and both gem_close races', async (t) => {
  const m = await bootVgem(t);
  const p = await m.spawn(igt, { name: 'prime_self_import' });
  const names = await p.call<string[]>('PRIME_SELF_IMPORT_SUBTESTS_LIST');
  t.deepEqual(names, [
    'basic-with_one_bo',
    'basic-with_one_bo_two_files',
    'basic-with_two_bos',
    'basic-with_fd_dup',
    'export-vs-gem_close-race',
    'reimport-vs-gem_close-race',
    'basic-llseek-size',
    'basic-llseek-bad',
  ]);
  allPass(t, await p.call<IgtResult[]>('prime_self_import', names, { threads: 2, ms: 1000 }), names);
  await p.kill();
  t.deepEqual(await m.dmabufs(), []);
  await shutdownClean(t, m);
});

test.serial('IGT dmabuf_sync_file with real vgem fences: export snapshots, import usages, busy checks', async (t) => {
  const m = await bootVgem(t);
  const p = await m.spawn(igt, { name: 'dmabuf_sync_file' });
  const names = await p.call<string[]>('DMABUF_SYNC_FILE_SUBTESTS_LIST');
  t.deepEqual(names, [
    'export-basic',
    'export-before-signal',
    'export-multiwait',
    'export-wait-after-attach',
    'import-basic',
    'import-multiple-read-only',
    'import-multiple-read-write',
  ]);
  allPass(t, await p.call<IgtResult[]>('dmabuf_sync_file', names), names);
  await p.kill();
  t.is(await m.debugfs.read('sync/info'), 'objs:\n--------------\nfences:\n--------------\n', 'no timeline left');
  await shutdownClean(t, m);
});

// ---- drm_ioctl ----------------------------------------------------------------------------------------------------

test.serial('drm_ioctl: type, nr, permissions, EFAULT, zero-extension and truncation, VERSION, GET_CAP', async (t) => {
  const m = await bootVgem(t);
  const p = await drm(m, 'drm-ioctl');
  const card = await p.ok<number>('open', '/dev/dri/card0', O_RDWR);
  const raw = (fd: number, cmd: number, len: number | null, fields: [number, number | string][] = [], fill = 0): Promise<RawIoctl> =>
    p.proc.call<RawIoctl>('rawIoctl', fd, cmd, len, fields, fill);
  const { _IOWR, _IOW, _IOR } = uapi;
  const c = uapi.drm_mode_create_dumb;

  t.is((await raw(card, _IOWR('e', 0xb2, 32), 32)).code, 'ENOTTY', 'type byte other than d');
  t.is((await raw(card, _IOWR('d', 0x9f, 8), 8)).code, 'EINVAL', 'driver nr past vgem\'s two');
  t.is((await raw(card, _IOWR('d', 0x40, 8), 8)).code, 'EINVAL', 'driver nr 0x40: no function');
  t.is((await raw(card, _IOWR('d', 0xef, 8), 8)).code, 'EINVAL', 'core nr past the table');
  t.is((await raw(card, uapi.DRM_IOCTL_MODE_GETRESOURCES, 64)).code, 'EOPNOTSUPP', 'KMS on vgem');
  t.is((await raw(card, _IOWR('d', 0xbf, 8), 8)).code, 'EOPNOTSUPP', 'syncobj on vgem');
  t.is((await raw(card, uapi.DRM_IOCTL_SET_CLIENT_CAP, 16, [[0, 2], [8, 1]])).code, 'EOPNOTSUPP', 'client caps are KMS caps');

  // Zero-extension: an older 16-byte CREATE_DUMB has no size field: the kernel reads zeros, copies back 16 bytes.
  const short = await raw(card, _IOWR('d', 0xb2, 16), 16, [[c.width, 64], [c.height, 64], [c.bpp, 32]]);
  t.deepEqual([short.code, short.bytes.length], [null, 16], 'created (handle 1), but a 16-byte struct has no room for it');
  // Truncation: a longer struct's tail is neither read nor written.
  const long = await raw(card, _IOWR('d', 0xb2, 48), 48, [[c.width, 64], [c.height, 1], [c.bpp, 8]], 0x77);
  t.is(long.code, null, 'garbage in fields the 32-byte struct does not have is ignored');
  t.is(new DataView(new Uint8Array(long.bytes).buffer).getUint32(c.handle, true), 2, 'the next handle');
  t.deepEqual(long.bytes.slice(32), new Array(16).fill(0x77));
  // Direction: _IOW (no copy out) creates the object but the caller never sees the handle; _IOR reads zeros.
  const w = await raw(card, _IOW('d', 0xb2, 32), 32, [[c.width, 1], [c.height, 1], [c.bpp, 8]]);
  t.is(w.code, null);
  t.is(w.bytes[c.handle], 0, 'no copy back');
  t.is((await raw(card, _IOR('d', 0xb2, 32), 32, [[c.width, 1], [c.height, 1], [c.bpp, 8]])).code, 'EINVAL', '_IOR: nothing copied in');
  // EFAULT: the buffer shorter than the cmd says, or none at all.
  t.is((await raw(card, uapi.DRM_IOCTL_MODE_CREATE_DUMB, 16, [[c.width, 1], [c.height, 1], [c.bpp, 8]])).code, 'EFAULT');
  t.is((await raw(card, uapi.DRM_IOCTL_MODE_CREATE_DUMB, null)).code, 'EFAULT');
  // Overflow rules of drm_mode_create_dumb (32-bit sizes).
  const dumb = (w: number, h: number, bpp: number): Promise<string | null> =>
    raw(card, uapi.DRM_IOCTL_MODE_CREATE_DUMB, 32, [[c.width, w], [c.height, h], [c.bpp, bpp]]).then((r) => r.code);
  t.is(await dumb(0xffff_ffff, 1, 0xffff_fff8), 'EINVAL', 'bpp > U32_MAX - 8');
  t.is(await dumb(0x4000_0000, 1, 64), 'EINVAL', 'cpp × width overflows');
  t.is(await dumb(0x10000, 0x10000, 8), 'EINVAL', 'height × stride overflows');
  t.is(await dumb(0xffff_f001, 1, 8), 'EINVAL', 'PAGE_ALIGN(size) wraps to 0');

  // Permissions: SET_VERSION is master-only; render clients get only RENDER_ALLOW ioctls.
  const second = await p.ok<number>('open', '/dev/dri/card0', O_RDWR);
  const sv = uapi.drm_set_version;
  t.is((await raw(second, uapi.DRM_IOCTL_SET_VERSION, 16, [[sv.drm_di_major, -1], [sv.drm_dd_major, -1]])).code, 'EACCES', 'not master');
  t.is((await raw(card, uapi.DRM_IOCTL_SET_VERSION, 16, [[sv.drm_di_major, 1], [sv.drm_di_minor, 5], [sv.drm_dd_major, -1]])).code, 'EINVAL', 'di 1.5');
  const render = await p.ok<number>('open', '/dev/dri/renderD128', O_RDWR);
  t.is((await raw(render, uapi.DRM_IOCTL_GEM_FLINK, 8, [[0, 1]])).code, 'EACCES', 'FLINK is not for render clients');
  t.is((await raw(render, uapi.DRM_IOCTL_SET_VERSION, 16)).code, 'EACCES');
  t.is((await raw(render, uapi.DRM_IOCTL_MODE_CREATE_DUMB, 32, [[c.width, 1], [c.height, 1], [c.bpp, 8]])).code, null, 'dumb buffers are');
  // VERSION: min(len, strlen) bytes without a NUL, the full lengths back; NULL pointers just get the lengths.
  t.deepEqual(await p.fx('version', card, 4), { major: 1, minor: 0, patch: 0, lens: [4, 8, 20], strs: ['vgem', '2012', 'Virt'] });
  t.deepEqual(await p.fx('version', render, 0), { major: 1, minor: 0, patch: 0, lens: [4, 8, 20], strs: ['', '', ''] });
  t.deepEqual(await p.fx('version', card, 24), {
    major: 1,
    minor: 0,
    patch: 0,
    lens: [4, 8, 20],
    strs: ['vgem'.padEnd(24, '.'), '20120112'.padEnd(24, '.'), 'Virtual GEM provider'.padEnd(24, '.')],
  });
  // GET_CAP: PRIME import|export and the monotonic timestamps on every driver; KMS caps EOPNOTSUPP on vgem.
  t.is(await p.ok<bigint>('drmGetCap', render, uapi.DRM_CAP_PRIME), 3n);
  t.is(await p.ok<bigint>('drmGetCap', card, uapi.DRM_CAP_TIMESTAMP_MONOTONIC), 1n);
  t.is(await p.ok<bigint>('drmGetCap', card, uapi.DRM_CAP_SYNCOBJ), 0n);
  t.is(await p.err('drmGetCap', card, uapi.DRM_CAP_DUMB_BUFFER), 'EOPNOTSUPP');
  t.is(await p.err('drmGetCap', card, 0x1234), 'EOPNOTSUPP');
  for (const fd of [card, second, render]) await p.ok('close', fd);
  await p.proc.kill();
  await shutdownClean(t, m);
});

test.serial('drm_ioctl copies the struct back when the handler fails; MAP_PRIVATE of the card is refused', async (t) => {
  const m = await bootVgem(t);
  const p = await drm(m, 'copy-out');
  const card = await p.ok<number>('open', '/dev/dri/card0', O_RDWR);
  const c = uapi.drm_mode_create_dumb;
  const bad = await p.proc.call<RawIoctl>('rawIoctl', card, uapi.DRM_IOCTL_MODE_CREATE_DUMB, 32, [[c.handle, 0xdead], [c.pitch, 0xbeef], [c.size, '12345']]);
  t.is(bad.code, 'EINVAL', '0x0x0');
  t.deepEqual(bad.bytes.slice(16, 32), new Array(16).fill(0), 'handle, pitch and size zeroed, and copied back');
  // MAP_PRIVATE of a writable card file: a copy-on-write mapping, refused by the shmem helpers (EINVAL).
  const o = await p.ok<{ handle: number; size: number }>('drmModeCreateDumbBuffer', card, 1024, 1, 32);
  const off = await p.ok<number>('drmModeMapDumbBuffer', card, o.handle);
  t.is(await p.fxErr('mapAt', card, o.size, PROT_READ | PROT_WRITE, MAP_PRIVATE, off), 'EINVAL');
  await p.ok('close', card);
  await p.proc.kill();
  await shutdownClean(t, m);
});

// ---- handles, PRIME, bufinfo --------------------------------------------------------------------------------------------

test.serial('handles: per file, lowest free from 1; GEM_CLOSE/DESTROY_DUMB EINVAL, other ioctls ENOENT', async (t) => {
  const m = await bootVgem(t);
  const p = await drm(m, 'handles');
  const a = await p.ok<number>('drmOpenCard', 0);
  const b = await p.ok<number>('drmOpenCard', 0);
  const create = async (fd: number): Promise<number> => (await p.ok<{ handle: number }>('drmModeCreateDumbBuffer', fd, 64, 64, 32)).handle;
  t.deepEqual([await create(a), await create(a), await create(a)], [1, 2, 3]);
  t.is(await create(b), 1, 'each open is its own namespace');
  await p.ok('drmCloseBufferHandle', a, 2);
  t.is(await create(a), 2, 'lowest free handle reused');
  t.is(await p.err('drmCloseBufferHandle', a, 7), 'EINVAL');
  t.is(await p.err('drmCloseBufferHandle', a, 0), 'EINVAL');
  t.is(await p.err('drmModeDestroyDumbBuffer', a, 7), 'EINVAL');
  t.is(await p.err('drmModeMapDumbBuffer', a, 7), 'ENOENT');
  t.is(await p.err('drmPrimeHandleToFD', a, 7, 0), 'ENOENT');
  t.is(await p.err('vgemFenceAttach', a, 7, 0), 'ENOENT');
  t.is(await p.err('drmPrimeHandleToFD', a, 1, O_CLOEXEC | 0x40), 'EINVAL', 'flags beyond DRM_CLOEXEC | DRM_RDWR');
  t.is(await p.err('drmPrimeFDToHandle', a, 99), 'EBADF');
  t.is(await p.err('drmPrimeFDToHandle', a, 0), 'EINVAL', 'fd 0 is /dev/null, not a dma-buf');
  await p.ok('close', a);
  await p.ok('close', b);
  await p.proc.kill();
  await shutdownClean(t, m);
});

test.serial('PRIME: one dma-buf per object, one handle per dma-buf per file, bufinfo counts and Attached Devices', async (t) => {
  const m = await bootVgem(t);
  const p = await drm(m, 'prime');
  const a = await p.ok<number>('drmOpenCard', 0);
  const b = await p.ok<number>('drmOpenCard', 0);
  const { handle, size } = await p.ok<{ handle: number; size: number }>('drmModeCreateDumbBuffer', a, 1024, 4, 32);
  t.is(size, 16384);
  t.deepEqual(await m.dmabufs(), [], 'no dma-buf before the first export');
  const fd1 = await p.ok<number>('drmPrimeHandleToFD', a, handle, DRM_CLOEXEC);
  const fd2 = await p.ok<number>('drmPrimeHandleToFD', a, handle, DRM_CLOEXEC | DRM_RDWR);
  const [buf] = await m.dmabufs();
  t.is((await m.dmabufs()).length, 1, 'the second export returns the same dma-buf');
  // count: 2 fds + the object's cached reference + file a's lookup entry.
  t.like(buf, { size: 16384, expName: 'drm', fileCount: 4 });
  t.is(await p.fxErr('mapAt', fd2, 16384, PROT_READ | PROT_WRITE, MAP_SHARED, 0), 'EACCES', 'first exported read-only: stays read-only');
  // Import into b: its own object (self-import of our own dma-buf: the object itself, no attachment).
  const hb = await p.ok<number>('drmPrimeFDToHandle', b, fd1);
  t.is(hb, 1);
  t.is(await p.ok('drmPrimeFDToHandle', b, fd2), hb, 'the same dma-buf through another fd: the same handle');
  t.is(await p.ok('drmPrimeFDToHandle', a, fd1), handle, 'self-import on the exporting file: the exporting handle');
  t.like((await m.dmabufs())[0], { fileCount: 5, attachments: [] }, '+ b\'s lookup entry; own objects are not attached');
  await p.ok('close', fd1);
  await p.ok('close', fd2);
  t.like((await m.dmabufs())[0], { fileCount: 3 }, 'the handles keep it: cached + two lookup entries');
  await p.ok('drmCloseBufferHandle', a, handle);
  t.like((await m.dmabufs())[0], { fileCount: 2 }, 'a\'s entry gone with its handle');
  await p.ok('drmCloseBufferHandle', b, hb);
  t.deepEqual(await m.dmabufs(), [], 'last handle: the cached reference goes and the dma-buf with it');

  // A foreign dma-buf (a heap buffer): attached as "vgem", one more reference until the object dies.
  const heapFd = await p.ok<number>('heapOpen', 'system');
  const hbuf = await p.ok<number>('heapAlloc', heapFd, 8192);
  const imp = await p.ok<number>('drmPrimeFDToHandle', a, hbuf);
  const ino = (await m.dmabufs())[0]!.ino;
  const bufinfo = await m.debugfs.read('dma_buf/bufinfo');
  t.is(
    bufinfo,
    `${HEADER}00008192\t00000002\t00080007\t00000004\tsystem\t${String(ino).padStart(8, '0')}\t<none>\n` +
      '\tAttached Devices:\n\tvgem\nTotal 1 devices attached\n\n\nTotal 1 objects, 8192 bytes\n',
    'fd + import reference + cached + lookup entry; vgem attached',
  );
  t.is(await p.err('drmModeMapDumbBuffer', a, imp), 'EINVAL', 'MAP_DUMB of an import');
  t.is(await p.ok('drmPrimeFDToHandle', b, hbuf), 1, 'b imports it too, at its own lowest free handle');
  await p.ok('close', hbuf);
  t.is((await m.dmabufs()).length, 1, 'a handle keeps the buffer alive after its fd is closed');
  const again = await p.ok<number>('drmPrimeHandleToFD', a, imp, DRM_CLOEXEC);
  t.is((await m.dmabufs())[0]!.ino, ino, 'an import re-exports the original dma-buf');
  await p.ok('close', again);
  await p.ok('close', a);
  await p.ok('close', b);
  t.deepEqual(await m.dmabufs(), [], 'closing the files released the imports: detached and put');
  await p.ok('close', heapFd);
  await p.proc.kill();
  await shutdownClean(t, m);
});

test.serial('mmap of the card fd: at the fake offset, by a file with a handle; outlives GEM_CLOSE; dma-buf mmap shares it', async (t) => {
  const m = await bootVgem(t);
  const p = await drm(m, 'mmap');
  const a = await p.ok<number>('drmOpenCard', 0);
  const b = await p.ok<number>('drmOpenCard', 0);
  const { handle, size } = await p.ok<{ handle: number; size: number }>('drmModeCreateDumbBuffer', a, 1024, 2, 32);
  const off = await p.ok<number>('drmModeMapDumbBuffer', a, handle);
  t.is(off, 2 ** 32, 'the first fake offset: DRM_FILE_PAGE_OFFSET_START pages');
  t.is(await p.ok('drmModeMapDumbBuffer', a, handle), off, 'the same offset again');
  const RW = PROT_READ | PROT_WRITE;
  t.is(await p.fxErr('mapAt', a, size, RW, MAP_SHARED, off + 4096), 'EINVAL', 'not at the start');
  t.is(await p.fxErr('mapAt', a, size + 4096, RW, MAP_SHARED, off), 'EINVAL', 'longer than the object');
  t.is(await p.fxErr('mapAt', a, size, RW, MAP_SHARED, 0), 'EINVAL', 'no object at offset 0');
  t.is(await p.fxErr('mapAt', b, size, RW, MAP_SHARED, off), 'EACCES', 'another file without a handle');
  const addr = await p.fx<number>('mapAt', a, size, RW, MAP_SHARED, off);
  await p.proc.call('pokeMap', addr, 100, [1, 2, 3]);
  await p.ok('drmCloseBufferHandle', a, handle);
  t.deepEqual(await p.proc.call('peekMap', addr, 100, 3), [1, 2, 3], 'the mapping outlives GEM_CLOSE');
  // A second object; its dma-buf (exported read-write) maps the same pages as the card fd.
  const o2 = await p.ok<{ handle: number; size: number }>('drmModeCreateDumbBuffer', a, 1024, 1, 32);
  const dfd = await p.ok<number>('drmPrimeHandleToFD', a, o2.handle, DRM_CLOEXEC | DRM_RDWR);
  const viaBuf = await p.fx<number>('mapAt', dfd, o2.size, RW, MAP_SHARED, 0);
  const viaCard = await p.fx<number>('mapDumb', a, o2.handle, o2.size);
  await p.proc.call('pokeMap', viaBuf, 0, [9, 8, 7, 6]);
  t.deepEqual(await p.proc.call('peekMap', viaCard, 0, 4), [9, 8, 7, 6], 'one set of pages');
  t.is(await p.proc.call('mapSabBytes', viaCard), o2.size, 'the mapping holds the object\'s own memory');
  for (const x of [addr, viaBuf, viaCard]) await p.fx('unmap', x);
  await p.ok('close', dfd);
  await p.ok('close', a);
  await p.ok('close', b);
  await p.proc.kill();
  await shutdownClean(t, m);
});

test.serial('a 2 GiB dumb buffer never touched allocates nothing; the first mmap does', async (t) => {
  const m = await bootVgem(t);
  const p = await drm(m, 'big');
  const a = await p.ok<number>('drmOpenCard', 0);
  const before = (await m.stats()).objects;
  const big = await p.ok<{ handle: number; size: number; pitch: number }>('drmModeCreateDumbBuffer', a, 1 << 15, 1 << 15, 16);
  t.like(big, { size: 2 ** 31, pitch: 1 << 16 });
  t.deepEqual((await m.stats()).objects, before, 'no pages, no kernel object');
  await p.ok('drmCloseBufferHandle', a, big.handle);
  const small = await p.ok<{ handle: number; size: number }>('drmModeCreateDumbBuffer', a, 16, 16, 32);
  const addr = await p.fx<number>('mapDumb', a, small.handle, small.size);
  t.not(JSON.stringify((await m.stats()).objects), JSON.stringify(before), 'the first mmap allocated the pages');
  await p.fx('unmap', addr);
  await p.ok('close', a);
  await p.proc.kill();
  await shutdownClean(t, m);
});

// ---- vgem fences ------------------------------------------------------------------------------------------------------

test.serial('vgem fences: ids never reused, EBUSY rules, closing the file signals its fences, bufinfo fence lines', async (t) => {
  const m = await bootVgem(t);
  const p = await drm(m, 'fences');
  const a = await p.ok<number>('drmOpenCard', 0);
  const { handle } = await p.ok<{ handle: number }>('drmModeCreateDumbBuffer', a, 1024, 1, 32);
  const fd = await p.ok<number>('drmPrimeHandleToFD', a, handle, DRM_CLOEXEC);
  const f1 = await p.ok<number>('vgemFenceAttach', a, handle, 0);
  const f2 = await p.ok<number>('vgemFenceAttach', a, handle, 0);
  t.deepEqual([f1, f2], [1, 2]);
  t.is(await p.err('vgemFenceAttach', a, handle, uapi.VGEM_FENCE_WRITE), 'EBUSY', 'a writer over readers');
  const ino = String((await m.dmabufs())[0]!.ino).padStart(8, '0');
  t.is(
    await m.debugfs.read('dma_buf/bufinfo'),
    `${HEADER}00004096\t00000000\t00080005\t00000003\tdrm\t${ino}\t<none>\n` +
      '\tread fence:vgem unbound seq 1 unsignalled\n\tread fence:vgem unbound seq 1 unsignalled\n' +
      '\tAttached Devices:\nTotal 0 devices attached\n\n\nTotal 1 objects, 4096 bytes\n',
    'one context per fence: two READ entries',
  );
  await p.ok('vgemFenceSignal', a, f1);
  t.is(await p.err('vgemFenceSignal', a, f1), 'ENOENT', 'already signalled through here');
  await p.ok('vgemFenceSignal', a, f2);
  const f3 = await p.ok<number>('vgemFenceAttach', a, handle, uapi.VGEM_FENCE_WRITE);
  t.is(f3, 3, 'signalled ids are not reused');
  t.is(await p.err('vgemFenceAttach', a, handle, 0), 'EBUSY', 'a reader over a writer');
  t.is(await p.err('vgemFenceSignal', a, 0), 'ENOENT', 'id 0 never exists');
  // Another file's fence ids are its own.
  const b = await p.ok<number>('drmOpenCard', 0);
  t.is(await p.err('vgemFenceSignal', b, f3), 'ENOENT');
  t.is(await p.ok('pollOne', fd, uapi.POLLIN, 0), 0, 'the writer blocks readers');
  await p.ok('close', a); // vgem_fence_close signals f3
  t.is(await p.ok('pollOne', fd, uapi.POLLIN | uapi.POLLOUT, 0), uapi.POLLIN | uapi.POLLOUT, 'closing the file signalled it');
  await p.ok('close', fd);
  await p.ok('close', b);
  await p.proc.kill();
  await shutdownClean(t, m);
});

test.serial('a process killed with a vgem fence pending: its file release signals the fence, the waiter wakes', async (t) => {
  const m = await bootVgem(t);
  const gpu = await drm(m, 'gpu');
  const viewer = await drm(m, 'viewer');
  const card = await gpu.ok<number>('drmOpenCard', 0);
  const { handle } = await gpu.ok<{ handle: number }>('drmModeCreateDumbBuffer', card, 1024, 1, 32);
  const fd = await gpu.ok<number>('drmPrimeHandleToFD', card, handle, DRM_CLOEXEC);
  await gpu.ok('vgemFenceAttach', card, handle, uapi.VGEM_FENCE_WRITE);
  const vfd = await passFd(m, gpu.proc, fd, viewer.proc);
  const waiting = viewer.fx<number>('poll1', vfd, uapi.POLLIN, 20_000);
  await waitParked(m, 1);
  t.false(await settlesWithin(waiting, 50), 'the reader waits for the writer');
  const t0 = Date.now();
  await gpu.proc.kill();
  t.is(await waiting, uapi.POLLIN, 'the killed writer\'s fence was signalled by its file\'s release');
  t.true(Date.now() - t0 < 5000, 'long before the 10 s timeout');
  t.like((await m.dmabufs())[0], { fileCount: 1, fences: [{ usage: 'write', signaled: true }] }, 'the object went with the process; the viewer\'s fd keeps the dma-buf');
  await viewer.ok('close', vfd);
  t.deepEqual(await m.dmabufs(), []);
  await viewer.proc.kill();
  await shutdownClean(t, m);
});

test.serial('vgem fence timeout: 10 s later the fence signals itself and FENCE_SIGNAL reports ETIMEDOUT', async (t) => {
  t.timeout(30_000);
  const m = await bootVgem(t);
  const p = await drm(m, 'timeout');
  const a = await p.ok<number>('drmOpenCard', 0);
  const { handle } = await p.ok<{ handle: number }>('drmModeCreateDumbBuffer', a, 1024, 1, 32);
  const fd = await p.ok<number>('drmPrimeHandleToFD', a, handle, DRM_CLOEXEC);
  const f = await p.ok<number>('vgemFenceAttach', a, handle, uapi.VGEM_FENCE_WRITE);
  const t0 = Date.now();
  t.is(await p.ok('pollOne', fd, uapi.POLLIN, 20_000), uapi.POLLIN, 'a blocking poll wakes when the timer fires');
  const waited = Date.now() - t0;
  t.true(waited >= 9_000 && waited < 15_000, `woke after ${waited} ms`);
  t.is(await p.err('vgemFenceSignal', a, f), 'ETIMEDOUT');
  t.is(await p.err('vgemFenceSignal', a, f), 'ENOENT', 'and it is gone');
  await p.ok('close', fd);
  await p.ok('close', a);
  await p.proc.kill();
  await shutdownClean(t, m);
});


test('Idr: the lowest free id from its base, also after removals below and above the last one; kept ids stay taken', (t) => {
  const idr = new Idr<string>(1);
  t.deepEqual([idr.alloc('a'), idr.alloc('b'), idr.alloc('c'), idr.alloc(null)], [1, 2, 3, 4]);
  idr.remove(2);
  t.is(idr.alloc('x'), 2, 'a hole below is found');
  t.is(idr.alloc('y'), 5);
  idr.remove(5);
  idr.remove(1);
  t.is(idr.alloc('z'), 1);
  t.is(idr.alloc('w'), 5);
  t.is(idr.replace(4, 'four'), null, 'an id kept with NULL (vgem signalled fences) stays allocated');
  t.is(idr.alloc('v'), 6);
  idr.remove(99);
  t.is(idr.alloc('u'), 7, 'removing an id never allocated changes nothing');
  const big = new Idr<number>(1);
  const t0 = performance.now();
  for (let i = 0; i < 100_000; i++) big.alloc(i);
  t.is(big.alloc(-1), 100_001);
  t.log(`100k allocations in ${(performance.now() - t0).toFixed(0)} ms`);
});
