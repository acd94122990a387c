/**
 * JavaScript arguments are not C (issue 6 §4): the C library refuses values no C caller could pass with Node-style
 * argument errors naming the argument; the kernel re-checks every argument it reads from the channel (a process
 * may write any f64 there) and converts the rest as the C ABI does; large and infinite timeouts wait.
 */
import test from 'ava';
import { uapi } from '../src/index.js';
import type { Js, RawOutcome } from './fixtures/args.js';
import type { R } from './fixtures/common.js';
import { settlesWithin, spawnSock, withMachine } from './helpers/sim.js';

const fixture = new URL('./fixtures/args.js', import.meta.url);
const { F_DUPFD, F_GETFD, MAP_SHARED, O_RDONLY, POLLIN, PROT_READ, RLIMIT_NOFILE } = uapi;

const typeError = (message: string) => ({ js: { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message } });
const rangeError = (message: string) => ({ js: { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message } });
const INT_RANGE = 'It must be an integer >= -2147483648 && <= 2147483647.';

test('close/fcntl/read: Node-style errors that name the argument, in Node\'s words', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture);
    t.deepEqual(await p.call('js', 'close', '3'), typeError('The "fd" argument must be of type number. Received type string (\'3\')'));
    t.deepEqual(await p.call('js', 'close', 3.5), rangeError(`The value of "fd" is out of range. ${INT_RANGE} Received 3.5`));
    t.deepEqual(await p.call('js', 'close', undefined), typeError('The "fd" argument must be of type number. Received undefined'));
    t.deepEqual(await p.call('js', 'close', 2 ** 31), rangeError(`The value of "fd" is out of range. ${INT_RANGE} Received 2147483648`));
    t.deepEqual(
      await p.call('js', 'read', 0, 2 ** 64),
      rangeError('The value of "count" is out of range. It must be an integer >= -(2 ** 63) && < 2 ** 64. Received 18_446_744_073_709_552_000'),
    );
    t.deepEqual(await p.call('js', 'fcntl', 0, F_DUPFD), typeError('The "arg" argument must be of type number. Received undefined'), 'F_DUPFD needs its arg');
    t.deepEqual(await p.call('js', 'fcntl', 0, F_GETFD), { ok: 0 }, 'F_GETFD takes none');
    t.deepEqual(
      await p.call('js', 'sendmsg', 0, { fds: [0, 'x'] }),
      typeError('The "msg.fds[1]" property must be of type number. Received type string (\'x\')'),
    );
    t.deepEqual(await p.call('js', 'open', '/dev/null\0x'), {
      js: { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: "The argument 'path' must be a string without null bytes. Received '/dev/null\\x00x'" },
    });
    // Values a C caller can pass still reach the kernel and get Linux's errno.
    t.deepEqual(await p.call('js', 'close', -1), { err: 'EBADF' });
    t.deepEqual(await p.call('js', 'read', 0, -1), { err: 'EFAULT' });
  });
});

