/**
 * sync_file (drivers/dma-buf/sync_file.c) against Linux: SYNC_IOC_MERGE and SYNC_IOC_FILE_INFO with every errno
 * path in the C order, merge semantics (dma_fence_unwrap_merge), the aggregate status, poll, the anon-inode file,
 * fences passed between processes, and libsync's wait in both of its modes. Every test ends with a clean shutdown
 * (no leaked file or fence, no oops, no WARN).
 */
import test from 'ava';
import { uapi, type Machine } from '../src/index.js';
import type { Info, R, RawInfo } from './fixtures/sync.js';
import { bootFor, settlesWithin, shutdownClean, spawnSock, syncFixture, type SockProc } from './helpers/sim.js';

const { FD_CLOEXEC, F_GETFD, POLLERR, POLLIN, POLLOUT, SYNC_IOC_MERGE, SYNC_IOC_FILE_INFO, SW_SYNC_IOC_INC, DMA_BUF_IOCTL_SYNC } = uapi;
const { _IOWR } = uapi;
const ENOENT = uapi.E.ENOENT;

/** A process running test/fixtures/sync: C-library calls by name and the fixture's raw helpers. */
const spawn = (m: Machine, name: string): Promise<SockProc> => spawnSock(m, name, {}, syncFixture);

const statuses = (i: Info): number[] => i.fences.map((f) => f.status);

test.serial('SYNC_IOC_MERGE: errno paths in the C order, inputs stay valid, O_CLOEXEC at the lowest fd, the name', async (t) => {
  const m = await bootFor(t);
  const p = await spawn(m, 'merger');
  const tl = await p.ok('swSyncTimelineCreate');
  const a = await p.ok('swSyncFenceCreate', tl, 'a', 1);
  const b = await p.ok('swSyncFenceCreate', tl, 'b', 2);
  t.deepEqual([tl, a, b], [3, 4, 5]);

  t.is(await p.fxErr('mergeRaw', a, b, { flags: 1 }), 'EINVAL', 'flags');
  t.is(await p.fxErr('mergeRaw', a, b, { pad: 1 }), 'EINVAL', 'pad');
  t.is(await p.fxErr('mergeRaw', a, 0, { flags: 1 }), 'EINVAL', 'flags are checked before fd2');
  t.is(await p.fxErr('mergeRaw', a, 0), 'ENOENT', 'fd2 is /dev/null, not a sync_file');
  t.is(await p.fxErr('mergeRaw', a, tl), 'ENOENT', 'fd2 is the timeline');
  t.is(await p.fxErr('mergeRaw', a, 99), 'ENOENT', 'fd2 is not open: ENOENT, not EBADF');
  t.is(await p.fxErr('mergeRaw', a, -1), 'ENOENT');
  t.is(await p.fxErr('mergeRaw', 0, a), 'ENOTTY', 'fd is not a sync_file');
  t.is(await p.fxErr('mergeRaw', tl, a), 'ENOTTY', 'the timeline has no SYNC_IOC_MERGE');
  t.is(await p.fxErr('mergeRaw', 99, a), 'EBADF');
  t.is(await p.fxErr('mergeRaw', a, b, { bufLen: 40 }), 'EFAULT', 'short struct');
  t.deepEqual(await p.proc.call('openFds'), [0, 1, 2, tl, a, b], 'no failed merge left an fd behind');

  const merged = await p.fx<number>('mergeRaw', a, b, { name: 'merged' });
  t.is(merged, 6, 'lowest free fd');
  t.is(await p.ok('fcntl', merged, F_GETFD), FD_CLOEXEC, 'O_CLOEXEC');
  t.is((await p.fx<Info>('info', merged)).name, 'merged');
  t.is((await p.fx<Info>('info', a)).numFences, 1, 'input a still valid');
  t.is((await p.fx<Info>('info', b)).numFences, 1, 'input b still valid');
  const self = await p.fx<number>('mergeRaw', a, a, { name: 'self' });
  t.is((await p.fx<Info>('info', self)).numFences, 1, 'fd2 may be the same fd');

  const long = await p.fx<number>('mergeRaw', a, b, { nameBytes: Array(32).fill(0x78) });
  t.is((await p.fx<Info>('info', long)).name, 'x'.repeat(31), 'name[31] is forced to NUL');
  // No name: sync_file_get_name derives "<driver>-<timeline><context>-<seqno>" from the fence — here b's own
  // fence, since a merge of one timeline's points is its latest point.
  const unnamed = await p.fx<number>('mergeRaw', a, b, { name: '' });
  const bName = (await p.fx<Info>('info', b)).name;
  t.regex(bName, /^sw_sync-merger\d+-2$/);
  t.is((await p.fx<Info>('info', unnamed)).name, bName);

  const filler = await p.proc.call<number[]>('fillFdTable');
  t.is(await p.fxErr('mergeRaw', a, b), 'EMFILE', 'no fd left: EMFILE before anything else');
  t.is(await p.fxErr('mergeRaw', a, b, { flags: 1 }), 'EMFILE', 'get_unused_fd_flags comes first');
  await p.proc.call('closeAll', filler);

  for (const fd of [unnamed, long, self, merged, b, a, tl]) await p.ok('close', fd);
  t.deepEqual(await p.proc.call('openFds'), [0, 1, 2]);
  await shutdownClean(t, m);
});

