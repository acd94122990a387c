/**
 * Driver lanes (issue 7's speed goal; src/shm/driver-lane.ts): a process's ioctls on a driver file go straight to
 * the driver worker once the kernel granted them — with the results, errnos, contexts and fault behaviour of the
 * broker's path; grants die with the fd they were made for; a forged or stale grant reaches nothing; a request the
 * driver does not pick up, a driver that dies or hangs, and a process killed mid-call all end bounded and leak-free.
 */
import test from 'ava';
import { LaneDirectory } from '../src/kernel/driver-lanes.js';
import { D_GEN, D_LANES, G_FILE, G_LANE, G_SERIAL, grantWord, MAX_GRANTS } from '../src/shm/driver-lane.js';
import { chooseSeed, Prng } from '../src/shm/prng.js';
import { delay, passFd, waitParked, withMachine } from './helpers/sim.js';
import { exporter, open, run, stats, twoDrivers, who, type Who } from './helpers/lanes.js';
import { MessageChannel } from 'node:worker_threads';

const user = new URL('./fixtures/lane-user.js', import.meta.url);

test('after one ioctl through the broker, the next go by the lane, in the caller\'s context; driverLanes: false keeps them all on the broker', async (t) => {
  for (const lanes of [true, false]) {
    await withMachine(
      t,
      async (m) => {
        await twoDrivers(m);
        const p = await m.spawn(user, { name: 'app' });
        const fd = await open(p, '/dev/testdrv');
        const first = (await who(p, fd)) as Who;
        t.like(first, { pid: p.pid, name: 'testdrv' });
        t.true(first.file > 0);
        t.deepEqual(await p.call('whoMany', fd, 200), [JSON.stringify(first)], 'every answer the same: same task, same file');
        const s = await stats(p);
        if (lanes) t.deepEqual(s, { done: 200, slow: 0, takenBack: 0 });
        else t.deepEqual(s, { done: 0, slow: 0, takenBack: 0 });
        t.deepEqual((await m.stats()).driverLanes, lanes ? { lanes: 1, grants: 1 } : { lanes: 0, grants: 0 });
        await p.kill();
        t.deepEqual((await m.stats()).driverLanes, { lanes: 0, grants: 0 }, 'a task\'s lanes and grants go with it');
      },
      { driverLanes: lanes },
    );
  }
});

test('the same outcomes with lanes on and off: errnos, fds installed in the caller by a lane op, the driver\'s counters', async (t) => {
  const outcomes: unknown[] = [];
  for (const lanes of [true, false]) {
    await withMachine(
      t,
      async (m) => {
        await twoDrivers(m);
        const p = await m.spawn(user, { name: 'app' });
        await who(p, await open(p, '/dev/testdrv')); // the grant
        const out: unknown[] = [];
        // An fd the driver installs from a lane op lands in the caller's table: mmap it.
        const fd = await run<number>(p, '/dev/testdrv', { op: 'export', size: 8192, fill: 7 });
        out.push(fd, await p.call('mapRead', fd, 8192));
        // A scenario that fails (EINVAL from the driver), one the kernel API refuses (EBADF), an unknown ioctl
        // (ENOTTY), the driver's counters.
        out.push(await run(p, '/dev/testdrv', { op: 'no-such-scenario' }));
        out.push(await run(p, '/dev/testdrv', { op: 'get', fd: 999 }));
        out.push(await p.call('ioctlErr', '/dev/testdrv', 0x7777));
        out.push(await run(p, '/dev/testdrv', { op: 'calls' }));
        await p.call('closeFd', fd);
        outcomes.push(out);
      },
      { driverLanes: lanes },
    );
  }
  t.deepEqual(outcomes[0], outcomes[1]);
});