test('every exported function of the C library, libsync and libdmabufheap checks its arguments', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture);
    const bad: [string, unknown[], string][] = [
      ['open', [42], 'ERR_INVALID_ARG_TYPE'],
      ['open', ['/dev/null', 1.5], 'ERR_OUT_OF_RANGE'],
      ['open', ['/dev/null', O_RDONLY, NaN], 'ERR_OUT_OF_RANGE'],
      ['close', [NaN], 'ERR_OUT_OF_RANGE'],
      ['dup', [null], 'ERR_INVALID_ARG_TYPE'],
      ['dup2', [0, 1.5], 'ERR_OUT_OF_RANGE'],
      ['dup3', [0, 5, '0'], 'ERR_INVALID_ARG_TYPE'],
      ['fcntl', [0, NaN], 'ERR_OUT_OF_RANGE'],
      ['fcntl', [0, F_DUPFD, 3.5], 'ERR_OUT_OF_RANGE'],
      ['ioctl', [0, 0x5401, {}], 'ERR_INVALID_ARG_TYPE'],
      ['ioctl', [0, 0.5], 'ERR_OUT_OF_RANGE'],
      ['ioctl', [0, 0x5401, 1.5], 'ERR_OUT_OF_RANGE'],
      ['mmap', [null, NaN, PROT_READ, MAP_SHARED, 0, 0], 'ERR_OUT_OF_RANGE'],
      ['mmap', [null, 4096, PROT_READ, MAP_SHARED, 0, 0.5], 'ERR_OUT_OF_RANGE'],
      ['mmap', [null, 4096, PROT_READ, MAP_SHARED, undefined], 'ERR_INVALID_ARG_TYPE'],
      ['munmap', [0x7f00_0000_0000], 'ERR_INVALID_ARG_TYPE'],
      ['munmap', ['0'], 'ERR_INVALID_ARG_TYPE'],
      ['lseek', [0, 1.5, 0], 'ERR_OUT_OF_RANGE'],
      ['read', [0, '4'], 'ERR_INVALID_ARG_TYPE'],
      ['write', [0, 42], 'ERR_INVALID_ARG_TYPE'],
      ['readlink', [undefined], 'ERR_INVALID_ARG_TYPE'],
      ['readFile', [{}], 'ERR_INVALID_ARG_TYPE'],
      ['poll', [{}, 0], 'ERR_INVALID_ARG_TYPE'],
      ['poll', [[], NaN], 'ERR_OUT_OF_RANGE'],
      ['poll', [[{ fd: 0, events: 2 ** 20 }], 0], 'ERR_OUT_OF_RANGE'],
      ['pollOne', [undefined], 'ERR_INVALID_ARG_TYPE'],
      ['socketpair', [1, 1.5], 'ERR_OUT_OF_RANGE'],
      ['sendmsg', [0, null], 'ERR_INVALID_ARG_TYPE'],
      ['sendmsg', [0, { data: 5 }], 'ERR_INVALID_ARG_TYPE'],
      ['sendmsg', [0, { fds: 3 }], 'ERR_INVALID_ARG_TYPE'],
      ['sendmsg', [0, {}, NaN], 'ERR_OUT_OF_RANGE'],
      ['recvmsg', [0, 1.5], 'ERR_OUT_OF_RANGE'],
      ['recvmsg', [0, 16, NaN], 'ERR_OUT_OF_RANGE'],
      ['shutdown', [0, '1'], 'ERR_INVALID_ARG_TYPE'],
      ['getrlimit', [NaN], 'ERR_OUT_OF_RANGE'],
      ['setrlimit', [RLIMIT_NOFILE, 64], 'ERR_INVALID_ARG_TYPE'],
      ['setrlimit', [RLIMIT_NOFILE, { cur: 64, max: NaN }], 'ERR_OUT_OF_RANGE'],
      ['exit', [0.5], 'ERR_OUT_OF_RANGE'],
      ['cstr', [5], 'ERR_INVALID_ARG_TYPE'],
      ['syncWait', [NaN, 0], 'ERR_OUT_OF_RANGE'],
      ['syncWait', [0, NaN], 'ERR_OUT_OF_RANGE'],
      ['syncWait', [0, '10'], 'ERR_INVALID_ARG_TYPE'],
      ['syncMerge', [1, 0, 0], 'ERR_INVALID_ARG_TYPE'],
      ['syncMerge', ['m', 0, 0.5], 'ERR_OUT_OF_RANGE'],
      ['syncFileInfo', ['0'], 'ERR_INVALID_ARG_TYPE'],
      ['syncFenceSize', [NaN], 'ERR_OUT_OF_RANGE'],
      ['syncFenceCountWithStatus', [0, 0.5], 'ERR_OUT_OF_RANGE'],
      ['syncSetDeadline', [0, 1.5], 'ERR_OUT_OF_RANGE'],
      ['swSyncTimelineInc', [0, NaN], 'ERR_OUT_OF_RANGE'],
      ['swSyncFenceCreate', [0, 'f', 1.5], 'ERR_OUT_OF_RANGE'],
      ['swSyncFenceCreate', [0, undefined, 1], 'ERR_INVALID_ARG_TYPE'],
      ['swSyncGetDeadline', [0, NaN], 'ERR_OUT_OF_RANGE'],
      ['swSyncTimelineIsValid', ['3'], 'ERR_INVALID_ARG_TYPE'],
      ['swSyncTimelineDestroy', [NaN], 'ERR_OUT_OF_RANGE'],
      ['swSyncFenceIsValid', [undefined], 'ERR_INVALID_ARG_TYPE'],
      ['swSyncFenceDestroy', [0.5], 'ERR_OUT_OF_RANGE'],
      ['setSyncWaitMode', ['spin'], 'ERR_INVALID_ARG_VALUE'],
      ['heapOpen', [undefined], 'ERR_INVALID_ARG_TYPE'],
      ['heapAlloc', [0, 4096.5], 'ERR_OUT_OF_RANGE'],
      ['heapAlloc', [0, '4096'], 'ERR_INVALID_ARG_TYPE'],
      ['heapAlloc', [0, 4096, NaN], 'ERR_OUT_OF_RANGE'],
      ['heapAlloc', [0, 4096, 0, 0.5], 'ERR_OUT_OF_RANGE'],
      ['dmaBufSync', [0, NaN], 'ERR_OUT_OF_RANGE'],
      ['dmaBufSetName', [0, 5], 'ERR_INVALID_ARG_TYPE'],
      ['dmaBufExportSyncFile', [0, 1.5], 'ERR_OUT_OF_RANGE'],
      ['dmaBufImportSyncFile', [0, 1, NaN], 'ERR_OUT_OF_RANGE'],
      ['fork', [42], 'ERR_INVALID_ARG_TYPE'],
      ['thread', ['./x.js', null], 'ERR_INVALID_ARG_TYPE'],
      ['waitpid', [1.5], 'ERR_OUT_OF_RANGE'],
      ['waitpid', [-1, NaN], 'ERR_OUT_OF_RANGE'],
    ];
    for (const [fn, args, code] of bad) {
      const r = await p.call<Js<unknown>>('js', fn, ...args);
      t.like(r, { js: { code } }, `${fn}(${args.map((a) => String(a)).join(', ')})`);
    }
    t.deepEqual(await p.call('isOpen', 0), true, 'none of them reached the kernel as fd 0');
  });
});