test.serial('merge semantics: flatten, drop signaled leaves, later seqno per context (u32 wrap), all signaled → stub', async (t) => {
  const m = await bootFor(t);
  const p = await spawn(m, 'merger');
  const [ta, tb, tc] = [await p.ok('swSyncTimelineCreate'), await p.ok('swSyncTimelineCreate'), await p.ok('swSyncTimelineCreate')];
  const fa = await p.ok('swSyncFenceCreate', ta, 'a', 5);
  const fb = await p.ok('swSyncFenceCreate', tb, 'b', 5);
  const fc = await p.ok('swSyncFenceCreate', tc, 'c', 5);
  const fab = await p.ok('syncMerge', 'ab', fa, fb);
  const fabc = await p.ok('syncMerge', 'abc', fc, fab);
  const i = await p.fx<Info>('info', fabc);
  t.is(i.numFences, 3, 'the inner merge is flattened');
  t.deepEqual(i.fences.map((f) => [f.obj, f.driver, f.status, f.flags, f.ts]), Array(3).fill(['merger', 'sw_sync', 0, 0, '0']));
  t.is((await p.fx<Info>('info', await p.ok('syncMerge', 'again', fabc, fabc))).numFences, 3, 'merging with itself dedups');

  await p.ok('swSyncTimelineInc', ta, 5);
  t.is((await p.fx<Info>('info', await p.ok('syncMerge', 'drop', fabc, fb))).numFences, 2, 'the signaled leaf of A is dropped');
  await p.ok('swSyncTimelineInc', tb, 5);
  t.is((await p.fx<Info>('info', await p.ok('syncMerge', 'one', fabc, fb))).numFences, 1, 'one pending leaf: the fence itself');

  // All signaled: a new private stub, signaled at the latest leaf's timestamp.
  await p.ok('swSyncTimelineInc', tc, 5);
  const stub = await p.fx<Info>('info', await p.ok('syncMerge', 'stub', fa, fc));
  const tsA = BigInt((await p.fx<Info>('info', fa)).fences[0]!.ts);
  const tsC = BigInt((await p.fx<Info>('info', fc)).fences[0]!.ts);
  t.true(tsA > 0n && tsC >= tsA, 'leaves signaled in order');
  t.deepEqual(stub.fences.map((f) => [f.obj, f.driver, f.status, f.ts]), [['stub', 'stub', 1, tsC.toString()]]);
  t.is(stub.status, 1);

  // Same context: the later seqno wins with the 32-bit wrap-around compare. Timeline value −256 (0xffffff00):
  // 0xfffffff0 and 5 are both ahead of it, and 5 is the later one.
  const tw = await p.ok('swSyncTimelineCreate');
  await p.ok('swSyncTimelineInc', tw, 0xffffff00);
  const p1 = await p.ok('swSyncFenceCreate', tw, 'p1', 0xfffffff0);
  const p2 = await p.ok('swSyncFenceCreate', tw, 'p2', 5);
  const w = await p.ok('syncMerge', 'wrap', p1, p2);
  t.is((await p.fx<Info>('info', w)).numFences, 1);
  await p.ok('swSyncTimelineInc', tw, 0xf0); // value −16 = 0xfffffff0
  t.is((await p.fx<Info>('info', p1)).status, 1, 'p1 signaled');
  t.is((await p.fx<Info>('info', w)).status, 0, 'the merge kept p2 (5), still pending');
  await p.ok('swSyncTimelineInc', tw, 21);
  t.is((await p.fx<Info>('info', w)).status, 1);

  await p.proc.kill(); // exit_files closes everything
  await shutdownClean(t, m);
});