test('a grant dies with its fd: dup2 over it, close and reopen, a thread\'s dup2 in the shared table', async (t) => {
  await withMachine(t, async (m) => {
    await twoDrivers(m);
    const p = await m.spawn(user, { name: 'app' });
    const a = await open(p, '/dev/testdrv');
    const b = await open(p, '/dev/testimp');
    const wa = (await who(p, a)) as Who;
    const wb = (await who(p, b)) as Who;
    t.like(await who(p, a), { name: 'testdrv', file: wa.file });
    // dup2 in this task: the C library forgets its grant and the kernel revokes it.
    t.is(await p.call('dup2', b, a), a);
    t.like(await who(p, a), { name: 'testimp', file: wb.file });
    // close + reopen on the same number: a new file.
    await p.call('closeFd', a);
    t.is(await open(p, '/dev/testdrv'), a);
    const wa2 = (await who(p, a)) as Who;
    t.like(wa2, { name: 'testdrv' });
    t.not(wa2.file, wa.file);
    t.like(await who(p, a), { name: 'testdrv', file: wa2.file });
    // A thread sharing the fd table replaces fd a: this task's cached grant is stale, the driver sends the call back
    // to the broker, which resolves fd a afresh.
    const before = await stats(p);
    await p.call('dup2InThread', b, a);
    t.like(await who(p, a), { name: 'testimp', file: wb.file });
    t.is((await stats(p)).slow, before.slow + 1, 'the revoked grant was caught by the driver');
    t.like(await who(p, a), { name: 'testimp', file: wb.file });
  });
});

test('a grant survives fd changes in other fd tables: a forked child\'s dup2 and exit, another process\'s close of the same file', async (t) => {
  await withMachine(t, async (m) => {
    await twoDrivers(m);
    const p = await m.spawn(user, { name: 'parent' });
    const q = await m.spawn(user, { name: 'other' });
    const fd = await open(p, '/dev/testdrv');
    const w = (await who(p, fd)) as Who;
    await who(p, fd);
    // The child's table is a copy: its dup2 and its exit (closing both fds) remove fds of the file from its table only.
    await p.call('forkAndWait', fd, 40);
    // The same open file in another process, whose close removes it from that process's table.
    const qfd = await passFd(m, p, fd, q);
    t.like(await who(q, qfd), { pid: q.pid, file: w.file });
    await q.call('closeFd', qfd);
    t.deepEqual(await who(p, fd), w);
    t.deepEqual(await stats(p), { done: 2, slow: 0, takenBack: 0 }, 'no broker round trip: the grant stood');
    // A close in the parent's own table revokes it (fd 41 is another fd of the same file).
    t.is(await p.call('dup2', fd, 41), 41);
    await p.call('closeFd', 41);
    t.deepEqual(await who(p, fd), w);
    t.like(await stats(p), { done: 2, slow: 1 });
  });
});

test('a forged or stale grant reaches nothing it names: the driver sends it back to the broker', async (t) => {
  await withMachine(t, async (m) => {
    await twoDrivers(m);
    const p = await m.spawn(user, { name: 'victim' });
    const q = await m.spawn(user, { name: 'forger' });
    const pa = await open(p, '/dev/testdrv');
    const wp = (await who(p, pa)) as Who;
    const pg = await p.call<{ file: number; token: number; serial: number }>('grantOf', pa);
    t.is(pg.file, wp.file);
    const qa = await open(q, '/dev/testdrv');
    const wq = (await who(q, qa)) as Who;
    t.not(wq.file, wp.file);
    // q names p's file, token and serial in its own lane: refused, served for q's own file through the broker.
    t.like(await q.call('forgeAs', qa, pg), { pid: q.pid, name: 'testdrv', file: wq.file });
    t.is((await stats(q)).slow, 1);
    // Stale or garbage values in q's own cache: each sent back, each answered right.
    for (const [field, delta] of [['serial', 1], ['token', 1], ['token', -1000], ['token', MAX_GRANTS + 5], ['file', 1]] as const) {
      t.like(await q.call('forgeGrant', qa, field, delta), { pid: q.pid, file: wq.file }, `${field} ${delta}`);
    }
    t.is((await stats(q)).slow, 6);
    // p's own calls were never disturbed.
    t.like(await who(p, pa), { pid: p.pid, file: wp.file });
    t.is((await stats(p)).slow, 0);
  });
});

