/**
 * Hostile tests of driver lanes (src/shm/driver-lane.ts): races of fd changes against the grant a slow-path ioctl
 * makes, a process scribbling over its own lane while the driver serves it, a dead driver's lane behind an fd that
 * another thread pointed at a live file, and every ioctl argument form giving the same outcome by the lane as by
 * the broker's path (driverLanes: false).
 */
import test from 'ava';
import { Machine, type Proc } from '../src/index.js';
import { delay, dmabufsDrained, waitParked, withMachine } from './helpers/sim.js';
import { chooseSeed, Prng } from '../src/shm/prng.js';
import { LaneDirectory } from '../src/kernel/driver-lanes.js';
import { MAX_GRANTS, MAX_LANES } from '../src/shm/driver-lane.js';
import { MessageChannel } from 'node:worker_threads';
import { exporter, open, run, stats, twoDrivers, who, type Who } from './helpers/lanes.js';

const user = new URL('./fixtures/hostile-lane-user.js', import.meta.url);

test('an fd replaced while its first ioctl is in the driver gets no grant for the old file', async (t) => {
  await withMachine(t, async (m) => {
    await twoDrivers(m);
    const p = await m.spawn(user, { name: 'app' });
    const a = await open(p, '/dev/testdrv');
    const keep = await p.call<number>('dup', a); // the old file lives on behind another fd
    const b = await open(p, '/dev/testimp');
    // A thread's ioctl on a sleeps in the driver (through the broker: no grant yet); meanwhile the main thread
    // dup2s b over a, then the driver's wake lets the ioctl finish. The thread's next ioctl on a must reach testimp.
    const tid = await p.call<number>('startWhoTwice', a);
    await waitParked(m, 1);
    t.is(await p.call('dup2', b, a), a);
    t.is(await run(p, '/dev/testdrv', { op: 'wake-who' }), 1);
    t.is(await p.call('join', tid), 1, 'the second ioctl on a was served by testimp (2: by the old file, testdrv)');
    await p.call('closeFd', keep);
  });
});

test('threads racing close, reopen, dup2 and dup3 against lane ioctls on the same fds: every answer is the caller\'s, and afterwards every cached grant leads where the broker does', async (t) => {
  const seed = chooseSeed();
  t.log(`seed ${seed} (DMABUF_SIM_SEED=${seed} replays)`);
  const prng = new Prng(seed);
  await withMachine(
    t,
    async (m) => {
      await twoDrivers(m);
      for (let round = 0; round < 3; round++) {
        const p = await m.spawn(user, { name: `racer${round}` });
        t.deepEqual(await p.call('fdRace', prng.nextU32() >>> 4, 6, 500), [0, 0, 0], `round ${round} (seed ${seed})`);
        await p.kill();
      }
      t.deepEqual((await m.stats()).driverLanes, { lanes: 0, grants: 0 });
    },
    { heaps: { system: {} } },
  );
});

test('more (task, file) pairs than MAX_GRANTS: the pairs past it keep the broker\'s path, every answer right; freed grants are reused', async (t) => {
  t.timeout(60_000);
  await withMachine(t, async (m) => {
    await twoDrivers(m);
    const procs: Proc[] = [];
    const fds: number[][] = [];
    let done = 0;
    for (let i = 0; i < 5; i++) {
      const p = await m.spawn(user, { name: `flood${i}` });
      const r = await p.call<{ ok: boolean; statuses: number[]; fds: number[] }>('grantFlood', 1000, 0);
      t.true(r.ok, `process ${i}: every answer right`);
      procs.push(p);
      fds.push(r.fds);
      done += (await stats(p)).done;
    }
    t.deepEqual((await m.stats()).driverLanes, { lanes: 5, grants: MAX_GRANTS }, 'every grant taken, no more');
    t.is(done, MAX_GRANTS, 'one lane call per grant; the pairs past the limit stayed on the broker');
    await procs[0]!.call('closeAll', fds[0]);
    t.deepEqual((await m.stats()).driverLanes, { lanes: 5, grants: MAX_GRANTS - 1000 }, 'closing the fds revoked their grants');
    const last = procs[4]!;
    const fd = await open(last, '/dev/testdrv');
    const before = await stats(last);
    await who(last, fd);
    await who(last, fd);
    t.is((await stats(last)).done, before.done + 1, 'a new grant again');
  });
});

