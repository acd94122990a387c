/** Leak reports: what is still alive at shutdown, and where it was created (pid, comm, syscall, user stack). */
import test from 'ava';
import { formatLeaks } from '../src/index.js';
import { liveObjects } from '../src/testing.js';
import { withMachine } from './helpers/sim.js';

const fixture = new URL('./fixtures/basic.js', import.meta.url);

test('an object kept alive by the kernel is reported with its origin and the caller stack', async (t) => {
  await withMachine(
    t,
    async (m) => {
      const p = await m.spawn(fixture, { name: 'leaky' });
      const fd = await p.call<number>('leakNull');
      t.is(fd, 3);
      // While the process lives, its open file is not a leak but it is live: stats and leaks() list it.
      const live = await liveObjects(m);
      const mine = live.filter((l) => l.createdBy.pid === p.pid && l.createdBy.call === 'open');
      t.is(mine.length, 1);
      t.regex(mine[0]!.createdBy.stack ?? '', /^at leakNull .*fixtures[/\\]basic\.[jt]s/, 'the first frame is the user code, not the C library');
      t.regex(formatLeaks(mine), /created by pid 1 \(leaky\) in open, syscall #1/);
      // Killing the process released the file: withMachine's shutdown finds no leak.
      await p.kill();
    },
    { recordStacks: true },
  );
});

test('origins name the ioctl that created an object, and the next plain syscall by its own name', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture, { name: 'namer' });
    await p.call('allocThenOpen');
    const calls = (await liveObjects(m)).filter((l) => l.createdBy.pid === p.pid).map((l) => `${l.kind} ${l.createdBy.call}`);
    t.true(calls.includes('dma_buf ioctl(DMA_HEAP_IOCTL_ALLOC)'), calls.join(', '));
    t.true(calls.includes('file open'), 'the open after the ioctl is named open, not the ioctl');
    await p.kill();
  });
});