test('fcntl(fd, F_DUPFD, 3.5) installs no fd 3.5, from the C library or raw through the channel', async (t) => {
  // Before: the kernel installed fd 3.5, which nothing could close: the shutdown leak check failed.
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture);
    const r = await p.call<{ js: Js<unknown>; raw: R<number[]> }>('dupfdFraction');
    t.like(r.js, { js: { code: 'ERR_OUT_OF_RANGE' } });
    t.deepEqual(r.raw, { err: 'EINVAL' });
  });
});

for (const [bad, why] of [
  [NaN, 'read(sock, NaN) discarded the queued message and its fd'],
  [1.5, 'read(sock, 1.5) took a byte and returned none of it'],
] as const) {
  test(`read(sock, ${bad}) is refused and the queued message and its fd stay (before: ${why})`, async (t) => {
    await withMachine(t, async (m) => {
      const p = await m.spawn(fixture);
      const r = await p.call<{ js: Js<unknown>; raw: R<number[]>; after: R<{ data: string; nfds: number }> }>('readBadCount', bad);
      t.like(r.js, { js: { code: 'ERR_OUT_OF_RANGE' } });
      t.deepEqual(r.raw, { err: 'EINVAL' });
      t.deepEqual(r.after, { ok: { data: 'hi', nfds: 1 } });
    });
  });
}

test('setrlimit(NaN) is refused and opens keep working (before: every later open was EMFILE)', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture);
    const r = await p.call<{ js: Js<unknown>; raw: R<number[]>; open: R<number> }>('setrlimitNaN');
    t.like(r.js, { js: { code: 'ERR_OUT_OF_RANGE', message: `The value of "limit.cur" is out of range. It must be an integer >= -(2 ** 63) && < 2 ** 64. Received NaN` } });
    t.deepEqual(r.raw, { err: 'EINVAL' });
    t.true('ok' in r.open, JSON.stringify(r.open));
  });
});

test('close(undefined) and a raw close(NaN) leave fd 0 open (before: they closed fd 0)', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture);
    const r = await p.call<{ js: Js<unknown>; raw: R<number[]>; fd0: boolean }>('closeUndefined');
    t.like(r.js, { js: { code: 'ERR_INVALID_ARG_TYPE' } });
    t.deepEqual(r.raw, { err: 'EBADF' });
    t.true(r.fd0);
  });
});

test('NaN or a string in a sendmsg fd list or a pollfd is refused, not sent or polled as fd 0', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture);
    for (const bad of [NaN, '3', undefined]) {
      const r = await p.call<{ js: Js<unknown>; peer: R<unknown> }>('sendBadFd', bad);
      t.like(r.js, { js: { code: typeof bad === 'number' ? 'ERR_OUT_OF_RANGE' : 'ERR_INVALID_ARG_TYPE' } }, String(bad));
      t.deepEqual(r.peer, { err: 'EAGAIN' }, 'nothing was sent');
      t.like(await p.call('pollList', [{ fd: bad, events: POLLIN }], 0), {
        js: { code: typeof bad === 'number' ? 'ERR_OUT_OF_RANGE' : 'ERR_INVALID_ARG_TYPE' },
      });
    }
    t.like(await p.call('pollList', [{ fd: 0, events: POLLIN }, null], 0), { js: { message: 'The "fds[1]" argument must be of type object. Received null' } });
  });
});