test('LaneDirectory: MAX_LANES tasks get lanes, the next none (the slow path) until one of them is gone; a lane with every grant taken', (t) => {
  const { port1, port2 } = new MessageChannel();
  try {
    const d = new LaneDirectory(port1);
    for (let pid = 1; pid <= MAX_LANES; pid++) t.truthy(d.grant(1, pid), `pid ${pid}`);
    t.is(d.grant(1, MAX_LANES + 1), null, 'no lane left');
    t.is(d.lanes, MAX_LANES);
    d.dropTask(7);
    t.like(d.grant(1, MAX_LANES + 1), { newLane: true, token: 7 }, 'the freed slot and the freed grant index');
    for (let f = 2; d.grants < MAX_GRANTS; f++) t.truthy(d.grant(f, 1));
    t.is(d.grant(999_999, 1), null, 'no grant left for a task with a lane');
    d.dropTask(2);
    t.like(d.grant(999_999, 1), { newLane: false }, 'a dead task\'s grant indices are reused');
    d.dropTask(3);
    const fresh = d.grant(5, 70_000)!;
    t.like(fresh, { newLane: true }, 'a new task gets a lane');
    t.is(d.grant(6, 70_000), null, '…and no grant once they are all taken again');
    t.is(d.grants, MAX_GRANTS);
  } finally {
    port1.close();
    port2.close();
  }
});

test('seeded kill loop: processes whose threads churn vgem through lanes on shared card fds (replacing them too), killed at random points; then the vgem worker killed mid-churn: everything ends and is released', async (t) => {
  t.timeout(120_000);
  const seed = chooseSeed();
  t.log(`seed ${seed} (DMABUF_SIM_SEED=${seed} replays)`);
  const prng = new Prng(seed);
  const churn = new URL('./fixtures/hostile-vgem-procs.js', import.meta.url);
  const m = await Machine.boot({ heaps: { system: {} }, drivers: ['vgem'] });
  try {
    for (let round = 0; round < 4; round++) {
      const procs = [await m.spawn(churn, { name: `churn${round}a` }), await m.spawn(churn, { name: `churn${round}b` })];
      const runs = procs.map((p) =>
        p.call<{ steps: number; threads: number[] }>('vgemChurnThreads', prng.nextU32() >>> 4, 200, 2).then(
          (r) => `done ${r.steps} ${r.threads.join(',')}`,
          (e: Error) => (/ended|killed|exited/i.test(e.message) ? 'killed' : `failed: ${e.message}`),
        ),
      );
      const victim = prng.below(2);
      await delay(prng.below(150));
      await procs[victim]!.kill();
      t.is(await runs[1 - victim], 'done 200 0,0', `round ${round}: the other process's threads all complete (seed ${seed})`);
      t.regex(await runs[victim]!, /^(killed|done 200 0,0)$/, `round ${round} (seed ${seed})`);
      await procs[1 - victim]!.kill();
      t.deepEqual(await dmabufsDrained(m), [], `round ${round}: no dma-buf outlives the processes (seed ${seed})`);
      t.deepEqual((await m.stats()).driverLanes, { lanes: 0, grants: 0 }, `round ${round}: no lane or grant left (seed ${seed})`);
    }
    // The vgem worker killed while threads churn: every task's churn ends with ENODEV.
    const procs = [await m.spawn(churn, { name: 'last-a' }), await m.spawn(churn, { name: 'last-b' })];
    const runs = procs.map((p) =>
      p.call<{ errnos: Record<string, number>; threads: number[] }>('vgemChurnThreads', prng.nextU32() >>> 4, 100_000, 2, true).then(
        (r) => `${r.errnos['ENODEV'] ? 'ENODEV' : 'done'} ${r.threads.join(',')}`,
        (e: Error) => `failed: ${e.message}`,
      ),
    );
    await delay(50 + prng.below(150));
    await m.drivers()[0]!.kill();
    t.deepEqual(await Promise.all(runs), ['ENODEV 2,2', 'ENODEV 2,2'], `every task's churn ended with ENODEV (seed ${seed})`);
    for (const p of procs) await p.kill();
    t.deepEqual(await m.dmabufs(), [], `every dma-buf released with its last holder (seed ${seed})`);
  } finally {
    const r = await m.shutdown({ quiet: true });
    t.deepEqual(
      r.leaks.filter((l) => !(l.kind === 'dma_fence' && /^fence vgem:unbound ctx \d+ seq 1 signaled refcount 1$/.test(l.what))),
      [],
      `seed ${seed}`,
    );
    t.deepEqual([r.oopses, r.warnings], [[], []], `seed ${seed}`);
  }
});

