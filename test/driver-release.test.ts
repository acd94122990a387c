/**
 * The last put of a driver's file waits for the driver's release, as Linux's task_work __fput before the return
 * to userspace: close() and dup2() return after fops.release ran in the driver worker, a process's exit or kill is
 * reaped only after the releases its teardown started, and shutdown waits for releases in flight (bounded by
 * driverTimeoutMs when the driver never answers). The driver (test/fixtures/release-driver.ts) sleeps in its
 * release before it counts it; the process reads the count from a page it maps, with no call into the driver.
 */
import test, { type ExecutionContext } from 'ava';
import { Machine, uapi, type ShutdownReport } from '../src/index.js';
import type { Seen } from './fixtures/release-proc.js';
import { shutdownClean, spawnSock, waitParked, type SockProc } from './helpers/sim.js';

const relProc = new URL('./fixtures/release-proc.js', import.meta.url);
const relDriver = (mode: string): URL => new URL(`./fixtures/release-driver.js?mode=${mode}`, import.meta.url);
const { O_RDWR } = uapi;

async function boot(t: ExecutionContext, mode: string, extra: Parameters<typeof Machine.boot>[0] = {}): Promise<Machine> {
  const m = await Machine.boot({ drivers: [relDriver(mode)], ...extra });
  t.teardown(async () => {
    await m.shutdown({ quiet: true }).catch(() => {});
  });
  return m;
}

const spawn = (m: Machine, name: string): Promise<SockProc> => spawnSock(m, name, {}, relProc);

test.serial('close() and dup2() of the last reference return after the driver\'s release ran', async (t) => {
  const m = await boot(t, 'slow');
  const p = await spawn(m, 'closer');
  const ctl = await p.fx<number>('openControl');
  const a = await p.ok<number>('open', '/dev/relwait0', O_RDWR);
  const b = await p.ok<number>('dup', a);
  // Not the last reference: nothing to release, nothing to wait for.
  t.deepEqual(await p.fx<Seen>('closeAndLook', ctl, b), { ret: 0, byMap: 0, byIoctl: 0 });
  // The last one: the slow release ran before close returned 0.
  t.deepEqual(await p.fx<Seen>('closeAndLook', ctl, a), { ret: 0, byMap: 1, byIoctl: 1 });
  const c = await p.ok<number>('open', '/dev/relwait0', O_RDWR);
  // dup2 over the last reference (do_dup2's filp_close).
  t.deepEqual(await p.fx<Seen>('dup2AndLook', ctl, 0, c), { ret: c, byMap: 2, byIoctl: 2 });
  await p.proc.kill();
  await shutdownClean(t, m);
});

test.serial('a process\'s exit and kill are reaped after the driver releases their teardown started', async (t) => {
  const m = await boot(t, 'slow');
  const watcher = await spawn(m, 'watcher');
  await watcher.fx<number>('openControl');
  const leaver = await spawn(m, 'leaver');
  await leaver.ok<number>('open', '/dev/relwait0', O_RDWR);
  await leaver.ok<number>('open', '/dev/relwait0', O_RDWR);
  // exit(): the call never answers; the process ends.
  void leaver.proc.call('x', 'exit', 0).catch(() => {});
  t.is((await leaver.proc.exited).code, 0);
  t.is(await watcher.proc.call<number>('peekCount'), 2, 'both releases ran before the exit was reaped');
  const victim = await spawn(m, 'victim');
  await victim.ok<number>('open', '/dev/relwait0', O_RDWR);
  await victim.proc.kill();
  t.is(await watcher.proc.call<number>('peekCount'), 3, 'the killed process\'s release ran before kill() settled');
  await watcher.proc.kill();
  await shutdownClean(t, m);
});

test.serial('shutdown waits for a release in flight to a slow driver', async (t) => {
  const m = await boot(t, 'warn');
  const p = await spawn(m, 'closer');
  const fd = await p.ok<number>('open', '/dev/relwait0', O_RDWR);
  const closing = p.r('closeAndLook', -1, fd).catch(() => null);
  // The close is parked on the driver's release (300 ms): shut down now.
  await waitParked(m, 1);
  const r: ShutdownReport = await m.shutdown({ quiet: true });
  await closing;
  t.deepEqual(
    r.warnings.map((w) => `${w.message}${w.expected ? ' (expected)' : ''}`),
    ['driver release-driver: relwait: release 1 ran (expected)'],
    'the release ran (and WARNed) before the shutdown report',
  );
  t.deepEqual(r.leaks, []);
  t.deepEqual(r.oopses, []);
});

test.serial('a release that never returns: close() returns 0 once the watchdog declares the driver dead, shutdown is bounded', async (t) => {
  const m = await boot(t, 'hang', { driverTimeoutMs: 1000 });
  const p = await spawn(m, 'closer');
  const fd = await p.ok<number>('open', '/dev/relwait0', O_RDWR);
  const start = performance.now();
  t.is(await p.ok<number>('close', fd), 0, 'close returns 0 as Linux does whatever the release did');
  const took = performance.now() - start;
  t.true(took >= 900 && took < 8000, `close waited for the watchdog (${Math.round(took)} ms)`);
  await p.proc.kill();
  const before = performance.now();
  const r = await m.shutdown({ quiet: true });
  t.true(performance.now() - before < 8000, 'shutdown did not wait for the hung release');
  t.deepEqual(r.oopses, []);
});
