/**
 * Isolation between processes: a process can write every word of the shared memory it is handed, and that must
 * never make another process's call fail, nor crash or wedge the broker (docs/ARCHITECTURE.md, trust boundary).
 */
import test from 'ava';
import { bootChecked, shutdownNoLeaks } from './helpers/sim.js';
import { attachFenceTable } from '../src/fence/index.js';
import { fenceTable } from '../src/testing.js';

const fixture = new URL('./fixtures/hostile.js', import.meta.url);

test('a hostile process writing every control-block and channel word it holds cannot fail another process\'s calls', async (t) => {
  const m = await bootChecked(t);
  try {
    const victim = await m.spawn(fixture, { name: 'victim' });
    const hostile = await m.spawn(fixture, { name: 'hostile' });
    t.is(await victim.call<number>('ordinaryCalls', 10), 10);
    for (const v of [1, -1, 0x7fffffff, -0x80000000, 0]) {
      await hostile.call('scribbleControl', v);
      t.is(await victim.call<number>('ordinaryCalls', 50), 50, `control block words all set to ${v}`);
    }
    // Malformed requests on its own channel: each is answered with an errno (ENOSYS for an unknown op, EFAULT for
    // an IN_LEN outside DATA, EINVAL/EBADF for non-register arguments), none is an oops, none goes unanswered.
    const errnos = await hostile.call<number[]>('evilRequests');
    t.true(errnos.every((e) => e >= 0), 'every malformed request got a reply (an errno, or 0 for one that is a nop)');
    t.deepEqual(await hostile.call<number[]>('badInLen'), new Array<number>(9).fill(14), 'IN_LEN outside DATA: EFAULT');
    t.is(await victim.call<number>('ordinaryCalls', 50), 50);
    // Its whole channel, the kernel's shutdown word in it included, set to garbage and left so.
    for (const b of [0xff, 0x01, 0x80]) {
      await hostile.call('scribbleChannel', b);
      t.is(await victim.call<number>('ordinaryCalls', 50), 50, `hostile channel bytes all 0x${b.toString(16)}`);
    }
    await hostile.call('scribbleControl', 0);
    t.regex(await m.debugfs.read('dma_buf/bufinfo'), /Dma-buf Objects:/, 'the broker still serves the control plane');
    await hostile.kill();
    t.is(await victim.call<number>('ordinaryCalls', 10), 10);
  } finally {
    const r = await shutdownNoLeaks(t, m);
    t.deepEqual(r.oopses, []);
  }
});

test('a forged "kernel died" in the shared fence table does not make another process\'s long call give up', async (t) => {
  const m = await bootChecked(t);
  try {
    const victim = await m.spawn(fixture, { name: 'victim' });
    // A process trusted with the fence kernel state (it plays a driver): a plain one cannot even reach the alive table.
    const hostile = await m.spawn(fixture, { name: 'hostile', kernelFences: true });
    const [a] = await m.socketpair(victim, hostile);
    t.true((await hostile.call<number>('forgeKernelDeath')) > 0);
    // Longer than a reply-wait slice: the victim re-checks whether the kernel lives while its poll is parked.
    t.is(await victim.call('pollIdle', a, 350), 0, 'the poll timed out normally');
    t.is(await victim.call<number>('ordinaryCalls', 10), 10);
  } finally {
    await shutdownNoLeaks(t, m);
  }
});

test('when the broker worker dies, a process waiting for a reply gives up with ESHUTDOWN', async (t) => {
  const m = await bootChecked(t);
  const victim = await m.spawn(fixture, { name: 'victim' });
  const other = await m.spawn(fixture, { name: 'other' });
  const [a] = await m.socketpair(victim, other);
  const waiting = victim.call('pollIdle', a, -1);
  await new Promise((r) => setTimeout(r, 50));
  await (m as unknown as { broker: { terminate(): Promise<number> } }).broker.terminate();
  t.is(await waiting, 'ESHUTDOWN');
  // kill() settles although no kernel is left to reap the process (it used to wait for the reap forever).
  const killed = await Promise.race([Promise.all([victim, other].map((p) => p.kill())), new Promise<'hung'>((r) => setTimeout(() => r('hung'), 5000))]);
  t.not(killed, 'hung', 'kill() after the broker died settles');
  // shutdown() too: it ends what is left and says there is no report (it used to wait for the kernel forever).
  const m2 = await bootChecked(t);
  const left = await m2.spawn(fixture, { name: 'left' });
  await (m2 as unknown as { broker: { terminate(): Promise<number> } }).broker.terminate();
  await t.throwsAsync(m2.shutdown(), { code: 'ERR_DMABUF_SIM_KERNEL_GONE', message: /^shutdown: the kernel \(broker worker\) exited/ });
  t.true((await left.exited).killed, 'its processes were ended');
});

