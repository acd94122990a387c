/**
 * Drivers as workers (issue 7): a user-written driver (test/fixtures/drv-exporter) registers a device, serves
 * ioctls in its own worker, exports buffers processes map, and imports buffers through the kernel API — every
 * error path, the attach/map/detach lifetimes, cache_sgt_mapping, vmap counting across workers, I/O memory, moves.
 */
import test from 'ava';
import { Machine, type Proc } from '../src/index.js';
import { withMachine } from './helpers/sim.js';

const exporter = new URL('./fixtures/drv-exporter.js', import.meta.url);
const user = new URL('./fixtures/drv-user.js', import.meta.url);

async function proc(m: Machine, name = 'user'): Promise<Proc> {
  return m.spawn(user, { name });
}
const run = <T = unknown>(p: Proc, path: string, req: Record<string, unknown>): Promise<T> => p.call<T>('run', path, req);

test('a driver registers its device; ioctls run in its worker; unknown built-in names are refused', async (t) => {
  await withMachine(t, async (m) => {
    await m.loadDriver(exporter, { name: 'testdrv' });
    const p = await proc(m);
    t.deepEqual(await run(p, '/dev/testdrv', { op: 'calls' }), {});
    t.deepEqual(await run(p, '/dev/testdrv', { op: 'nope' }), { err: 'EINVAL' });
    t.deepEqual(await p.call('openDev', '/dev/nothere'), { err: 'ENOENT' });
    await t.throwsAsync(m.loadDriver('nosuchdriver'), { code: 'ERR_DMABUF_SIM_NO_DRIVER' });
    await t.throwsAsync(m.loadDriver(new URL('./fixtures/basic.js', import.meta.url)), { code: 'ERR_DMABUF_SIM_DRIVER_LOAD' });
  });
});

test('a driver exports a buffer into the caller\'s fd table; the process maps the driver\'s pages', async (t) => {
  await withMachine(t, async (m) => {
    await m.loadDriver(exporter, { name: 'testdrv' });
    const p = await proc(m);
    const fd = await run<number>(p, '/dev/testdrv', { op: 'export', size: 8192, fill: 7 });
    t.true(fd >= 3);
    t.deepEqual(await p.call('mapRead', fd, 8192), [7, 7, 7, 7]);
    const snap = (await m.dmabufs())[0]!;
    t.is(snap.expName, 'testdrv');
    t.is(snap.size, 8192);
    await p.call('closeFd', fd);
    t.like(await run(p, '/dev/testdrv', { op: 'calls' }), { mmap: 1, release: 1 });
    t.is((await m.dmabufs()).length, 0);
  });
});
