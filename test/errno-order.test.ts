/**
 * Where one call has several things wrong, Linux reports them in a fixed order; these pin the orders the model
 * reproduces (mmap, poll, read, lseek) and that nothing a process does after exit() reaches the kernel.
 */
import test from 'ava';
import { uapi } from '../src/index.js';
import { withMachine } from './helpers/sim.js';

const fixture = new URL('./fixtures/basic.js', import.meta.url);
const { MAP_SHARED, PROT_READ, PROT_WRITE, SEEK_SET } = uapi;

test('mmap: unaligned offset, then the fd (EBADF), then len and map type (EINVAL); unknown PROT bits are ignored', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture);
    const mmap = (len: number, prot: number, flags: number, fd: number, off: number) => p.call('tryCall', 'mmap', 0, len, prot, flags, fd, off);
    t.like(await mmap(4096, PROT_READ, MAP_SHARED, 99, 1), { code: 'EINVAL' }, 'sys_mmap checks the offset first');
    t.like(await mmap(0, PROT_READ, MAP_SHARED, 99, 0), { code: 'EBADF' }, 'fget before do_mmap looks at len');
    t.like(await mmap(4096, PROT_READ, 0, 99, 0), { code: 'EBADF' }, 'fget before the map type');
    t.like(await mmap(0, PROT_READ, MAP_SHARED, 0, 0), { code: 'EINVAL' }, 'len 0 on a valid fd');
    t.like(await mmap(4096, PROT_READ, 0, 0, 0), { code: 'EINVAL' }, 'no map type on a valid fd');
    t.like(await mmap(4096, PROT_READ | PROT_WRITE | 0x100, MAP_SHARED, 0, 0), { code: 'ENODEV' }, '/dev/null has no mmap: ENODEV, not EINVAL for the prot bit');
  });
});

test('poll: nfds above the soft RLIMIT_NOFILE is EINVAL', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture);
    t.deepEqual(await p.call('pollMany', 100), { ok: 100 });
    await p.call('setNofileSoft', 64);
    t.deepEqual(await p.call('pollMany', 64), { ok: 64 });
    t.deepEqual(await p.call('pollMany', 65), { code: 'EINVAL' });
  });
});

test('read: a file not open for reading is EBADF before a bad count; lseek: bad whence is EINVAL before ESPIPE', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture);
    const wo = await p.call<number>('openNullWriteOnly');
    t.like(await p.call('tryCall', 'read', wo, -1), { code: 'EBADF' });
    t.like(await p.call('tryCall', 'read', 0, -1), { code: 'EFAULT' });
    t.like(await p.call('tryCall', 'lseek', 0, 0, 9), { code: 'EINVAL' });
    t.like(await p.call('tryCall', 'lseek', 0, 0, SEEK_SET), { ok: 0 });
  });
});

test('after exit() a process\'s syscalls are refused before they reach the kernel: nothing leaks', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture, { name: 'zombie' });
    t.deepEqual(await p.call('exitThenKeepGoing'), ['ProcessExit', 'ProcessExit', 'ProcessExit']);
    await p.kill();
    t.deepEqual((await m.stats()).objects, {}, 'no file, buffer or fence left behind');
  });
});
