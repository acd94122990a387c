/**
 * Machine.boot({ lockdep: true }): processes attach the machine's lock domain, so an inversion between two
 * processes is reported in machine.lockdep.reports(), and a process killed holding a lock has it recovered by
 * the next waiter through the machine's alive table (reap clears the dead process's token).
 */
import test from 'ava';
import { Machine } from '../src/index.js';
import { Mutex, setLockdepSink } from '../src/locking/index.js';

const fixture = new URL('./fixtures/locking-proc.js', import.meta.url);

test('an ABBA between two processes is reported, nothing blocks', async (t) => {
  setLockdepSink(() => {});
  const m = await Machine.boot({ lockdep: true });
  try {
    const a = new Mutex('proc_lock_a');
    const b = new Mutex('proc_lock_b');
    const p1 = await m.spawn(fixture, { name: 'p1' });
    const p2 = await m.spawn(fixture, { name: 'p2' });
    t.is(await p1.call('lockPair', a.handle, b.handle), 0);
    t.is(await p2.call('lockPair', b.handle, a.handle), 0);
    const reps = m.lockdep.reports();
    t.is(reps.length, 1);
    t.is(reps[0]!.kind, 'circular');
    t.is(reps[0]!.key, 'circular:proc_lock_a -> proc_lock_b');
    t.regex(reps[0]!.text, /p2 \(pid \d+\)\) is trying to acquire lock/);
    t.regex(reps[0]!.text, /first recorded by worker \d+ \(p1 \(pid \d+\)\):/);
  } finally {
    await m.shutdown();
  }
});

test('a process killed holding a lock: the next waiter gets it with EOWNERDEAD', async (t) => {
  setLockdepSink(() => {});
  const m = await Machine.boot({ lockdep: true });
  try {
    const l = new Mutex('proc_robust');
    const holder = await m.spawn(fixture, { name: 'holder' });
    t.is(await holder.call('hold', l.handle), 0);
    const waiter = await m.spawn(fixture, { name: 'waiter' });
    const r = waiter.call('lockUnlock', l.handle);
    await holder.kill();
    t.is(await r, -130);
    t.true(m.lockdep.reports().some((x) => x.key.includes('owner-died')));
    t.false(l.isLocked());
  } finally {
    await m.shutdown();
  }
});

test('lockdep off by default: no domain', async (t) => {
  const m = await Machine.boot();
  try {
    t.is(m.lockdep.domain(), null);
    t.deepEqual(m.lockdep.reports(), []);
  } finally {
    await m.shutdown();
  }
});

test('sync_wait is an annotated wait: lock(A) + sync_wait(timeout 0) vs A inside a signalling section', async (t) => {
  setLockdepSink(() => {});
  const m = await Machine.boot({ lockdep: true });
  try {
    const a = new Mutex('proc_wait_lock');
    const p1 = await m.spawn(fixture, { name: 'waiter' });
    const p2 = await m.spawn(fixture, { name: 'signaller' });
    t.is(await p1.call('lockThenSyncWait', a.handle), 0);
    t.deepEqual(m.lockdep.reports(), []);
    t.is(await p2.call('lockInSignallingSection', a.handle), 0);
    const reps = m.lockdep.reports();
    t.is(reps.length, 1);
    t.is(reps[0]!.key, 'circular:dma_fence_map -> proc_wait_lock');
  } finally {
    await m.shutdown();
  }
});