test.serial('SYNC_IOC_FILE_INFO: EINVAL paths, the count query, the array pointer, per-fence info, aggregate status', async (t) => {
  const m = await bootFor(t);
  const p = await spawn(m, 'infoproc');
  const tls: number[] = [];
  for (let i = 0; i < 9; i++) tls.push(await p.ok('swSyncTimelineCreate'));
  const pts: number[] = [];
  for (const tl of tls) pts.push(await p.ok('swSyncFenceCreate', tl, 'pt', 5));
  /** A merge of three points, ordered by context (= timeline creation order). */
  const merge3 = async (x: number, y: number, z: number): Promise<number> =>
    p.ok('syncMerge', 'm', z, await p.ok('syncMerge', 'tmp', x, y));
  const m1 = await merge3(pts[0]!, pts[1]!, pts[2]!);

  t.is(await p.fxErr('fileInfoRaw', m1, { flags: 1 }), 'EINVAL');
  t.is(await p.fxErr('fileInfoRaw', m1, { pad: 1 }), 'EINVAL');
  t.is(await p.fxErr('fileInfoRaw', m1, { bufLen: 40 }), 'EFAULT', 'short struct');
  const count = await p.fx<RawInfo>('fileInfoRaw', m1);
  t.deepEqual(
    { name: count.name, status: count.status, numFences: count.numFences, tail: count.tail },
    { name: 'm', status: 0, numFences: 3, tail: [] },
    'num_fences 0: only the count and the container status',
  );
  t.is(await p.fxErr('fileInfoRaw', m1, { numFences: 2 }), 'EINVAL', 'num_fences < n');
  t.is(await p.fxErr('fileInfoRaw', m1, { numFences: 1 }), 'EINVAL');
  t.is(await p.fxErr('fileInfoRaw', m1, { numFences: 3, ptr: 0 }), 'EFAULT', 'NULL array pointer');
  t.is(await p.fxErr('fileInfoRaw', m1, { numFences: 3, bufLen: 56 + 3 * 80 - 1 }), 'EFAULT', 'array runs off the buffer');
  t.is(await p.fxErr('fileInfoRaw', m1, { numFences: 3, ptr: 57 }), 'EFAULT');
  const roomy = await p.fx<RawInfo>('fileInfoRaw', m1, { numFences: 5, fill: 0xaa });
  t.is(roomy.numFences, 3, 'the real count is written back');
  t.deepEqual(roomy.tail.slice(3 * 80), Array(2 * 80).fill(0xaa), 'nothing written past the fences');
  t.is(roomy.tail[64], 0, 'status of entry 0');
  t.is(roomy.flags, 0);

  const info = await p.fx<Info>('info', m1);
  t.deepEqual(statuses(info), [0, 0, 0]);
  t.is(info.status, 0);

  await p.ok('swSyncTimelineInc', tls[0], 5);
  t.deepEqual(statuses(await p.fx<Info>('info', m1)), [1, 0, 0]);
  t.is((await p.fx<Info>('info', m1)).status, 0, 'first status ≤ 0 is B (active)');
  await p.ok('close', tls[1]); // B errors out with -ENOENT
  const afterClose = await p.fx<Info>('info', m1);
  t.deepEqual(statuses(afterClose), [1, -ENOENT, 0]);
  t.is(afterClose.status, -ENOENT, 'aggregate: the first component with status ≤ 0, in array order');
  t.is((await p.fx<RawInfo>('fileInfoRaw', m1)).status, 0, 'the container itself is still pending (C is)');
  t.true(afterClose.fences.every((f, i) => (f.ts === '0') === (i === 2)), 'timestamps only for signaled components');
  await p.ok('swSyncTimelineInc', tls[2], 5);
  t.deepEqual(statuses(await p.fx<Info>('info', m1)), [1, -ENOENT, 1]);
  t.is((await p.fx<Info>('info', m1)).status, -ENOENT);
  t.is((await p.fx<RawInfo>('fileInfoRaw', m1)).status, -ENOENT, 'the array signaled with the error');

  // [1, 0, error]: the active one comes first.
  const m2 = await merge3(pts[3]!, pts[4]!, pts[5]!);
  await p.ok('swSyncTimelineInc', tls[3], 5);
  await p.ok('close', tls[5]);
  t.deepEqual(statuses(await p.fx<Info>('info', m2)), [1, 0, -ENOENT]);
  t.is((await p.fx<Info>('info', m2)).status, 0);
  // [1, 1, 1]: 1.
  const m3 = await merge3(pts[6]!, pts[7]!, pts[8]!);
  for (const i of [6, 7, 8]) await p.ok('swSyncTimelineInc', tls[i], 9);
  t.deepEqual(statuses(await p.fx<Info>('info', m3)), [1, 1, 1]);
  t.is((await p.fx<Info>('info', m3)).status, 1);

  t.is(await p.fxErr('fileInfoRaw', 0), 'ENOTTY', '/dev/null');
  t.is(await p.fxErr('fileInfoRaw', tls[0]), 'ENOTTY', 'a timeline');
  t.is(await p.fxErr('fileInfoRaw', 99), 'EBADF');
  t.is(await p.err('syncFenceCountWithStatus', 99, 1), 'EBADF');
  t.is(await p.ok('syncFenceSize', m1), 3);
  t.is(await p.ok('syncFenceCountWithStatus', m1, 1), 2);
  t.is(await p.ok('syncFenceCountWithStatus', m1, -ENOENT), 1);
  t.is(await p.ok('syncFenceCountWithStatus', m1, uapi.FENCE_STATUS_ERROR), 0, 'FENCE_STATUS_ERROR is −1; the kernel says −ENOENT');

  await p.proc.kill();
  await shutdownClean(t, m);
});