test('a stream of lane ioctls into the exporter does not starve its exporter ops (attach, map, unmap, detach, release) for another driver\'s importer', async (t) => {
  await withMachine(t, async (m) => {
    await twoDrivers(m);
    const a = await m.spawn(user, { name: 'streamer' });
    const b = await m.spawn(user, { name: 'importer' });
    const fd = await open(a, '/dev/testdrv');
    await who(a, fd);
    const buf = await run<number>(b, '/dev/testdrv', { op: 'export', size: 8192, fill: 3 });
    const stream = a.call<string[]>('whoMany', fd, 30_000);
    await delay(20);
    const t0 = performance.now();
    const { id } = await run<{ id: number }>(b, '/dev/testimp', { op: 'get', fd: buf });
    for (let i = 0; i < 10; i++) {
      const att = await run<number>(b, '/dev/testimp', { op: 'attach', id });
      const map = await run<{ id: number; byte0: number }>(b, '/dev/testimp', { op: 'map', att, dir: 0 });
      t.is(map.byte0, 3);
      t.is(await run(b, '/dev/testimp', { op: 'unmap', map: map.id, dir: 0 }), 0);
      t.is(await run(b, '/dev/testimp', { op: 'detach', att }), 0);
    }
    t.is(await run(b, '/dev/testimp', { op: 'put', id }), 0);
    await b.call('closeFd', buf); // the exporter's release
    const ms = performance.now() - t0;
    t.is((await stream).length, 1);
    t.true(ms < 5000, `10 attach/map/unmap/detach cycles and a release took ${ms.toFixed(0)} ms during the stream`);
    t.log(`exporter ops during a lane stream: ${ms.toFixed(0)} ms`);
    t.like(await run(b, '/dev/testdrv', { op: 'calls' }), { attach: 10, map: 10, unmap: 10, detach: 10, release: 1 });
  });
});

test('a helper thread scribbling over the lane while the driver serves it reaches no other file and forges no pid', async (t) => {
  await withMachine(t, async (m) => {
    await twoDrivers(m);
    const victim = await m.spawn(user, { name: 'victim' });
    const attacker = await m.spawn(user, { name: 'attacker' });
    const vw = (await who(victim, await open(victim, '/dev/testdrv'))) as Who;
    const fd = await open(attacker, '/dev/testdrv');
    const aw = (await who(attacker, fd)) as Who;
    t.not(aw.file, vw.file);
    const answers = await attacker.call<string[]>('whoWhileScribbled', fd, vw.file, victim.pid, 3000);
    for (const a of answers) {
      const w = JSON.parse(a) as Who;
      t.deepEqual(w, aw, `every answer is the attacker's own: ${a}`);
    }
    t.like(await who(victim, 3), { pid: victim.pid, file: vw.file });
  });
});

/**
 * testdrv and testimp; a process with fd a on testdrv (its grant cached by two ioctls) and fd b on testimp: the
 * driver handle of testdrv, the process, a, b and who serves b.
 */
async function cachedGrantSetup(m: Machine): Promise<{ drv: { kill(): Promise<void> }; p: Proc; a: number; b: number; wb: Who }> {
  const drv = await m.loadDriver(exporter, { name: 'testdrv' });
  await m.loadDriver(exporter, { name: 'testimp' });
  const p = await m.spawn(user, { name: 'app' });
  const a = await open(p, '/dev/testdrv');
  const b = await open(p, '/dev/testimp');
  const wb = (await who(p, b)) as Who;
  await who(p, a);
  await who(p, a); // by the lane: the grant is cached
  return { drv, p, a, b, wb };
}

