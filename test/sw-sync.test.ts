/**
 * sw_sync (drivers/dma-buf/sw_sync.c, sync_debug.c) against Linux: timelines per open named after the opener,
 * CREATE_FENCE (already-signaled points, reuse of a pending point, EFAULT/EMFILE without leaks), INC (u32, INT_MAX
 * chunks, seqno order, the kernel's wrap-around compare), closing the timeline (-ENOENT, fences outlive it),
 * deadlines, debugfs sync/info golden text, and a process killed with points pending.
 */
import test from 'ava';
import { uapi, type Machine } from '../src/index.js';
import type { Info, R } from './fixtures/sync.js';
import { bootFor, shutdownClean, spawnSock, syncFixture, type SockProc } from './helpers/sim.js';

const { FD_CLOEXEC, F_GETFD, O_RDWR, POLLIN, SW_SYNC_DEBUGFS_PATH, SW_SYNC_DEV_PATH, SW_SYNC_IOC_CREATE_FENCE, SW_SYNC_IOC_INC, SYNC_IOC_MERGE } = uapi;
const ENOENT = uapi.E.ENOENT;

/** A process running test/fixtures/sync: C-library calls by name and the fixture's raw helpers. */
const spawn = (m: Machine, name: string): Promise<SockProc> => spawnSock(m, name, {}, syncFixture);

const HEAD = 'objs:\n--------------\n';
const TAIL = 'fences:\n--------------\n';
const info = (m: Machine): Promise<string> => m.debugfs.read('sync/info');
/** sync_print_fence's "@<sec>.<nsec>" for a timestamp in ns. */
const at = (ts: string): string => `@${BigInt(ts) / 1000000000n}.${(BigInt(ts) % 1000000000n).toString().padStart(9, '0')}`;

test.serial('opening sw_sync makes a timeline named after the opener, at value 0, at both paths', async (t) => {
  const m = await bootFor(t);
  const p = await spawn(m, 'painter');
  const q = await spawn(m, 'a-very-long-process-name');
  t.is(await info(m), HEAD + TAIL, 'no timeline yet');
  const t1 = await p.ok('open', SW_SYNC_DEBUGFS_PATH, O_RDWR);
  const t2 = await p.ok('open', SW_SYNC_DEV_PATH, O_RDWR);
  const t3 = await p.ok('open', SW_SYNC_DEBUGFS_PATH, uapi.O_RDONLY);
  const t4 = await q.ok('swSyncTimelineCreate');
  t.is(await info(m), `${HEAD}painter: 0\n\npainter: 0\n\npainter: 0\n\na-very-long-pro: 0\n\n${TAIL}`, 'comm is 15 chars');
  t.is(await p.readlink(t1), SW_SYNC_DEBUGFS_PATH);
  t.is(await p.readlink(t2), SW_SYNC_DEV_PATH);
  const fdinfo = (fd: number): Promise<string> => p.fx<string>('fdinfo', fd);
  const [i1, i2, i3] = [await fdinfo(t1), await fdinfo(t2), await fdinfo(t3)];
  t.regex(i1, /^pos:\t0\nflags:\t0100002\nmnt_id:\t30\nino:\t\d+\n$/, 'O_RDWR | O_LARGEFILE, on debugfs');
  t.regex(i2, /^pos:\t0\nflags:\t0100002\nmnt_id:\t22\nino:\t\d+\n$/, 'on devtmpfs');
  t.is(/ino:\t(\d+)/.exec(i1)![1], /ino:\t(\d+)/.exec(i3)![1], 'every open of a node shares its inode');
  t.not(/ino:\t(\d+)/.exec(i1)![1], /ino:\t(\d+)/.exec(i2)![1]);
  t.is(await p.ok('fcntl', t1, F_GETFD), 0, 'open() without O_CLOEXEC');
  t.is(await p.fxErr('ioctlRaw', t1, SYNC_IOC_MERGE, Array(48).fill(0)), 'ENOTTY', 'a timeline is not a sync_file');
  t.is(await p.fxErr('ioctlRaw', t1, uapi._IOW('W', 3, 4), [0, 0, 0, 0]), 'ENOTTY');
  for (const fd of [t1, t2, t3]) await p.ok('close', fd);
  await q.ok('close', t4);
  t.is(await info(m), HEAD + TAIL, 'closed timelines with no points are gone');
  await shutdownClean(t, m);
});

