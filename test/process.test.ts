/**
 * Process exit and death: exit(), an uncaught error in main and Proc.kill() while blocked in a syscall all run the
 * same teardown in the broker (every fd closed, every mapping dropped, every in-flight fd put), and shutdown wakes
 * blocked calls with ESHUTDOWN and reports no leaks.
 */
import test, { type ExecutionContext } from 'ava';
import { uapi, type ExitStatus, type Machine } from '../src/index.js';
import { GATE_FD, GATE_FD2, GATE_GO } from './fixtures/lifecycle.js';
import { beginShutdown } from '../src/testing.js';
import { bootFor, shutdownNoLeaks, spawnSock, waitParked, withMachine } from './helpers/sim.js';

const { ESHUTDOWN } = uapi.E;
const { O_RDWR, POLLIN, SOCK_DGRAM } = uapi;

const lifecycle = new URL('./fixtures/lifecycle.js', import.meta.url);

type Mode = 'exit' | 'throw' | 'block';

/**
 * P runs lifecycle's main; Q watches. Pair 1 is P's announce socket (P sends "ready" and its fd 0 over it, then
 * dies with an empty receive queue); pair 2 carries an fd Q sent P that P never receives.
 */
async function death(
  t: ExecutionContext,
  mode: Mode,
  end: (p: { exited: Promise<ExitStatus>; kill(): Promise<ExitStatus> }, m: Machine) => Promise<ExitStatus>,
): Promise<void> {
  await withMachine(t, async (m) => {
    const Q = await spawnSock(m, 'watcher');
    const gate = new SharedArrayBuffer(12);
    const P = await m.spawn(lifecycle, { name: `victim-${mode}`, args: [gate, mode] });
    const [p1, q1] = await m.socketpair(P, Q.proc);
    const [p2, q2] = await m.socketpair(P, Q.proc);
    t.deepEqual([p1, p2], [3, 4]);
    const n = await Q.ok('open', '/dev/null', O_RDWR);
    await Q.send(q2, 'never received', [n]);
    await Q.ok('close', n);
    t.is((await m.stats()).objects['scm_rights'], 1);
    const g = new Int32Array(gate);
    Atomics.store(g, GATE_FD, p1);
    Atomics.store(g, GATE_FD2, p2);
    Atomics.store(g, GATE_GO, 1);
    Atomics.notify(g, GATE_GO);

    const ready = await Q.recv(q1);
    t.is(ready.data, `ready ${mode}`);
    t.is(ready.fds.length, 1);
    const status = await end(P, m);
    t.is(status.pid, P.pid);

    // Q's view of P's death: the announce socket had nothing queued, so plain EOF; the other one had Q's fd
    // queued, so unix_release_sock reported ECONNRESET first.
    t.like(await Q.recv(q1), { n: 0, data: '', fds: [] }, 'EOF on the clean socket');
    t.is(await Q.recvErr(q2), 'ECONNRESET');
    t.like(await Q.recv(q2), { n: 0 }, 'then EOF');
    t.is(await Q.err('sendmsg', q1, { data: 'x' }), 'EPIPE');
    // The fd P sent before dying is still good: in-flight references belong to the message, not the process.
    t.is(await Q.readlink(ready.fds[0]!), '/dev/null');

    const st = await m.stats();
    t.is(st.processes, 1);
    t.is(st.objects['scm_rights'] ?? 0, 0, "the fd queued to P was put with P's socket");
    for (const fd of [q1, q2, ready.fds[0]!]) await Q.ok('close', fd);
    const after = await m.stats();
    t.deepEqual(after.objects, { file: 3 }, "nothing of P's is left; Q holds only its stdio");
  });
}

test.serial('exit() runs the teardown', async (t) => {
  await death(t, 'exit', async (p) => {
    const st = await p.exited;
    t.is(st.code, 7);
    t.is(st.error, undefined);
    t.false(st.killed);
    return st;
  });
});

test.serial('an error thrown in main runs the same teardown', async (t) => {
  await death(t, 'throw', async (p) => {
    const st = await p.exited;
    t.is(st.code, 1);
    t.regex(st.error?.message ?? '', /boom from main/);
    return st;
  });
});

test.serial('kill() while blocked in recvmsg runs the same teardown', async (t) => {
  await death(t, 'block', async (p, m) => {
    await waitParked(m, 1); // parked in recvmsg
    const st = await p.kill();
    t.true(st.killed);
    return st;
  });
});