test('an ioctl that must sleep goes the broker\'s way and parks there; the driver\'s wake completes it', async (t) => {
  await withMachine(t, async (m) => {
    await twoDrivers(m);
    const p = await m.spawn(user, { name: 'sleeper' });
    const q = await m.spawn(user, { name: 'waker' });
    const fd = await open(p, '/dev/testdrv');
    await who(p, fd);
    await who(p, fd);
    const sleeping = who(p, fd, 1);
    await waitParked(m, 1);
    t.is(await run(q, '/dev/testdrv', { op: 'wake-who' }), 1);
    t.like(await sleeping, { pid: p.pid });
    t.like(await stats(p), { done: 1, slow: 1 });
  });
});

test('a request the driver does not pick up within LANE_PICKUP_MS is taken back and served through the broker', async (t) => {
  await withMachine(t, async (m) => {
    await twoDrivers(m);
    const p = await m.spawn(user, { name: 'app' });
    const q = await m.spawn(user, { name: 'staller' });
    const fd = await open(p, '/dev/testdrv');
    const w = (await who(p, fd)) as Who;
    await who(p, fd);
    // The stall starts from a timer once the driver's loop yields; on a loaded machine that may come late, so a
    // call the lane served before the stall began is retried with a longer head start (bounded).
    let ms = 0;
    for (let attempt = 1; attempt <= 4; attempt++) {
      const before = await stats(p);
      await run(q, '/dev/testdrv', { op: 'stall', ms: 600 });
      await delay(50 * attempt);
      const t0 = performance.now();
      t.deepEqual(await who(p, fd), w);
      ms = performance.now() - t0;
      if ((await stats(p)).takenBack > before.takenBack) break;
      await delay(700); // let the stall that began late end
    }
    t.is((await stats(p)).takenBack, 1);
    t.true(ms >= 90, `served after the stall, ${ms.toFixed(0)} ms`);
    const done = (await stats(p)).done;
    t.deepEqual(await who(p, fd), w, 'and the lane works again');
    t.like(await stats(p), { done: done + 1, takenBack: 1 });
  });
});

test('a stream of lane ioctls does not starve the broker\'s file ops on the same driver (open, release)', async (t) => {
  await withMachine(t, async (m) => {
    await twoDrivers(m);
    const a = await m.spawn(user, { name: 'streamer' });
    const b = await m.spawn(user, { name: 'opener' });
    const fd = await open(a, '/dev/testdrv');
    await who(a, fd);
    const stream = a.call<string[]>('whoMany', fd, 30_000);
    await delay(20);
    const t0 = performance.now();
    for (let i = 0; i < 20; i++) await b.call('closeFd', await open(b, '/dev/testdrv'));
    const ms = performance.now() - t0;
    t.is((await stream).length, 1);
    t.true(ms < 5000, `20 opens and closes took ${ms.toFixed(0)} ms during the stream`);
    t.log(`20 opens + closes during a lane stream: ${ms.toFixed(0)} ms`);
  });
});

test('the driver dies in a lane ioctl: killed → ENODEV at once; silent → declared dead after driverTimeoutMs, ENODEV', async (t) => {
  // Killed while serving.
  await withMachine(t, async (m) => {
    const drv = await m.loadDriver(exporter, { name: 'testdrv' });
    const p = await m.spawn(user, { name: 'app' });
    const fd = await open(p, '/dev/testdrv');
    await who(p, fd);
    await run(p, '/dev/testdrv', { op: 'knobs', set: { whoSlowMs: 20_000 } });
    const pending = who(p, fd);
    await delay(100);
    const t0 = performance.now();
    await drv.kill();
    t.deepEqual(await pending, { err: 'ENODEV' });
    t.true(performance.now() - t0 < 2000);
    t.deepEqual(await who(p, fd), { err: 'ENODEV' });
    await p.call('closeFd', fd);
  });
  // Silent: the broker's watchdog sees the lane op's sequence number stand still.
  await withMachine(
    t,
    async (m) => {
      await m.loadDriver(exporter, { name: 'testdrv' });
      const p = await m.spawn(user, { name: 'app' });
      const fd = await open(p, '/dev/testdrv');
      await who(p, fd);
      await run(p, '/dev/testdrv', { op: 'knobs', set: { whoSlowMs: 30_000 } });
      const t0 = performance.now();
      t.deepEqual(await who(p, fd), { err: 'ENODEV' });
      const ms = performance.now() - t0;
      t.true(ms >= 400 && ms < 5000, `${ms.toFixed(0)} ms`);
      for (let i = 0; i < 100 && m.drivers().length > 0; i++) await delay(50);
      t.is(m.drivers().length, 0, 'the silent driver was killed');
    },
    { driverTimeoutMs: 500 },
  );
});