test.serial('CREATE_FENCE: reached values signal at once, a pending value reuses its point, name ignored, O_CLOEXEC', async (t) => {
  const m = await bootFor(t);
  const p = await spawn(m, 'painter');
  const tl = await p.ok('swSyncTimelineCreate');
  const zero = await p.ok('swSyncFenceCreate', tl, 'zero', 0);
  const z = await p.fx<Info>('info', zero);
  t.is(z.status, 1, 'value 0 is reached: signaled at creation');
  t.not(z.fences[0]!.ts, '0');
  t.is(await p.ok('fcntl', zero, F_GETFD), FD_CLOEXEC);
  t.is(await info(m), `${HEAD}painter: 0\n\n${TAIL}`, 'a signaled point is never listed');

  const a = await p.ok('swSyncFenceCreate', tl, 'first', 3);
  const b = await p.ok('swSyncFenceCreate', tl, 'second', 3);
  t.is(await info(m), `${HEAD}painter: 0\n  fence active: 3 / 0\n\n${TAIL}`, 'the second create reused the pending point');
  const [ia, ib] = [await p.fx<Info>('info', a), await p.fx<Info>('info', b)];
  t.regex(ia.name, /^sw_sync-painter\d+-3$/, 'the name passed to CREATE_FENCE is ignored');
  t.is(ib.name, ia.name);
  t.is((await p.fx<Info>('info', await p.ok('syncMerge', 'ab', a, b))).numFences, 1);
  await p.ok('swSyncTimelineInc', tl, 3);
  const [ta, tb] = [(await p.fx<Info>('info', a)).fences[0]!.ts, (await p.fx<Info>('info', b)).fences[0]!.ts];
  t.is(ta, tb, 'one fence, one timestamp');

  // Once every reference to a point is gone, the same value gets a fresh point.
  const c = await p.ok('swSyncFenceCreate', tl, 'c', 7);
  await p.ok('close', c);
  t.is(await info(m), `${HEAD}painter: 3\n\n${TAIL}`, 'a released point leaves the list');
  const d = await p.ok('swSyncFenceCreate', tl, 'd', 7);
  t.is(await info(m), `${HEAD}painter: 3\n  fence active: 7 / 3\n\n${TAIL}`);

  // EFAULT and EMFILE: no fd, no point.
  const before = await p.proc.call<number[]>('openFds');
  t.is(await p.fxErr('ioctlRaw', tl, SW_SYNC_IOC_CREATE_FENCE, [9, 0, 0, 0, 0, 0, 0, 0]), 'EFAULT', 'short struct');
  t.is(await p.fxErr('ioctlRaw', tl, SW_SYNC_IOC_CREATE_FENCE, null, 9), 'EFAULT', 'no struct at all');
  const filler = await p.proc.call<number[]>('fillFdTable');
  t.is(await p.err('swSyncFenceCreate', tl, 'full', 9), 'EMFILE');
  await p.proc.call('closeAll', filler);
  t.deepEqual(await p.proc.call('openFds'), before);
  t.is(await info(m), `${HEAD}painter: 3\n  fence active: 7 / 3\n\n${TAIL}`, 'no point was created');
  await p.ok('close', d);
  await p.proc.kill();
  await shutdownClean(t, m);
});