test.serial('unknown ioctls on a sync_file are ENOTTY (burned numbers, other sizes, other drivers’ cmds)', async (t) => {
  const m = await bootFor(t);
  const p = await spawn(m, 'ioctls');
  const tl = await p.ok('swSyncTimelineCreate');
  const f = await p.ok('swSyncFenceCreate', tl, 'f', 1);
  const buf = Array(64).fill(0);
  for (const nr of [0, 1, 2, 6]) t.is(await p.fxErr('ioctlRaw', f, _IOWR('>', nr, 48), buf), 'ENOTTY', `nr ${nr}`);
  t.is(await p.fxErr('ioctlRaw', f, (SYNC_IOC_MERGE & ~(0x3fff << 16)) | (40 << 16), buf), 'ENOTTY', 'MERGE with another size');
  t.is(await p.fxErr('ioctlRaw', f, (SYNC_IOC_FILE_INFO & ~(3 << 30)) | (1 << 30), buf), 'ENOTTY', 'FILE_INFO with _IOW');
  t.is(await p.fxErr('ioctlRaw', f, SW_SYNC_IOC_INC, [1, 0, 0, 0]), 'ENOTTY');
  t.is(await p.fxErr('ioctlRaw', f, DMA_BUF_IOCTL_SYNC, buf.slice(0, 8)), 'ENOTTY');
  await p.proc.kill();
  await shutdownClean(t, m);
});

