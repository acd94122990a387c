/**
 * fork and threads (src/kernel/fork.ts, src/user/fork.ts, Proc.fork/thread): fork copies the fd table and the
 * mappings, a thread shares them, a thread's end closes nothing, the last user closes everything, waitpid settles
 * only once the child is released, ECHILD, and what killing a parent does to its children and threads.
 */
import test from 'ava';
import type { FdView } from './fixtures/fork.js';
import { Machine } from '../src/index.js';
import { bootChecked, bootFor, shutdownNoLeaks } from './helpers/sim.js';

const fixture = new URL('./fixtures/fork.js', import.meta.url);
type R<T> = { ok: T } | { err: string };

test.serial('fork copies the fd table: same numbers, files and cloexec bits; later changes stay on their side', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'parent' });
  const r = await p.call<{
    before: FdView[];
    child: FdView[];
    after: FdView[];
    status: { pid: number; status: number };
    childPid: number;
    nonblockSeen: boolean;
    closedInChildStillOpen: boolean;
  }>('forkCopy');
  t.deepEqual(r.child, r.before, "the child's table as it was at fork, though the parent closed and dup'ed since");
  t.true(r.before.some((v) => v.link.startsWith('/dmabuf:')), 'a dma-buf fd was copied too');
  t.true(r.before.some((v) => v.fd >= 20 && v.cloexec), 'an O_CLOEXEC fd keeps its bit');
  t.deepEqual(r.status, { pid: r.childPid, status: 5 }, "waitpid gives the child's exit status");
  t.true(r.closedInChildStillOpen, "the child's close did not close the parent's fd");
  t.false(r.after.some((v) => v.link.startsWith('/dmabuf:')), "the parent's close after fork stayed in the parent");
  t.true(r.nonblockSeen, "F_SETFL in the child is seen by the parent: new fds, the same open file");
  t.is((await m.stats()).processes, 1, 'the child is gone');
  await p.kill();
  await shutdownNoLeaks(t, m);
});

test.serial('a thread shares the table: its close and new fds are the process’s, the process’s close is the thread’s; its exit closes nothing', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'threads' });
  const r = await p.call<{ status: { pid: number; status: number }; tid: number; pid: number; before: FdView[]; after: FdView[]; x: number }>('threadShare');
  t.deepEqual(r.status, { pid: r.tid, status: 0 }, 'getpid is the process’s, gettid its own, and it saw the process’s close (bits 1, 2, 4 clear)');
  t.not(r.tid, r.pid);
  const at = (views: FdView[], fd: number): string | undefined => views.find((v) => v.fd === fd)?.link;
  t.is(at(r.before, r.x), '/dev/null');
  t.regex(at(r.after, r.x) ?? '', /^socket:/, "the thread's close freed fd x and its socketpair took it: the process sees both");
  const sockets = r.after.filter((v) => v.link.startsWith('socket:')).length;
  t.is(sockets, 4, "the process's own pair and the thread's pair: the thread's exit closed none of them");
  await p.kill();
  await shutdownNoLeaks(t, m);
});

test.serial('from the main thread: threads end without closing anything; the last user of the table closes it all', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'leader' });
  const buf = await p.call<number>('allocAndKeep');
  const [s0] = await p.call<[number, number]>('socketpair');
  const t1 = await p.thread(fixture, { args: ['recvExit', s0], name: 'worker1' });
  const t2 = await p.thread(fixture, { args: ['recvExit', s0], name: 'worker2' });
  t.is(t1.tgid, p.pid);
  t.not(t1.pid, p.pid);
  const st1 = await t1.kill();
  t.true(st1.killed);
  t.true(await p.call<boolean>('isOpen', buf), 'a killed thread closed nothing');
  t.is((await m.dmabufs()).length, 1);
  const waited = await p.call<R<{ pid: number; status: number }>>('waitFor', t1.pid);
  t.deepEqual(waited, { ok: { pid: t1.pid, status: 1 } }, 'the process waits for its thread (made from the main thread) like for a child');
  await p.kill();
  const st2 = await t2.exited;
  t.true(st2.killed, "the process's end ends its other threads (exit_group)");
  t.is((await m.dmabufs()).length, 0, 'the last user gone: the table closed everything');
  t.deepEqual((await m.stats()).objects, {}, 'no kernel object left');
  await shutdownNoLeaks(t, m);
});

test.serial('waitpid returns only after the child is torn down (its buffer and mapping released)', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'waiter' });
  for (let i = 0; i < 5; i++) {
    const r = await p.call<{ status: { pid: number; status: number }; buffersAfterWait: number }>('waitAfterRelease');
    t.is(r.status.status, 3);
    t.is(r.buffersAfterWait, 0, `round ${i}: bufinfo read right after waitpid lists no buffer`);
  }
  // The same from the main thread: Proc.fork, its exited promise, and the parent's waitpid.
  const c = await p.fork(fixture, { args: ['holdBuffer', 7] });
  const st = await c.exited;
  t.is(st.code, 7);
  t.is((await m.dmabufs()).length, 0, 'exited settles after the teardown');
  t.deepEqual(await p.call('waitFor', c.pid), { ok: { pid: c.pid, status: 7 } }, 'a fork made from the main thread is the process’s child');
  await p.kill();
  await shutdownNoLeaks(t, m);
});