test.serial('INC: a u32 without validation, INT_MAX chunks, seqno order, the kernel’s wrap-around compare', async (t) => {
  const m = await bootFor(t);
  const p = await spawn(m, 'incer');
  const tl = await p.ok('swSyncTimelineCreate');
  const f5 = await p.ok('swSyncFenceCreate', tl, 'x', 5);
  const f3 = await p.ok('swSyncFenceCreate', tl, 'x', 3);
  const f9 = await p.ok('swSyncFenceCreate', tl, 'x', 9);
  t.is(await info(m), `${HEAD}incer: 0\n  fence active: 3 / 0\n  fence active: 5 / 0\n  fence active: 9 / 0\n\n${TAIL}`, 'listed in seqno order');
  t.is(await p.ok('swSyncTimelineInc', tl, 0), 0, '0 is allowed');
  await p.ok('swSyncTimelineInc', tl, 4);
  t.is(await info(m), `${HEAD}incer: 4\n  fence active: 5 / 4\n  fence active: 9 / 4\n\n${TAIL}`);
  await p.ok('swSyncTimelineInc', tl, 6);
  const ts = async (fd: number): Promise<bigint> => BigInt((await p.fx<Info>('info', fd)).fences[0]!.ts);
  t.true((await ts(f3)) < (await ts(f5)) && (await ts(f5)) <= (await ts(f9)), 'signaled in seqno order');
  t.is(await p.fxErr('ioctlRaw', tl, SW_SYNC_IOC_INC, [1, 0]), 'EFAULT', 'short u32');
  t.is(await p.fxErr('ioctlRaw', tl, SW_SYNC_IOC_INC, null, 1), 'EFAULT', 'an integer arg, not a pointer');

  // 0xffffffff is applied as INT_MAX + INT_MAX + 1: the int value wraps to −1 (printed with %d). A point at
  // 0xfffffff0 is pending after the first chunk and signaled by the second.
  const t2 = await p.ok('swSyncTimelineCreate');
  const hi = await p.ok('swSyncFenceCreate', t2, 'x', 0xfffffff0);
  await p.ok('swSyncTimelineInc', t2, 0xffffffff);
  t.is((await p.fx<Info>('info', hi)).status, 1);
  t.true((await info(m)).includes('incer: -1\n\n'));

  // Pending iff (int)(seqno − value) > 0: at value 0, 0x7fffffff is pending but 0x80000000 (INT_MIN apart) counts
  // as signaled already — __dma_fence_is_later's cast, not "(int)(value − seqno) >= 0".
  const t3 = await p.ok('swSyncTimelineCreate');
  t.is((await p.fx<Info>('info', await p.ok('swSyncFenceCreate', t3, 'x', 0x7fffffff))).status, 0);
  t.is((await p.fx<Info>('info', await p.ok('swSyncFenceCreate', t3, 'x', 0x80000000))).status, 1);
  t.is((await p.fx<Info>('info', await p.ok('swSyncFenceCreate', t3, 'x', 0xffffffff))).status, 1, '−1: behind');

  // Around the wrap: value −256; 0xfffffff0 and 5 are both ahead, 0xfffffff0 first.
  const t4 = await p.ok('swSyncTimelineCreate');
  await p.ok('swSyncTimelineInc', t4, 0xffffff00);
  const w1 = await p.ok('swSyncFenceCreate', t4, 'x', 5);
  const w2 = await p.ok('swSyncFenceCreate', t4, 'x', 0xfffffff0);
  const t4text = (await info(m)).split('\n\n').find((s) => s.startsWith('incer: -256'));
  t.is(t4text, 'incer: -256\n  fence active: 4294967280 / -256\n  fence active: 5 / -256');
  await p.ok('swSyncTimelineInc', t4, 0x100);
  t.deepEqual([(await p.fx<Info>('info', w2)).status, (await p.fx<Info>('info', w1)).status], [1, 0]);
  await p.ok('swSyncTimelineInc', t4, 5);
  t.is((await p.fx<Info>('info', w1)).status, 1);
  await p.proc.kill();
  await shutdownClean(t, m);
});