test.serial('poll: POLLIN only once signaled — also with an error — never POLLERR or POLLOUT', async (t) => {
  const m = await bootFor(t);
  const p = await spawn(m, 'poller');
  const tl = await p.ok('swSyncTimelineCreate');
  const tl2 = await p.ok('swSyncTimelineCreate');
  const f = await p.ok('swSyncFenceCreate', tl, 'f', 1);
  const g = await p.ok('swSyncFenceCreate', tl2, 'g', 1);
  const all = POLLIN | POLLOUT | POLLERR;
  t.deepEqual(await p.fx('pollMany', [f, g], all, 0), [0, 0]);
  t.deepEqual(await p.fx('pollMany', [f, g], all, 20), [0, 0], 'times out');
  await p.ok('swSyncTimelineInc', tl, 1);
  t.deepEqual(await p.fx('pollMany', [f, g], all, -1), [POLLIN, 0]);
  await p.ok('close', tl2); // g: signaled with -ENOENT
  t.deepEqual(await p.fx('pollMany', [f, g], all, 0), [POLLIN, POLLIN], 'an errored fence is still just readable');
  t.is((await p.fx<Info>('info', g)).status, -ENOENT);
  t.deepEqual(await p.fx('pollMany', [f], POLLOUT, 0), [0], 'no POLLOUT even when signaled');
  await p.proc.kill();
  await shutdownClean(t, m);
});

for (const mode of ['poll', 'fence'] as const) {
  test.serial(`syncWait (${mode} mode): 0 when signaled, ETIME on timeout, EINVAL for bad fds, woken by another process`, async (t) => {
    const m = await bootFor(t);
    const a = await spawn(m, 'waiter');
    const b = await spawn(m, 'signaler');
    const [sa, sb] = await m.socketpair(a.proc, b.proc);
    const tl = await a.ok('swSyncTimelineCreate');
    const f = await a.ok('swSyncFenceCreate', tl, 'f', 2);
    t.is(await a.fxErr('waitIn', mode, f, 0), 'ETIME');
    t.is(await a.fxErr('waitIn', mode, f, 30), 'ETIME');
    t.is(await a.fxErr('waitIn', mode, -1, 0), 'EINVAL');
    t.is(await a.fxErr('waitIn', mode, 77, 0), 'EINVAL', 'closed fd: POLLNVAL');
    t.is(await a.fx('waitIn', mode, 0, 0), 0, '/dev/null polls readable, so libsync says "signaled"');

    // The timeline goes to b; a blocks until b advances it.
    await a.proc.call('send', sa, 't', [tl]);
    const { fds } = await b.proc.call<{ ok: { fds: number[] } }>('recv', sb).then((r) => r.ok);
    const waiting = a.proc.call<R<number>>('waitIn', mode, f, 10_000);
    t.false(await settlesWithin(waiting, 100), 'a is blocked');
    await b.ok('swSyncTimelineInc', fds[0], 1);
    t.false(await settlesWithin(waiting, 50), 'value 1 is not enough');
    await b.ok('swSyncTimelineInc', fds[0], 1);
    t.deepEqual(await waiting, { ok: 0 });
    t.is(await a.fx('waitIn', mode, f, 0), 0, 'and stays signaled');

    // An errored fence: the timeline is released once both fds are closed; that wakes the waiter with success.
    const g = await a.ok('swSyncFenceCreate', tl, 'g', 9);
    await a.ok('close', tl); // b still holds the timeline
    const waitG = a.proc.call<R<number>>('waitIn', mode, g, 10_000);
    t.false(await settlesWithin(waitG, 100), 'b still holds the timeline');
    await b.ok('close', fds[0]);
    t.deepEqual(await waitG, { ok: 0 });
    t.is((await a.fx<Info>('info', g)).status, -ENOENT);
    await Promise.all([a.proc.kill(), b.proc.kill()]);
    await shutdownClean(t, m);
  });
}