test('a cached grant into a dead driver does not fail an fd another thread pointed at a live driver\'s file', async (t) => {
  await withMachine(t, async (m) => {
    const { drv, p, a, b, wb } = await cachedGrantSetup(m);
    await drv.kill();
    t.deepEqual(await who(p, a), { err: 'ENODEV' }, 'the dead driver\'s file');
    await who(p, a);
    await p.call('dup2InThread', b, a);
    t.like(await who(p, a), { name: 'testimp', file: wb.file }, 'the fd now names a live file');
  });
});

test('a request not picked up yet when its driver dies goes the broker\'s way (the fd may name another file by then)', async (t) => {
  for (let round = 0; round < 3; round++) {
    await withMachine(t, async (m) => {
      const { drv, p, a, b, wb } = await cachedGrantSetup(m);
      await p.call('dup2InThread', b, a); // revokes the grant; this task's cache still names it
      await run(p, '/dev/testdrv', { op: 'stall', ms: 2000 });
      await delay(20);
      const pending = who(p, a); // posted into the stalled driver's lane
      await delay(10 + round * 15);
      await drv.kill();
      t.like(await pending, { name: 'testimp', file: wb.file }, `round ${round}`);
    });
  }
});

test('every ioctl argument form has the same outcome by the lane as by the broker', async (t) => {
  const outcomes: unknown[][] = [];
  for (const lanes of [true, false]) {
    await withMachine(
      t,
      async (m) => {
        await twoDrivers(m);
        const p = await m.spawn(user, { name: 'app' });
        const fd = await open(p, '/dev/testdrv');
        await who(p, fd);
        await who(p, fd); // the grant (lanes on)
        const out: unknown[] = [];
        for (const v of [0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 + 5, 2 ** 53, 2 ** 63, 2 ** 64 - 2 ** 12, -1, -(2 ** 31), -(2 ** 63)]) {
          out.push(['int', v, await p.call('echoInt', fd, v)]);
        }
        for (const ret of [0, 7, 2 ** 31, 2 ** 32 + 1, 2 ** 40, -1, -22, -(2 ** 40)]) {
          out.push(['ret', ret, await p.call('echoStruct', fd, { ret }, 64)]);
        }
        out.push(['fail', await p.call('echoStruct', fd, { write: 'written-before-EINVAL', errno: 22 }, 64)]);
        out.push(['fail-ENOTTY', await p.call('echoStruct', fd, { write: 'x', errno: 25 }, 64)]);
        for (const size of [1, 4096, 16 * 1024, 16 * 1024 + 1, 40_000]) {
          out.push(['size', size, await p.call('echoStruct', fd, { len: true, write: `sized-${size}` }, Math.max(size, 40))]);
        }
        out.push(['string', await p.call('echoString', fd, { len: true, write: 'zz' })]);
        out.push(['string-fail', await p.call('echoString', fd, { errno: 14 })]);
        outcomes.push(out);
        const st = await p.call<{ done: number; slow: number; takenBack: number }>('laneStats');
        if (lanes) t.true(st.done >= 20, `most of them went by the lane: ${JSON.stringify(st)}`);
        else t.is(st.done, 0);
      },
      { driverLanes: lanes },
    );
  }
  t.deepEqual(outcomes[0], outcomes[1]);
});

test('a machine that records stacks keeps every driver ioctl on the broker (each call carries its stack)', async (t) => {
  await withMachine(
    t,
    async (m) => {
      await twoDrivers(m);
      const p = await m.spawn(user, { name: 'app' });
      const fd = await open(p, '/dev/testdrv');
      for (let i = 0; i < 5; i++) t.like(await who(p, fd), { pid: p.pid, name: 'testdrv' });
      t.deepEqual(await p.call('laneStats'), { done: 0, slow: 0, takenBack: 0 });
      t.deepEqual((await m.stats()).driverLanes, { lanes: 0, grants: 0 });
    },
    { recordStacks: true },
  );
});