test.serial('closing the timeline errors pending points with -ENOENT; they stay listed until released; fences outlive it', async (t) => {
  const m = await bootFor(t);
  const p = await spawn(m, 'closer');
  const tl = await p.ok('swSyncTimelineCreate');
  const done = await p.ok('swSyncFenceCreate', tl, 'done', 1);
  const p2 = await p.ok('swSyncFenceCreate', tl, 'p2', 2);
  const p4 = await p.ok('swSyncFenceCreate', tl, 'p4', 4);
  await p.ok('swSyncTimelineInc', tl, 1);
  t.is(await info(m), `${HEAD}closer: 1\n  fence active: 2 / 1\n  fence active: 4 / 1\n\n${TAIL}`);
  await p.ok('close', tl);
  const [i2, i4] = [await p.fx<Info>('info', p2), await p.fx<Info>('info', p4)];
  t.deepEqual([i2.status, i2.fences[0]!.status, i4.status], [-ENOENT, -ENOENT, -ENOENT]);
  t.deepEqual(await p.fx('pollMany', [p2, p4], POLLIN | uapi.POLLERR, 0), [POLLIN, POLLIN]);
  t.is(await p.fx('waitIn', 'poll', p2, 0), 0);
  t.is(await p.fx('waitIn', 'fence', p4, 0), 0);
  t.is(
    await info(m),
    `${HEAD}closer: 1\n  fence error${at(i2.fences[0]!.ts)}: 2 / 1\n  fence error${at(i4.fences[0]!.ts)}: 4 / 1\n\n${TAIL}`,
    'errored points stay on the list, with their timestamps',
  );
  // The fences are still good sync_files: merging two errored (signaled) fences gives a signaled stub — merge
  // drops signaled leaves whatever their error.
  const merged = await p.ok('syncMerge', 'both', p2, p4);
  t.is(merged, tl, 'the lowest free fd: the timeline’s old number');
  const both = await p.fx<Info>('info', merged);
  t.deepEqual([both.status, both.fences[0]!.driver], [1, 'stub']);
  await p.ok('close', merged);
  await p.ok('close', p2);
  t.is(await info(m), `${HEAD}closer: 1\n  fence error${at(i4.fences[0]!.ts)}: 4 / 1\n\n${TAIL}`);
  await p.ok('close', p4);
  t.is(await info(m), `${HEAD}closer: 1\n\n${TAIL}`, 'a signaled point still holds the timeline');
  await p.ok('close', done);
  t.is(await info(m), HEAD + TAIL, 'last reference gone: the timeline is freed');
  await p.proc.kill();
  await shutdownClean(t, m);
});

test.serial('sync/info golden: several processes and timelines, creation order, signed values, timestamps', async (t) => {
  const m = await bootFor(t);
  const a = await spawn(m, 'compositor');
  const b = await spawn(m, 'client');
  const ta = await a.ok('swSyncTimelineCreate');
  const tb = await b.ok('swSyncTimelineCreate');
  const ta2 = await a.ok('swSyncTimelineCreate');
  await a.ok('swSyncFenceCreate', ta, 'x', 10);
  await a.ok('swSyncFenceCreate', ta, 'x', 20);
  await b.ok('swSyncFenceCreate', tb, 'x', 1);
  await a.ok('swSyncTimelineInc', ta2, 0x80000000);
  await a.ok('swSyncTimelineInc', ta, 10);
  t.is(
    await info(m),
    HEAD +
      'compositor: 10\n  fence active: 20 / 10\n\n' +
      'client: 0\n  fence active: 1 / 0\n\n' +
      'compositor: -2147483648\n\n' +
      TAIL,
  );
  const fromProc = await a.ok<string>('readFile', '/sys/kernel/debug/sync/info');
  t.is(fromProc, await info(m), 'the same text through open/read of the debugfs file');
  await Promise.all([a.proc.kill(), b.proc.kill()]);
  t.is(await info(m), HEAD + TAIL);
  await shutdownClean(t, m);
});