test.serial('a fence made in one process is waited on in a second and signaled from a third (SCM_RIGHTS)', async (t) => {
  const m = await bootFor(t);
  const maker = await spawn(m, 'maker');
  const waiter = await spawn(m, 'waiter');
  const kicker = await spawn(m, 'kicker');
  const [m1, w1] = await m.socketpair(maker.proc, waiter.proc);
  const [m2, k2] = await m.socketpair(maker.proc, kicker.proc);
  const tl = await maker.ok('swSyncTimelineCreate');
  const f = await maker.ok('swSyncFenceCreate', tl, 'f', 1);
  await maker.proc.call('send', m1, 'f', [f]);
  await maker.proc.call('send', m2, 't', [tl]);
  await maker.ok('close', f);
  await maker.ok('close', tl); // the kicker's fd keeps the timeline open
  const wf = (await waiter.proc.call<{ ok: { fds: number[] } }>('recv', w1)).ok.fds[0]!;
  const kt = (await kicker.proc.call<{ ok: { fds: number[] } }>('recv', k2)).ok.fds[0]!;

  // The waiter merges the received fence with one of its own timeline: fences from two processes in one array.
  const own = await waiter.ok('swSyncTimelineCreate');
  const mine = await waiter.ok('swSyncFenceCreate', own, 'mine', 1);
  const both = await waiter.ok('syncMerge', 'both', wf, mine);
  t.deepEqual((await waiter.fx<Info>('info', both)).fences.map((x) => x.obj), ['maker', 'waiter'], 'timelines keep their opener’s name');
  await waiter.ok('swSyncTimelineInc', own, 1);

  const waiting = waiter.proc.call<R<number>>('waitIn', 'fence', both, 10_000);
  const polling = waiter.proc.call<R<number[]>>('pollMany', [wf], POLLIN, 10_000);
  t.false(await settlesWithin(waiting, 100));
  await kicker.ok('swSyncTimelineInc', kt, 1);
  t.deepEqual(await waiting, { ok: 0 });
  t.deepEqual(await polling, { ok: [POLLIN] });
  t.deepEqual(statuses(await waiter.fx<Info>('info', both)), [1, 1]);
  await Promise.all([maker.proc.kill(), waiter.proc.kill(), kicker.proc.kill()]);
  await shutdownClean(t, m);
});

test.serial('the file: readlink anon_inode:sync_file, fdinfo is the generic block only, one shared anon inode', async (t) => {
  const m = await bootFor(t);
  const p = await spawn(m, 'files');
  const tl = await p.ok('swSyncTimelineCreate');
  const a = await p.ok('swSyncFenceCreate', tl, 'a', 1);
  const b = await p.ok('swSyncFenceCreate', tl, 'b', 2);
  const ab = await p.ok('syncMerge', 'ab', a, b);
  for (const fd of [a, b, ab]) t.is(await p.readlink(fd), 'anon_inode:sync_file');
  const texts = await Promise.all([a, b, ab].map((fd) => p.fx<string>('fdinfo', fd)));
  const ino = /ino:\t(\d+)\n/.exec(texts[0]!)![1];
  for (const s of texts) t.is(s, `pos:\t0\nflags:\t02000000\nmnt_id:\t14\nino:\t${ino}\n`);
  const dupd = await p.ok('dup', a);
  t.is(await p.fx<string>('fdinfo', dupd), `pos:\t0\nflags:\t00\nmnt_id:\t14\nino:\t${ino}\n`, 'dup drops O_CLOEXEC; f_flags are 0 (O_RDONLY)');
  t.is(await p.err('read', a, 8), 'EINVAL', 'no read op');
  t.is(await p.err('write', a, 'x'), 'EBADF', 'opened read-only');
  await p.proc.kill();
  await shutdownClean(t, m);
});
