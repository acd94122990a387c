import test from 'ava';
import { Machine } from '../src/index.js';

const fixture = new URL('./fixtures/basic.js', import.meta.url);

test('boot, spawn, syscalls, shutdown', async (t) => {
  const m = await Machine.boot();
  const p = await m.spawn(fixture, { name: 'smoke' });
  t.is(await p.call('openNull'), 3);
  t.is(await p.call('openNull'), 4);
  t.is(await p.call('roundTrips', 1000), 1000);
  t.deepEqual(await p.call('tryCall', 'close', 99), { code: 'EBADF', errno: 9, syscall: 'close' });
  const q = await m.spawn(fixture, { args: [] });
  await q.join();
  const r = await m.shutdown();
  t.deepEqual(r.leaks, []);
  t.deepEqual(r.oopses, []);
});