test.serial('deadlines: SYNC_IOC_SET_DEADLINE keeps the earliest, reaches merged components; SW_SYNC_GET_DEADLINE errnos', async (t) => {
  const m = await bootFor(t);
  const p = await spawn(m, 'deadline');
  const tl = await p.ok('swSyncTimelineCreate');
  const t2 = await p.ok('swSyncTimelineCreate');
  const f = await p.ok('swSyncFenceCreate', tl, 'f', 5);
  t.is(await p.fxErr('getDeadlineRaw', tl, f), 'ENOENT', 'no deadline yet');
  t.is(await p.fxErr('setDeadlineRaw', f, '1000', 1), 'EINVAL', 'pad');
  t.is(await p.fx('setDeadlineRaw', f, '5000'), 0);
  t.is(await p.fx('getDeadlineRaw', tl, f), '5000');
  await p.fx('setDeadlineRaw', f, '7000');
  t.is(await p.fx('getDeadlineRaw', tl, f), '5000', 'a later deadline does not replace an earlier one');
  await p.fx('setDeadlineRaw', f, '3000');
  t.is(await p.fx('getDeadlineRaw', tl, f), '3000');
  t.is(await p.fx('getDeadlineRaw', t2, f), '3000', 'any timeline fd answers for any sw_sync point');

  t.is(await p.fxErr('getDeadlineRaw', tl, f, 1), 'EINVAL', 'deadline_ns must be 0 on input');
  t.is(await p.fxErr('getDeadlineRaw', tl, f, 0, 1), 'EINVAL', 'pad');
  t.is(await p.fxErr('getDeadlineRaw', tl, tl), 'EINVAL', 'not a sync_file');
  t.is(await p.fxErr('getDeadlineRaw', tl, 99), 'EINVAL', 'not open');
  const g = await p.ok('swSyncFenceCreate', t2, 'g', 5);
  const fg = await p.ok('syncMerge', 'fg', f, g);
  t.is(await p.fxErr('getDeadlineRaw', tl, fg), 'EINVAL', 'an array is not a sw_sync point');
  await p.fx('setDeadlineRaw', fg, '2000');
  t.deepEqual([await p.fx('getDeadlineRaw', tl, f), await p.fx('getDeadlineRaw', tl, g)], ['2000', '2000'], 'set on the merge, seen by each point');
  t.is(await p.ok<bigint>('swSyncGetDeadline', tl, g), 2000n, 'libsync helper');

  const s = await p.ok('swSyncFenceCreate', tl, 's', 0); // signaled at creation
  await p.fx('setDeadlineRaw', s, '1000');
  t.is(await p.fxErr('getDeadlineRaw', tl, s), 'ENOENT', 'set_deadline is a no-op on a signaled fence');
  t.is(await p.ok('syncSetDeadline', f, 100n), 0);
  t.is(await p.fx('getDeadlineRaw', tl, f), '100');
  await p.proc.kill();
  await shutdownClean(t, m);
});

test.serial('a process killed with an open timeline: its points error out for the holders, nothing leaks', async (t) => {
  const m = await bootFor(t);
  const owner = await spawn(m, 'owner');
  const holder = await spawn(m, 'holder');
  const [so, sh] = await m.socketpair(owner.proc, holder.proc);
  const tl = await owner.ok('swSyncTimelineCreate');
  const f = await owner.ok('swSyncFenceCreate', tl, 'f', 3);
  await owner.proc.call('send', so, 'f', [f]);
  const hf = (await holder.proc.call<{ ok: { fds: number[] } }>('recv', sh)).ok.fds[0]!;
  const waiting = holder.proc.call<R<number>>('waitIn', 'fence', hf, 10_000);
  await owner.proc.kill();
  t.deepEqual(await waiting, { ok: 0 }, 'the waiter wakes when the dead owner’s timeline is released');
  t.is((await holder.fx<Info>('info', hf)).status, -ENOENT);
  t.regex(await info(m), /^objs:\n-+\nowner: 0\n {2}fence error@\d+\.\d{9}: 3 \/ 0\n\nfences:\n-+\n$/);
  await holder.proc.kill();
  t.is(await info(m), HEAD + TAIL);
  await shutdownClean(t, m);
});
