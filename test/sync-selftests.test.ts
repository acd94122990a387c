/**
 * tools/testing/selftests/sync ported: sync_test.c's ten RUN_TESTs (3 allocation + 7 fence/merge/wait/stress tests)
 * with the original names, values and iteration counts. RUN_TEST forks a child per test; here every test runs in
 * a fresh process, and the stress tests' threads are processes sharing their timelines and a mapped dma-buf page
 * by fd passing. A failing process's error reaches the test (the C swallowed it in pthread_join), and every
 * stress run is bounded by a watchdog that kills the participants.
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

async function runInChild(m: Machine, name: string, ...args: unknown[]): Promise<number> {
  const p = await m.spawn(fixture, { name: 'sync_test' });
  try {
    return await p.call<number>(name, ...args);
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

test.serial('sync_test: the 3 allocation and 4 fence/merge/wait tests pass, each in its own process', async (t) => {
  const m = await bootFor(t);
  for (const name of FUNCTIONAL) t.is(await runInChild(m, name), 0, `[RUN]\t${name}`);
  t.is(await m.debugfs.read('sync/info'), 'objs:\n--------------\nfences:\n--------------\n', 'no timeline left');
  await shutdownClean(t, m);
});

async function stressParallelism(t: ExecutionContext, iterations: number, mode: 'fence' | 'poll' = 'fence'): Promise<{ rate: number }> {
  const m = await bootFor(t);
  const a = await m.spawn(fixture, { name: 'sync_stress' });
  const b = await m.spawn(fixture, { name: 'sync_stress' });
  await Promise.all([a.call('setWaitMode', mode), b.call('setWaitMode', mode)]);
  const [sa, sb] = await m.socketpair(a, b);
  await a.call('stressSetup', 1, [sa]);
  await b.call('stressJoin', sb, 1);
  const t0 = performance.now();
  await joinAll(
    [a, b],
    [
      a.call<number>('test_stress_two_threads_shared_timeline_thread', 0, iterations),
      b.call<number>('test_stress_two_threads_shared_timeline_thread', 1, iterations),
    ],
    40_000,
    'test_stress_two_threads_shared_timeline',
  );
  const ms = performance.now() - t0;
  t.is(await a.call('test_stress_two_threads_shared_timeline_check', iterations), 0);
  t.is(await b.call<number>('counterValue'), iterations * 2, 'the peer sees the final count too');
  await Promise.all([a.call('stressTeardown'), b.call('stressTeardown')]);
  await Promise.all([a.kill(), b.kill()]);
  await shutdownClean(t, m);
  return { rate: (iterations * 2 * 1000) / ms };
}

test.serial('sync_stress_parallelism: test_stress_two_threads_shared_timeline — 2 processes × 1<<16, counter 131072', async (t) => {
  const { rate } = await stressParallelism(t, 1 << 16);
  t.log(`${Math.round(rate)} iterations/s`);
});

test.serial('sync_stress_parallelism with libsync in poll(2) mode (1<<12 each): the faithful path publishes writes too', async (t) => {
  const { rate } = await stressParallelism(t, 1 << 12, 'poll');
  t.log(`${Math.round(rate)} iterations/s in poll mode`);
});

test.serial('a failing stress process is reported with its message; its blocked peer is killed, nothing leaks', async (t) => {
  const m = await bootFor(t);
  const a = await m.spawn(fixture, { name: 'sync_stress' });
  const b = await m.spawn(fixture, { name: 'sync_stress' });
  const [sa, sb] = await m.socketpair(a, b);
  await a.call('stressSetup', 1, [sa]);
  await b.call('stressJoin', sb, 1);
  await a.call('setCounter', 5); // thread 0 expects 0 at its first point
  const err = await t.throwsAsync(
    joinAll(
      [a, b],
      [
        a.call<number>('test_stress_two_threads_shared_timeline_thread', 0, 16),
        b.call<number>('test_stress_two_threads_shared_timeline_thread', 1, 16),
      ],
      10_000,
      'sabotaged run',
    ),
  );
  t.regex(err?.message ?? '', /\[BAD\]\tCounter got damaged!/);
  t.is(await m.debugfs.read('sync/info'), 'objs:\n--------------\nfences:\n--------------\n', 'both killed: timeline gone');
  await shutdownClean(t, m);
});

test.serial('sync_stress_consumer: test_consumer_stress_multi_producer_single_consumer — 5 producers, 4096 rounds', async (t) => {
  const m = await bootFor(t);
  const n = 5;
  const iterations = 1 << 12;
  const consumer = await m.spawn(fixture, { name: 'sync_consumer' });
  const producers: Proc[] = [];
  for (let i = 0; i < n; i++) producers.push(await m.spawn(fixture, { name: `sync_producer${i}` }));
  const socks = await Promise.all(producers.map((p) => m.socketpair(consumer, p)));
  await consumer.call('stressSetup', 1 + n, socks.map(([c]) => c));
  await Promise.all(producers.map((p, i) => p.call('stressJoin', socks[i]![1], 1 + n)));
  const all = [consumer, ...producers];
  await joinAll(
    all,
    [consumer.call<number>('mpcs_consumer_thread', n, iterations), ...producers.map((p, id) => p.call<number>('mpsc_producer_thread', id, iterations))],
    40_000,
    'test_consumer_stress_multi_producer_single_consumer',
  );
  t.is(await consumer.call('counterValue'), n * iterations);
  await Promise.all(all.map((p) => p.call('stressTeardown')));
  await Promise.all(all.map((p) => p.kill()));
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
