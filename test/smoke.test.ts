/** Smoke test: a machine boots, a process makes syscalls (and gets an errno as data), another runs main, all shut down clean. */
import test from 'ava';
import { withMachine } from './helpers/sim.js';

const fixture = new URL('./fixtures/basic.js', import.meta.url);

test('boot, spawn, syscalls, shutdown', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture, { name: 'smoke' });
    t.is(await p.call('openNull'), 3);
    t.is(await p.call('openNull'), 4);
    t.is(await p.call('roundTrips', 1000), 1000);
    t.deepEqual(await p.call('tryCall', 'close', 99), { code: 'EBADF', errno: 9, syscall: 'close' });
    const q = await m.spawn(fixture, { args: [] });
    await q.join();
  });
});