test('processes killed in lane ioctls at seeded points leak nothing; the driver goes on serving the others', async (t) => {
  const seed = chooseSeed();
  const rng = new Prng(seed);
  t.log(`seed ${seed} (DMABUF_SIM_SEED=${seed} replays)`);
  await withMachine(t, async (m) => {
    await twoDrivers(m);
    const survivor = await m.spawn(user, { name: 'survivor' });
    const sfd = await open(survivor, '/dev/testdrv');
    const sw = (await who(survivor, sfd)) as Who;
    for (let round = 0; round < 6; round++) {
      const victims = await Promise.all([0, 1].map((i) => m.spawn(user, { name: `victim${round}.${i}` })));
      const loops = victims.map(async (v) => {
        const fd = await open(v, rng.below(2) ? '/dev/testdrv' : '/dev/testimp');
        // Exports (fds installed from lane ops) and plain ioctls, until killed.
        for (;;) {
          await run(v, '/dev/testdrv', { op: 'export', size: 4096 });
          await v.call('whoMany', fd, 200);
        }
      });
      await delay(20 + rng.below(120));
      await Promise.all(victims.map((v) => v.kill()));
      await Promise.allSettled(loops);
      t.deepEqual(await survivor.call('whoMany', sfd, 50), [JSON.stringify(sw)], `round ${round}: the survivor is served`);
    }
    t.deepEqual((await m.stats()).driverLanes, { lanes: 1, grants: 1 }, 'only the survivor\'s lane and grant are left');
  });
});

test('LaneDirectory: lowest free lane slot, grant indices reused with new serials, revocation by file and by task, limits', (t) => {
  const { port1, port2 } = new MessageChannel();
  try {
    const d = new LaneDirectory(port1);
    const g1 = d.grant(10, 100)!;
    t.like(g1, { token: 1, newLane: true });
    const g2 = d.grant(11, 100)!;
    t.like(g2, { token: 2, newLane: false });
    t.is(d.grant(10, 100)!.serial, g1.serial, 'the same grant while it lives');
    const g3 = d.grant(10, 200)!;
    t.like(g3, { token: 3, newLane: true });
    t.is(Atomics.load(d.dir, D_LANES + 0), 100);
    t.is(Atomics.load(d.dir, D_LANES + 1), 200);
    t.is(Atomics.load(d.dir, grantWord(0, G_FILE)), 10);
    t.is(Atomics.load(d.dir, grantWord(0, G_LANE)), 1);
    t.is(Atomics.load(d.dir, grantWord(2, G_LANE)), 2);
    d.revokeFile(10); // both tasks' grants of file 10
    t.is(Atomics.load(d.dir, grantWord(0, G_FILE)), 0);
    t.is(Atomics.load(d.dir, grantWord(2, G_FILE)), 0);
    t.is(d.grants, 1);
    const g4 = d.grant(12, 200)!;
    t.true(g4.token === 1 || g4.token === 3, 'a freed index is reused');
    t.not(g4.serial, g1.serial);
    t.not(g4.serial, g3.serial);
    t.is(Atomics.load(d.dir, grantWord(g4.token - 1, G_SERIAL)), g4.serial);
    const gen = Atomics.load(d.dir, D_GEN);
    d.dropTask(100);
    t.is(Atomics.load(d.dir, D_LANES + 0), 0);
    t.is(Atomics.load(d.dir, D_GEN), gen + 1);
    t.is(Atomics.load(d.dir, grantWord(1, G_FILE)), 0, "the task's grants go with its lane");
    t.like(d.grant(13, 300)!, { newLane: true });
    t.is(Atomics.load(d.dir, D_LANES + 0), 300, 'the lowest free slot');
    t.is(d.lanes, 2);
    d.markDead();
    t.is(d.grant(14, 300), null, 'no grant from a dead driver');
  } finally {
    port1.close();
    port2.close();
  }
});
