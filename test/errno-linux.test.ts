/**
 * errnos checked against the kernel source (mm/mmap.c + mm/vma.c do_mmap/do_vmi_munmap, mm/util.c, fs/namei.c
 * getname/walk, fs/open.c build_open_flags/do_open, fs/read_write.c): the range checks of munmap and mmap, the
 * validation half of MAP_SHARED_VALIDATE, and the path errors of open.
 */
import test from 'ava';
import { uapi } from '../src/index.js';
import type { R } from './fixtures/common.js';
import { withMachine } from './helpers/sim.js';

const fixture = new URL('./fixtures/args.js', import.meta.url);
const { MAP_SHARED, MAP_SHARED_VALIDATE, O_CREAT, O_DIRECTORY, O_EXCL, O_RDONLY, O_RDWR } = uapi;
/** MAP_SYNC (0x80000): not a legacy flag, and no dma-buf supports it. */
const MAP_SYNC = 0x80000;

test('munmap: a length past TASK_SIZE is EINVAL and unmaps nothing (do_vmi_munmap)', async (t) => {
  // Before: munmap(0, 2**60) returned 0 and dropped every mapping of the process.
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture);
    const r = await p.call<{ results: R<number>[]; held: boolean; own: R<number> }>('bogusMunmaps', undefined);
    t.deepEqual(r.results, [{ err: 'EINVAL' }, { err: 'EINVAL' }, { err: 'EINVAL' }]);
    t.true(r.held, 'the mapping survived');
    t.deepEqual(r.own, { ok: 0 });
  }, { heaps: { system: {} } });
});

test('mmap: MAP_SHARED_VALIDATE refuses flags it does not know (EOPNOTSUPP), MAP_SHARED drops them; range errnos', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture);
    const mmap = (flags: number, len = 4096, off = 0) => p.call<string>('mmapWith', flags, len, off);
    t.is(await mmap(MAP_SHARED_VALIDATE | MAP_SYNC), 'EOPNOTSUPP', 'before: it mapped');
    t.is(await mmap(MAP_SHARED_VALIDATE | 0x8000000), 'EOPNOTSUPP', 'an undefined bit');
    t.is(await mmap(MAP_SHARED | MAP_SYNC), 'ok', 'MAP_SHARED ignores what it does not know');
    t.is(await mmap(MAP_SHARED_VALIDATE), 'ok');
    t.is(await mmap(MAP_SHARED, 2 ** 50), 'ENOMEM', 'longer than the address space: get_unmapped_area');
    t.is(await mmap(MAP_SHARED, -1), 'ENOMEM', 'PAGE_ALIGN(SIZE_MAX) wraps to 0');
    t.is(await mmap(MAP_SHARED, 4096, -4096), 'EOVERFLOW', 'an aligned offset past MAX_LFS_FILESIZE: file_mmap_ok');
    t.is(await mmap(MAP_SHARED, 4096, -1), 'EINVAL', 'an unaligned one');
  }, { heaps: { system: {} } });
});

test('open: ENAMETOOLONG at PATH_MAX (with the NUL) and for a component over NAME_MAX where the lookup checks it', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture);
    const open = (path: string, flags = O_RDONLY) => p.call<string>('openWith', path, flags);
    t.is(await open(`/${'a'.repeat(4095)}`), 'ENAMETOOLONG', '4096 bytes leave no room for the NUL');
    t.is(await open(`/${'a'.repeat(254)}/${'b'.repeat(3839)}`), 'ENOENT', '4095 bytes: walked, and /aaa… does not exist');
    t.is(await open(`/dev/${'a'.repeat(256)}`), 'ENAMETOOLONG', 'devtmpfs: simple_lookup');
    t.is(await open(`/dev/${'a'.repeat(255)}`), 'ENOENT');
    t.is(await open(`/sys/kernel/debug/${'a'.repeat(256)}/x`), 'ENAMETOOLONG', 'debugfs: simple_lookup');
    t.is(await open(`/proc/self/${'a'.repeat(256)}`), 'ENOENT', 'procfs does not check the length');
    t.is(await open(`/${'a'.repeat(256)}`), 'ENAMETOOLONG', 'the root filesystem checks it');
    t.is(await open(`/nope/${'a'.repeat(256)}`), 'ENOENT', 'a missing directory ends the walk first');
    t.is(await open(''), 'ENOENT', 'an empty path');
  });
});

test('open: O_DIRECTORY or a trailing slash on a device is ENOTDIR; O_CREAT|O_EXCL on one is EEXIST', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture);
    const open = (path: string, flags = O_RDONLY) => p.call<string>('openWith', path, flags);
    t.is(await open('/dev/null', O_DIRECTORY), 'ENOTDIR');
    t.is(await open('/dev/null/'), 'ENOTDIR');
    t.is(await open('/dev/null/x'), 'ENOTDIR', 'walking through a device');
    t.is(await open('/dev/null/..'), 'ENOTDIR');
    t.is(await open('/dev/null', O_CREAT | O_EXCL | O_RDWR), 'EEXIST');
    t.is(await open('/dev/null', O_CREAT | O_RDWR), 'ok', 'O_CREAT alone opens what exists');
    t.is(await open('/dev/null/', O_CREAT | O_RDWR), 'EISDIR', 'a trailing slash names a directory');
    t.is(await open('/dev/null', O_CREAT | O_DIRECTORY), 'EINVAL', 'build_open_flags refuses the pair (Linux 6.4)');
    t.is(await open('/dev/dma_heap/system', O_CREAT | O_EXCL | O_RDONLY), 'EEXIST');
    // The walk resolves what Linux resolves.
    t.is(await open('/dev//null'), 'ok');
    t.is(await open('/dev/./null'), 'ok');
    t.is(await open('/dev/dma_heap/../null'), 'ok');
    t.is(await p.call('rawOpen', [...Buffer.from('/dev/null\0/junk')], O_RDONLY), 'ok', 'a NUL ends the C string');
  }, { heaps: { system: {} } });
});

test('read: a count reaching past the user address space is EFAULT (access_ok)', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture);
    t.deepEqual(await p.call('js', 'read', 0, 2 ** 50), { err: 'EFAULT' });
    t.true('ok' in (await p.call<object>('js', 'read', 0, 2 ** 40)), 'within it: a read from /dev/null');
  });
});