test.serial('kill() with mappings and an in-flight dma-buf leaves nothing behind', async (t) => {
  await withMachine(t, async (m) => {
    const A = await spawnSock(m, 'owner');
    const B = await spawnSock(m, 'holder');
    const [a, b] = await m.socketpair(A.proc, B.proc);
    const fd = await A.r<number>('heapBuffer', 65536, 1);
    if (!('ok' in fd)) throw new Error(fd.err);
    await A.send(a, 'buf', [fd.ok]);
    await B.send(b, 'buf back', [b]); // B's own socket, in flight to A: put when A dies
    t.is((await m.stats()).objects['dma_buf'], 1);
    await A.proc.kill(); // A: an fd, a mapping, an unreceived socket fd in its queue
    t.is((await m.stats()).objects['dma_buf'], 1, 'still in flight to B');
    const got = await B.recv(b);
    t.is(got.fds.length, 1);
    t.deepEqual(await B.r('mapFd', got.fds[0]!, 65536), { ok: 65536 });
    t.deepEqual(await B.r('checkMapped', got.fds[0]!, 1), { ok: -1 });
    await B.proc.kill(); // B: the dma-buf fd and its mapping
    const st = await m.stats();
    t.deepEqual(st, { objects: {}, processes: 0, driverLanes: { lanes: 0, grants: 0 } });
  });
});

/** Resolves with word 0 of `sab` once it is non-zero (or 0 after `ms`). */
async function reported(sab: SharedArrayBuffer, ms = 5000): Promise<number> {
  const w = new Int32Array(sab);
  await Atomics.waitAsync(w, 0, 0, ms).value;
  return Atomics.load(w, 0);
}

test.serial('shutdown wakes processes blocked in recvmsg and poll with ESHUTDOWN', async (t) => {
  const m = await bootFor(t, { system: {} });
  const A = await spawnSock(m, 'recv-blocked');
  const B = await spawnSock(m, 'poll-blocked');
  const [a, b] = await m.socketpair(A.proc, B.proc);
  const sawRecv = new SharedArrayBuffer(4);
  const sawPoll = new SharedArrayBuffer(4);
  // Their results arrive through the SABs; the calls themselves settle either way once shutdown kills them.
  const calls = [A.proc.call('recvAndReport', a, sawRecv), B.proc.call('pollAndReport', b, POLLIN, sawPoll)];
  await waitParked(m, 2);
  t.is(Atomics.load(new Int32Array(sawRecv), 0), 0, 'still blocked');
  t.is(Atomics.load(new Int32Array(sawPoll), 0), 0, 'still blocked');
  // Machine.shutdown() is beginShutdown() then killing every process. Its first half is what fails the parked
  // calls; it is called on its own here so the processes get to run and report before they are killed.
  await beginShutdown(m);
  t.is(await reported(sawRecv), ESHUTDOWN, 'recvmsg failed with ESHUTDOWN');
  t.is(await reported(sawPoll), ESHUTDOWN, 'poll failed with ESHUTDOWN');
  t.deepEqual(await A.r('x', 'nop'), { err: 'ESHUTDOWN' }, 'and any new syscall fails at once');
  await shutdownNoLeaks(t, m);
  await Promise.allSettled(calls);
});

test.serial('shutdown with a parked recvmsg and a parked full sendmsg holding fds reports no leaks', async (t) => {
  const m = await bootFor(t, { system: {} });
  const A = await spawnSock(m, 'sender');
  const B = await spawnSock(m, 'receiver');
  const [a, b] = await m.socketpair(A.proc, B.proc);
  const [c, d] = await m.socketpair(A.proc, B.proc, SOCK_DGRAM);
  const n = await A.ok('open', '/dev/null', O_RDWR);
  await A.send(c, 'in flight at shutdown', [n, c]);
  t.true('ok' in (await A.r('fill', a)), 'the send buffer is full');
  // The buffer is full before the first skb exists: the parked send itself holds the references to n and a.
  const send = A.proc.call('send', a, 'blocked', [n, a]);
  const [, f] = await m.socketpair(A.proc, B.proc);
  const recv = B.proc.call('recvAndReport', f, new SharedArrayBuffer(4));
  await waitParked(m, 2);
  t.is((await m.stats()).objects['scm_rights'], 2, 'n and c in flight on the datagram pair');
  await shutdownNoLeaks(t, m); // parked calls, queues and in-flight fds all released
  // Neither call hangs: each either saw ESHUTDOWN before its process was killed, or rejects saying it was killed.
  for (const [call, name] of [[send, 'sender'], [recv, 'receiver']] as const) {
    const outcome = await call.then(
      (v) => JSON.stringify(v),
      (e: Error) => e.message,
    );
    t.regex(outcome, new RegExp(`ESHUTDOWN|\\(${name}\\) was killed before`), `${name}: ${outcome}`);
  }
  void b;
  void d;
});
