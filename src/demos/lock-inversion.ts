/**
 * The lock-inversion demo (seed 002): two driver workers take a buffer's reservation lock and their own device lock
 * in opposite orders. Run as it comes, nothing blocks and lockdep predicts the deadlock anyway; with `--deadlock`
 * the timing is forced, the two drivers really deadlock, and the watchdog names the cycle and breaks it.
 */
import { Machine, type Proc } from '../machine.js';
import { beginExpectLockdepReports, endExpectLockdepReports, setLockdepSink, type LockdepReport } from '../locking/index.js';
import { DemoChecks, heading, showText, toStdout, type Out } from './demo-kit.js';

const driver = new URL('./lock-inversion-driver.js', import.meta.url);
const procs = new URL('./lock-inversion-procs.js', import.meta.url);

export interface LockInversionOptions {
  /** Force the timing that deadlocks (the CLI's --deadlock). */
  readonly forceDeadlock?: boolean;
}

/** A report's text under a caption. */
function showReport(out: Out, caption: string, r: LockdepReport): void {
  showText(out, caption, r.text);
}

/** lockdep's report of the two classes taken in opposite orders. */
function isInversion(r: LockdepReport): boolean {
  return r.kind === 'circular' && r.key === 'circular:lockinv_device_lock -> reservation_ww_class_mutex';
}

/**
 * Runs the demo, printing each step with what it shows; returns non-zero if a check failed. Lock reports are shown
 * here (the demo expects them: they are labelled, not printed again on stderr).
 */
export async function lockInversion(out: Out = toStdout, opts: LockInversionOptions = {}): Promise<number> {
  const force = opts.forceDeadlock === true;
  const demo = new DemoChecks(out);
  const check = demo.check;
  out(`dmabuf-sim demo lock-inversion${force ? ' --deadlock' : ''}`);
  out('Seed 002: "dev1 waits for dev2 to finish buffer A while dev2 waits for dev1 to finish buffer B". Two devices,');
  out('one driver loaded twice (its device lock is one lock class), two buffers; dev2 copies A into B, dev1 evicts');
  out('both. dev2\'s completion path takes its device lock, then B\'s reservation lock; dev1\'s eviction takes the');
  out('reservation locks, waits for A to be idle, then its device lock: the same two classes in opposite orders.');

  heading(out, 'Step 1. A machine with lockdep and the deadlock watchdog, two driver workers, two buffers');
  const m = await Machine.boot({ lockdep: true });
  setLockdepSink(() => {}); // the demo prints the reports itself
  const domain = m.lockdep.domain()!;
  const exp = beginExpectLockdepReports(domain, { kind: ['circular', 'deadlock'] }, 'the lock-inversion demo');
  try {
    await m.loadDriver(driver, { name: 'dev1' });
    await m.loadDriver(driver, { name: 'dev2' });
    const app1 = await m.spawn(procs, { name: 'app1' });
    const app2 = await m.spawn(procs, { name: 'app2' });
    const [fdA, fdB] = await app1.call<[number, number]>('allocBuffers');
    out(`Drivers dev1 and dev2 run in their own workers (/dev/lockinv-dev1, /dev/lockinv-dev2). app1 allocates`);
    out(`buffers A (fd ${fdA}) and B (fd ${fdB}) from /dev/dma_heap/system and hands them to the devices in its ioctls;`);
    out('the drivers reach each buffer\'s reservation object (dmabuf->resv) in the machine\'s shared table.');
    const run = (p: Proc, dev: string, req: Record<string, unknown>): Promise<Record<string, unknown>> =>
      p.call<Record<string, unknown>>('job', `/dev/lockinv-${dev}`, { ...req, a: fdA, b: fdB });

    heading(out, 'Step 2. dev2 queues the copy A → B');
    const c = await run(app1, 'dev2', { op: 'copy' });
    out(`dev2 locks A and B under one ww_acquire_ctx and adds its job fence (lockinv:dev2 seqno ${String(c['seqno'])}) to A`);
    out('(read) and B (write); the job holds both buffers. The fence is annotated with its signaller — dev2 — for the');
    out('watchdog. app2 will ask dev2 to complete the job; app1 will ask dev1 to evict A and B.');
    check(typeof c['seqno'] === 'number', 'the copy is queued behind a pending job fence');

    if (!force) {
      heading(out, 'Step 3. As it comes: dev2 completes the copy, then dev1 evicts — nothing blocks');
      const done = await run(app2, 'dev2', { op: 'complete' });
      out('dev2: device lock → B\'s reservation lock → signal the job fence.');
      check(done['ret'] === 0, `dev2 completed the copy (dma_resv_lock returned ${String(done['ret'])})`);
      const ev = await run(app1, 'dev1', { op: 'evict' });
      out('dev1: reservation locks of A and B → wait for A to be idle (already) → its device lock.');
      check(ev['waited'] === 1, `dev1 evicted A and B, waiting ${Number(ev['waitedMs']).toFixed(1)} ms for A: the fence had signaled`);

      heading(out, 'Step 4. What lockdep saw: the deadlock, predicted');
      const reps = m.lockdep.reports();
      const inversion = reps.find(isInversion);
      check(inversion !== undefined, 'lockdep reported the device lock / reservation lock inversion, though nothing blocked');
      if (inversion) showReport(out, 'dev1 took its device lock under the reservation locks; dev2 had taken them the other way round:', inversion);
      check(!reps.some((r) => r.kind === 'deadlock'), 'no real deadlock happened: the watchdog had nothing to break');
      out('\nRun it with --deadlock to force the timing that turns this prediction into a real deadlock.');
    } else {
      heading(out, 'Step 3. Forced timing: dev1 evicts first and waits for A while holding B');
      const ev = run(app1, 'dev1', { op: 'evict' });
      const t0 = performance.now();
      while (!m.lockdep.waits().some((w) => w.kind === 'fence') && performance.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 5));
      const w = m.lockdep.waits().find((x) => x.kind === 'fence');
      out(`dev1 holds the reservation locks of A and B and sleeps on dev2's job fence:`);
      out(`  published wait: ${w ? `${w.worker} waits for ${w.object}, signalled by ${w.holder ?? '?'}` : 'none'}`);
      check(w !== undefined && /dev1/.test(w.worker) && /dev2/.test(w.holder ?? ''), 'the watchdog sees dev1 waiting for dev2');

      heading(out, 'Step 4. dev2 completes the copy: device lock → B\'s reservation lock — held by dev1');
      const done = await run(app2, 'dev2', { op: 'complete' });
      const evicted = await ev;
      const reps = m.lockdep.reports();
      const dl = reps.find((r) => r.kind === 'deadlock');
      check(dl !== undefined, 'the watchdog found the cycle: dev1 waits for dev2\'s fence, dev2 waits for dev1\'s lock');
      if (dl) showReport(out, 'Its report:', dl);
      check(done['ret'] === -35, `dev2's dma_resv_lock(B) failed with -EDEADLK (returned ${String(done['ret'])}): it closed the cycle`);
      out('dev2 took its error path: it signalled the job fence with that error, so dev1\'s wait ended.');
      check(evicted['waited'] === 1, `dev1's eviction then finished (waited ${Number(evicted['waitedMs']).toFixed(0)} ms for A)`);
      check(reps.some(isInversion), 'lockdep reports the same inversion once dev1, released, takes its device lock');
      check(m.lockdep.waits().length === 0, 'nobody waits any more');
    }
    await app1.call('done');
  } finally {
    endExpectLockdepReports(exp);
    setLockdepSink(null);
  }
  return demo.finish(m);
}
