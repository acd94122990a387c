/**
 * fd allocation: dup + close of the new fd with 200k fds open vs with 10 open, in the same process and run. With
 * a linear lowest-free scan the first costs O(open fds); with the open-fds bitmap and its full-word summary
 * (src/kernel/fdtable.ts) both are a few word reads.
 */
import { Machine } from '../src/index.js';
import { emit, medianOf, round } from './util.js';

const procs = new URL('./fdtable-procs.js', import.meta.url);

export async function benchFdTable(): Promise<void> {
  const m = await Machine.boot();
  try {
    const p = await m.spawn(procs, { name: 'fdtable' });
    const n = 2000;
    await p.call('dupLoop', n);
    const few = await medianOf(3, () => p.call<number>('dupLoop', n));
    const open = 200_000;
    await p.call('fill', open);
    await p.call('dupLoop', n);
    const many = await medianOf(3, () => p.call<number>('dupLoop', n));
    await p.call('unfill');
    emit({
      name: 'dup_close_200k_open_fds',
      us_per_dup: round((many / n) * 1000, 2),
      baseline: 'dup + close with 10 fds open',
      baseline_us_per_dup: round((few / n) * 1000, 2),
      ratio: round(many / few, 2),
      goal: '<= 2',
    });
  } finally {
    await m.shutdown();
  }
}
