/**
 * Drivers that die (issue 7): a killed or silent exporter, a killed importer, a process killed mid-call into a
 * driver — nothing hangs, nothing leaks, the survivors' calls fail with ENODEV and device nodes go away. A seeded
 * kill loop at random points of an export/import workload.
 */
import test from 'ava';
import { Machine, type Proc } from '../src/index.js';
import { bootChecked, delay, passFd, withMachine } from './helpers/sim.js';
import { chooseSeed, Prng } from '../src/shm/prng.js';

const exporter = new URL('./fixtures/drv-exporter.js', import.meta.url);
const user = new URL('./fixtures/drv-user.js', import.meta.url);
const run = <T = unknown>(p: Proc, path: string, req: Record<string, unknown>): Promise<T> => p.call<T>('run', path, req);

test('killing the exporter: its node goes (ENOENT), ops into it fail ENODEV, importers detach, buffers release, nothing leaks', async (t) => {
  await withMachine(t, async (m: Machine) => {
    const exp = await m.loadDriver(exporter, { name: 'testdrv' });
    await m.loadDriver(exporter, { name: 'testimp' });
    const p = await m.spawn(user, { name: 'user' });
    const fd = await run<number>(p, '/dev/testdrv', { op: 'export', size: 4096, fill: 1 });
    const { id } = await run<{ id: number }>(p, '/dev/testimp', { op: 'get', fd });
    const att = await run<number>(p, '/dev/testimp', { op: 'attach', id });
    const map = await run<{ id: number }>(p, '/dev/testimp', { op: 'map', att, dir: 1 });
    await exp.kill();
    t.deepEqual(await p.call('openDev', '/dev/testdrv'), { err: 'ENOENT' });
    t.deepEqual(await p.call('mapRead', fd, 4096), { err: 'ENODEV' });
    t.deepEqual(await run(p, '/dev/testimp', { op: 'vmap', id }), { err: 'ENODEV' });
    await run(p, '/dev/testimp', { op: 'unmap', map: map.id, dir: 1 }).catch(() => {});
    t.is(await run(p, '/dev/testimp', { op: 'detach', att }), 0);
    t.is(await run(p, '/dev/testimp', { op: 'put', id }), 0);
    await p.call('closeFd', fd);
    t.is((await m.dmabufs()).length, 0);
  });
});

test('killing an importer releases its references, attachments and vmaps; the exporter sees detach and release', async (t) => {
  await withMachine(t, async (m) => {
    await m.loadDriver(exporter, { name: 'testdrv' });
    const imp = await m.loadDriver(exporter, { name: 'testimp' });
    const p = await m.spawn(user, { name: 'user' });
    const fd = await run<number>(p, '/dev/testdrv', { op: 'export', size: 4096 });
    const { id } = await run<{ id: number }>(p, '/dev/testimp', { op: 'get', fd });
    const att = await run<number>(p, '/dev/testimp', { op: 'attach', id });
    await run(p, '/dev/testimp', { op: 'map', att, dir: 1 });
    await run(p, '/dev/testimp', { op: 'vmap', id });
    await run(p, '/dev/testimp', { op: 'get-ref', id });
    await imp.kill();
    t.like(await run(p, '/dev/testdrv', { op: 'calls' }), { map: 1, unmap: 1, detach: 1, vmap: 1, vunmap: 1 });
    const s = (await m.dmabufs())[0]!;
    t.deepEqual(s.attachments, []);
    t.is(s.fileCount, 1);
    await p.call('closeFd', fd);
    t.like(await run(p, '/dev/testdrv', { op: 'calls' }), { release: 1 });
  });
});

test('an exporter that stops answering is declared dead after driverTimeoutMs: the waiting importer gets ENODEV', async (t) => {
  await withMachine(
    t,
    async (m) => {
      await m.loadDriver(exporter, { name: 'testdrv' });
      await m.loadDriver(exporter, { name: 'testimp' });
      const p = await m.spawn(user, { name: 'user' });
      const fd = await run<number>(p, '/dev/testdrv', { op: 'export', size: 4096 });
      const { id } = await run<{ id: number }>(p, '/dev/testimp', { op: 'get', fd });
      await run(p, '/dev/testdrv', { op: 'knobs', set: { hangIn: 'vmap' } });
      const t0 = performance.now();
      t.deepEqual(await run(p, '/dev/testimp', { op: 'vmap', id }), { err: 'ENODEV' });
      t.true(performance.now() - t0 < 5000);
      t.is(m.drivers().length >= 1, true);
      await run(p, '/dev/testimp', { op: 'put', id });
      await p.call('closeFd', fd);
    },
    { driverTimeoutMs: 300 },
  );
});