test('the kernel re-checks raw channel arguments: a value no register holds is EINVAL (EBADF for an fd), never used', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture);
    const outcomes = await p.call<RawOutcome[]>('rawBadArgs');
    t.true(outcomes.length > 350);
    const wrong = outcomes.filter((o) => o.result !== 'EINVAL' && o.result !== 'EBADF');
    t.deepEqual(wrong, [], 'every bad value in an argument the call reads is refused');
    const byFd = outcomes.filter((o) => o.result === 'EBADF').map((o) => `${o.op}:${o.arg}`);
    t.deepEqual(
      [...new Set(byFd)].sort(),
      ['close:0', 'dup3:0', 'dup3:1', 'dup:0', 'fcntl:0', 'ioctl:0', 'lseek:0', 'mmap:4', 'read:0', 'recvmsg:0', 'sendmsg:0', 'shutdown:0', 'sync_file_fence:0', 'write:0'],
      'the fd arguments answer EBADF',
    );
  });
});

test('the kernel converts int arguments as the C ABI does: the low 32 bits of the register', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(fixture);
    const r = await p.call<{ dup: R<number[]>; close: R<number[]>; dupfd: R<number[]> }>('rawTruncation');
    t.like(r.dup, { ok: [4] }, 'dup(2^32 + 3) is dup(3)');
    t.like(r.dupfd, { ok: [20] }, 'F_DUPFD from (int)(2^33 + 20) = 20');
    t.like(r.close, { ok: [0] }, 'close(-2^32 + 3) is close(3)');
  });
});

// ---- timeouts -------------------------------------------------------------------------------------------------

/** Resolves once the process stored 1 in word 0 of `sab` (it is about to make its waiting call); bounded. */
async function started(sab: SharedArrayBuffer): Promise<void> {
  const w = new Int32Array(sab);
  const r = Atomics.waitAsync(w, 0, 0, 30_000);
  if (r.async) await r.value;
  if (Atomics.load(w, 0) !== 1) throw new Error('the process never started its wait');
}

for (const mode of ['poll', 'fence'] as const) {
  for (const timeout of [2 ** 31, 2 ** 32 + 5, Infinity]) {
    test(`syncWait(fd, ${timeout}) in ${mode} mode waits for the signal and succeeds`, async (t) => {
      // Before: poll mode answered ETIME at once (the broker's setTimeout overflowed to 1 ms); fence mode waited.
      await withMachine(t, async (m) => {
        const a = await spawnSock(m, 'waiter', {}, fixture);
        const b = await spawnSock(m, 'signaller', {}, fixture);
        const [sa, sb] = await m.socketpair(a.proc, b.proc);
        const tl = await a.ok<number>('swSyncTimelineCreate');
        const fence = await a.ok<number>('swSyncFenceCreate', tl, 'f', 1);
        await a.send(sa, 't', [tl]);
        const [tlB] = (await b.recv(sb)).fds;
        const mark = new SharedArrayBuffer(4);
        const waiting = a.proc.call<R<number>>('syncWaitMarked', mode, fence, timeout, mark);
        await started(mark);
        t.false(await settlesWithin(waiting, 150), 'still waiting: the fence is not signaled');
        await b.ok('swSyncTimelineInc', tlB, 1);
        t.deepEqual(await waiting, { ok: 0 });
      });
    });
  }
}

test('poll(fds, 2^31) waits until an fd is ready', async (t) => {
  await withMachine(t, async (m) => {
    const a = await spawnSock(m, 'poller', {}, fixture);
    const b = await spawnSock(m, 'signaller', {}, fixture);
    const [sa, sb] = await m.socketpair(a.proc, b.proc);
    const mark = new SharedArrayBuffer(4);
    const waiting = a.proc.call<R<number>>('pollMarked', sa, POLLIN, 2 ** 31, mark);
    await started(mark);
    t.false(await settlesWithin(waiting, 150), 'still waiting: nothing was sent');
    await b.send(sb, 'x');
    t.deepEqual(await waiting, { ok: POLLIN });
  });
});