test.serial('fork copies the mapping list: the child’s copy keeps the buffer after the parent’s munmap, its own munmap frees it', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'mapper' });
  const r = await p.call<{ buffersAfterParentUnmap: number; status: { status: number }; buffersAfterWait: number }>('forkMappings');
  t.is(r.buffersAfterParentUnmap, 1, 'the child’s inherited mapping holds the buffer');
  t.is(r.status.status, 0, 'the child saw it alive before its munmap and gone after');
  t.is(r.buffersAfterWait, 0);
  await p.kill();
  await shutdownNoLeaks(t, m);
});

test.serial('ECHILD for what is not your child (or was waited for); bad arguments throw like Node', async (t) => {
  const m = await bootFor(t);
  const sibling = await m.spawn(fixture, { name: 'sibling' });
  const p = await m.spawn(fixture, { name: 'waiter' });
  const r = await p.call<Record<string, unknown>>('waitErrors', sibling.pid);
  t.deepEqual(r['no children, any'], { err: 'ECHILD' });
  t.deepEqual(r['not a pid'], { err: 'ECHILD' });
  t.deepEqual(r['itself'], { err: 'ECHILD' });
  t.deepEqual(r['a sibling'], { err: 'ECHILD' });
  t.like(r['first wait'], { ok: { status: 9 } });
  t.deepEqual(r['second wait'], { err: 'ECHILD' });
  t.is(r['pid 1.5'], 'ERR_OUT_OF_RANGE');
  t.is(r['pid "1"'], 'ERR_INVALID_ARG_TYPE');
  t.is(r['options NaN'], 'ERR_OUT_OF_RANGE');
  t.is(r['module 42'], 'ERR_INVALID_ARG_TYPE');
  t.is(r['args 5'], 'ERR_INVALID_ARG_TYPE');
  t.is(r['args BigInt'], 'ERR_INVALID_ARG_TYPE');
  await Promise.all([p.kill(), sibling.kill()]);
  await shutdownNoLeaks(t, m);
});

test.serial('killing a parent: its threads die with it, its forked child runs on and is reaped when it ends', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'parent' });
  const q = await m.spawn(fixture, { name: 'peer' });
  const [pq, qq] = await m.socketpair(p, q);
  const ids = await p.call<{ child: number; thread: number }>('forkAndThreadBlocked', pq);
  const child = m.process(ids.child);
  const thread = m.process(ids.thread);
  if (!child || !thread) throw new Error('no Proc for the child or the thread');
  t.is(child.tgid, ids.child);
  t.is(thread.tgid, p.pid);
  await p.kill();
  t.true((await thread.exited).killed, 'the thread ended with its process');
  t.is(m.process(ids.child), child, 'the child is still running');
  await q.call('send', qq, 'hello');
  const st = await child.exited;
  t.deepEqual([st.code, st.killed], [5, false], 'the orphan received through its inherited fd and exited');
  await q.kill();
  await shutdownNoLeaks(t, m);
});

test.serial('shutdown ends forked children and threads made inside processes; nothing leaks', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'parent' });
  const [s0] = await p.call<[number, number]>('socketpair');
  const ids = await p.call<{ child: number; thread: number }>('forkAndThreadBlocked', s0);
  const grandchild = await m.process(ids.child)!.fork(fixture, { args: ['recvExit', s0] });
  const procs = [m.process(ids.child), m.process(ids.thread), grandchild];
  t.true(procs.every((x) => x !== undefined), 'every task made inside a process has a Proc');
  t.is((await m.stats()).processes, 4);
  await shutdownNoLeaks(t, m);
  const st = await Promise.all(procs.map((x) => x!.exited));
  t.true(st.every((s) => s.killed), 'all killed by shutdown');
});

test.serial('threads-max: fork and thread beyond Machine.boot({ threadsMax }) tasks fail with EAGAIN; a bad value throws', async (t) => {
  await t.throwsAsync(Machine.boot({ threadsMax: 0 }), { code: 'ERR_OUT_OF_RANGE', message: /options\.threadsMax/ });
  await t.throwsAsync(Machine.boot({ threadsMax: 1.5 }), { code: 'ERR_OUT_OF_RANGE' });
  const m = await bootChecked(t, { threadsMax: 4 });
  t.teardown(() => m.shutdown({ quiet: true }).catch(() => {}));
  const p = await m.spawn(fixture, { name: 'forker' });
  const [s0] = await p.call<[number, number]>('socketpair');
  const r = await p.call<{ made: number; error: string }>('forkUntilError', s0, 10);
  t.deepEqual(r, { made: 3, error: 'EAGAIN' }, 'the process and 3 children make 4 tasks');
  t.is((await m.stats()).processes, 4);
  await shutdownNoLeaks(t, m);
});
