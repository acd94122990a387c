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

test('a call into a process that exits or was killed rejects instead of hanging', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture, { name: 'quitter' });
    await t.throwsAsync(p.call('exitNow', 3), { message: /exit/ });
    const st = await p.exited;
    t.is(st.code, 3);
    await t.throwsAsync(p.call('openNull'), { message: /process \d+ \(quitter\) exited with status 3 before openNull\(\) returned/ });
    const q = await m.spawn(fixture, { name: 'victim' });
    await q.kill();
    await t.throwsAsync(q.call('openNull'), { message: /was killed/ });
  });
});