test('a process killed while its ioctl is in a driver leaks nothing', async (t) => {
  await withMachine(t, async (m) => {
    await m.loadDriver(exporter, { name: 'testdrv' });
    const p = await m.spawn(user, { name: 'user' });
    const q = await m.spawn(user, { name: 'q' });
    await run(q, '/dev/testdrv', { op: 'knobs', set: { slowMs: 200 } });
    // export → vmap in the driver is slow: kill the process while its ioctl waits for it.
    const fd = await run<number>(q, '/dev/testdrv', { op: 'export', size: 4096 });
    const qfd = await passFd(m, q, fd, p);
    const { id } = await run<{ id: number }>(p, '/dev/testdrv', { op: 'get', fd: qfd });
    const pending = run(p, '/dev/testdrv', { op: 'vmap', id }).catch(() => 'killed');
    await delay(50);
    await p.kill();
    t.is(await pending, 'killed');
    await run(q, '/dev/testdrv', { op: 'knobs', set: { slowMs: 0 } });
    await q.call('closeFd', fd);
  });
});

test('seeded kill loop: exporter, importer or process killed at a random point of an export/import workload', async (t) => {
  const seed = chooseSeed();
  t.log(`seed ${seed} (replay with DMABUF_SIM_SEED=${seed})`);
  const prng = new Prng(seed);
  const rng = (): number => prng.below(1_000_000) / 1_000_000;
  for (let round = 0; round < 4; round++) {
    const m = await bootChecked(t, { driverTimeoutMs: 2000 });
    try {
      const exp = await m.loadDriver(exporter, { name: 'testdrv' });
      const imp = await m.loadDriver(exporter, { name: 'testimp' });
      const p = await m.spawn(user, { name: 'user' });
      // Each step's answer, or a throw when it failed (a killed driver): the workload stops at the first failure
      // instead of feeding an error object to the next step.
      const step = async <T>(path: string, req: Record<string, unknown>): Promise<T> => {
        const v = await run<T | { err: string }>(p, path, req);
        if (typeof v === 'object' && v !== null && 'err' in v) throw new Error(`${String(req['op'])}: ${v.err}`);
        return v as T;
      };
      const work = (async () => {
        for (let i = 0; i < 20; i++) {
          const fd = await step<number>('/dev/testdrv', { op: 'export', size: 4096 });
          const g = await step<{ id: number }>('/dev/testimp', { op: 'get', fd });
          const att = await step<number>('/dev/testimp', { op: 'attach', id: g.id });
          await step('/dev/testimp', { op: 'map', att, dir: 1 });
          await step('/dev/testimp', { op: 'vmap', id: g.id });
          await p.call('mapRead', fd, 4096);
        }
      })().catch(() => {});
      await delay(Math.floor(rng() * 60));
      const victim = Math.floor(rng() * 3);
      await (victim === 0 ? exp.kill() : victim === 1 ? imp.kill() : p.kill());
      await Promise.race([work, delay(10_000).then(() => t.fail(`round ${round}: the workload hung after the kill`))]);
    } finally {
      const report = await m.shutdown({ quiet: true });
      t.deepEqual(report.leaks, [], `round ${round}`);
      t.deepEqual(report.oopses.filter((o) => !o.expected), [], `round ${round}`);
    }
  }
});

test('a driver killed holding the locks of its own reservation objects: the kernel finalises them at reap and at their buffer\'s release, without a locked-fini WARN', async (t) => {
  const m = await Machine.boot();
  try {
    // One held lock per driver (two in one worker without an acquire context would be a recursion lockdep reports).
    const a = await m.loadDriver(exporter, { name: 'testdrv' });
    const b = await m.loadDriver(exporter, { name: 'testimp' });
    const p = await m.spawn(user, { name: 'user' });
    await run(p, '/dev/testimp', { op: 'hold-own-resv' }); // used by no buffer: finalised at reap
    const { fd } = await run<{ fd: number }>(p, '/dev/testdrv', { op: 'hold-own-resv', export: true }); // at the buffer's release
    await Promise.all([a.kill(), b.kill()]);
    t.deepEqual(await p.call('mapRead', fd, 4096), { err: 'ENODEV' });
    await p.call('closeFd', fd);
    t.is((await m.dmabufs()).length, 0);
  } finally {
    const r = await m.shutdown({ quiet: true });
    t.deepEqual(r.leaks, []);
    t.deepEqual(r.oopses, []);
    t.deepEqual(r.warnings.map((w) => w.message), []);
    t.deepEqual(m.lockdep.reports().filter((x) => x.expected !== true).map((x) => x.text.split('\n')[0]), []);
  }
});
