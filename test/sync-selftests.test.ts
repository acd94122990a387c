/**
 * tools/testing/selftests/sync ported: sync_test.c's ten RUN_TESTs (3 allocation + 7 fence/merge/wait/stress tests)
 * with the original names, values and iteration counts. As in the C, RUN_TEST forks a child per test and waits
 * for it (sys.fork + sys.waitpid), and the stress tests run their pthreads as real threads of one process
 * (sys.thread: one shared fd table, so the timelines and the shared page are the same fds in every thread). A
 * failing thread's message reaches the test (the C swallowed it in pthread_join), and every stress run is bounded
 * by a watchdog that kills the process — and with it all its threads.
 */
import test, { type ExecutionContext } from 'ava';
import type { Machine, Proc } from '../src/index.js';
import { chooseSeed } from '../src/shm/prng.js';
import { bootFor, shutdownClean } from './helpers/sim.js';

const fixture = new URL('./fixtures/sync-selftests.js', import.meta.url);

/**
 * Waits for every call; the first failure (or the watchdog after `limitMs`) kills every participant — the others
 * may be blocked on a fence the failed one will never signal — and is rethrown with its message.
 */
async function joinAll<T>(procs: readonly Proc[], calls: readonly Promise<T>[], limitMs: number, what: string): Promise<T[]> {
  let timer: NodeJS.Timeout | undefined;
  const watchdog = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not finished after ${limitMs} ms`)), limitMs);
  });
  try {
    return await Promise.race([Promise.all(calls), watchdog]);
  } catch (e) {
    await Promise.all(procs.map((p) => p.kill()));
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** sync_test.c's RUN_TEST, in a "sync_test" process: forks a child for the test, waits, returns its status. */
async function runInChild(m: Machine, name: string, ...args: unknown[]): Promise<number> {
  const p = await m.spawn(fixture, { name: 'sync_test' });
  try {
    return await joinAll([p], [p.call<number>('run_test', name, ...args)], 60_000, name).then((r) => r[0]!);
  } finally {
    await p.kill();
  }
}

const FUNCTIONAL = [
  'test_alloc_timeline',
  'test_alloc_fence',
  'test_alloc_fence_negative',
  'test_fence_one_timeline_wait',
  'test_fence_one_timeline_merge',
  'test_fence_merge_same_fence',
  'test_fence_multi_timeline_wait',
] as const;

test.serial('sync_test: the 3 allocation and 4 fence/merge/wait tests pass, each in its own forked child', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'sync_test' });
  for (const name of FUNCTIONAL) t.is(await p.call('run_test', name), 0, `[RUN]\t${name}`);
  await p.kill();
  t.is(await m.debugfs.read('sync/info'), 'objs:\n--------------\nfences:\n--------------\n', 'no timeline left');
  await shutdownClean(t, m);
});

async function stressParallelism(t: ExecutionContext, iterations: number, mode: 'fence' | 'poll' = 'fence'): Promise<{ rate: number }> {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'sync_stress' });
  const [ms] = await joinAll(
    [p],
    [p.call<number>('test_stress_two_threads_shared_timeline', iterations, mode)],
    40_000,
    'test_stress_two_threads_shared_timeline',
  );
  await p.kill();
  await shutdownClean(t, m);
  return { rate: (iterations * 2 * 1000) / ms! };
}

test.serial('sync_stress_parallelism: test_stress_two_threads_shared_timeline — 2 threads × 1<<16, counter 131072', async (t) => {
  const { rate } = await stressParallelism(t, 1 << 16);
  t.log(`${Math.round(rate)} iterations/s`);
});

test.serial('sync_stress_parallelism with libsync in poll(2) mode (1<<12 each): the faithful path publishes writes too', async (t) => {
  const { rate } = await stressParallelism(t, 1 << 12, 'poll');
  t.log(`${Math.round(rate)} iterations/s in poll mode`);
});

test.serial('a failing stress thread is reported with its message; killing the process ends its blocked peer thread, nothing leaks', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'sync_stress' });
  // thread 0 expects 0 at its first point: a counter of 5 makes it fail while thread 1 waits for it forever.
  const err = await t.throwsAsync(joinAll([p], [p.call<number>('test_stress_two_threads_shared_timeline', 16, 'fence', 5)], 10_000, 'sabotaged run'));
  t.regex(err?.message ?? '', /\[BAD\]\tCounter got damaged!/);
  t.is(await m.debugfs.read('sync/info'), 'objs:\n--------------\nfences:\n--------------\n', 'process and threads killed: timeline gone');
  await shutdownClean(t, m);
});

test.serial('sync_stress_consumer: test_consumer_stress_multi_producer_single_consumer — 5 producers, 4096 rounds', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'sync_consumer' });
  await joinAll([p], [p.call<number>('test_consumer_stress_multi_producer_single_consumer', 5, 1 << 12)], 40_000, 'test_consumer_stress_multi_producer_single_consumer');
  await p.kill();
  await shutdownClean(t, m);
});

test.serial('sync_stress_merge: test_merge_stress_random_merge — 32 timelines, 32768 seeded random merges', async (t) => {
  const seed = chooseSeed();
  t.log(`seed ${seed} (replay with DMABUF_SIM_SEED=${seed})`);
  const m = await bootFor(t);
  try {
    t.is(await runInChild(m, 'test_merge_stress_random_merge', seed), 0);
  } catch (e) {
    throw new Error(`seed ${seed}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  await shutdownClean(t, m);
});