test('fence words a process corrupted (a link cycle, a huge count, an index outside the table) are a reported BUG in the broker, never a hang or a crash', async (t) => {
  const m = await bootChecked(t);
  const victim = await m.spawn(fixture, { name: 'victim' });
  const hostile = await m.spawn(fixture, { name: 'hostile' });
  for (const how of ['cycle', 'count', 'link'] as const) {
    const fd = await hostile.call<number>('corruptArray', how);
    t.is(await hostile.call('fileInfo', fd), 'EIO', `${how}: SYNC_IOC_FILE_INFO on the corrupted array fails with an oops`);
    t.is(await victim.call<number>('ordinaryCalls', 20), 20, `${how}: other processes are served`);
    t.regex(await m.debugfs.read('sync/info'), /fence active/, `${how}: sync/info still reads`);
  }
  await hostile.kill();
  t.is(await victim.call<number>('ordinaryCalls', 20), 20);
  const r = await m.shutdown({ quiet: true });
  t.true(r.oopses.length >= 3, 'each corrupted read is a reported BUG');
  t.true(r.oopses.every((o) => /corrupted fence word/.test(o.message)), r.oopses.map((o) => o.message.split('\n')[0]).join('\n'));
});

test('a process holding the fence names lock forever makes the kernel fail a fence creation (ENOMEM), never stall', async (t) => {
  const m = await bootChecked(t);
  try {
    const victim = await m.spawn(fixture, { name: 'victim' });
    const other = await m.spawn(fixture, { name: 'other' });
    // A process that plays a driver (trusted with the names lock), buggy: the kernel must still not stall.
    const hostile = await m.spawn(fixture, { name: 'hostile', kernelFences: true });
    // An owner that is never presumed dead (untracked), in the lock word, never released.
    await hostile.call('holdNamesLock', (1 << 29) | 12345);
    // A new name needs the lock: the broker gives up after a bounded wait instead of stalling every process.
    t.is(await victim.call('makeSwSyncFence'), 'ENOMEM');
    t.is(await other.call<number>('ordinaryCalls', 20), 20, 'the broker kept serving');
    await hostile.call('holdNamesLock', 0);
    t.is(await victim.call('makeSwSyncFence'), 'ok');
  } finally {
    await shutdownNoLeaks(t, m);
  }
});

// Before the fence table was split, the names table, its lock and the alive table were words of the one buffer every
// process is handed: zeroing it "killed" every owner and freed every names entry, and a 1 in every word left the
// names lock held by a live-looking owner (the kernel's fence creations failed with ENOMEM).
test('a plain process writing every word of every buffer it is handed cannot forge a death, change fence names or stall fence creation', async (t) => {
  const m = await bootChecked(t);
  try {
    const victim = await m.spawn(fixture, { name: 'victim' });
    const hostile = await m.spawn(fixture, { name: 'hostile' });
    t.is(await hostile.call('tryFenceContextAlloc'), 'ERR_DMABUF_SIM_FENCE_WAIT_ONLY', 'a plain process is wait-only');
    // The main thread plays the observer on the kernel side: its own token, every process's and the kernel's are in
    // the alive table, and it holds a names entry of its own.
    const rt = attachFenceTable(await fenceTable(m));
    const table = rt.table;
    const alive = table.alive!;
    const owners = alive.count();
    t.true(owners >= 4, `the kernel, two processes and this thread are registered (${owners})`);
    const id = table.internNames('victim-driver', 'victim-timeline');
    try {
      for (const v of [0, 1, -1]) {
        t.true((await hostile.call<number>('scribbleEverything', v)) > 0);
        t.is(alive.count(), owners, `every word ${v}: nobody was made dead`);
        t.true(alive.isAlive(rt.owner), `every word ${v}: this thread is still alive`);
        t.deepEqual(table.names(id), ['victim-driver', 'victim-timeline'], `every word ${v}: the names are unchanged`);
        t.is(await victim.call('makeSwSyncFence'), 'ok', `every word ${v}: the kernel still creates fences`);
      }
    } finally {
      table.putNames(id);
    }
    await hostile.call('scribbleEverything', 0);
  } finally {
    await shutdownNoLeaks(t, m);
  }
});
