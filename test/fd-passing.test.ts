/**
 * AF_UNIX socketpairs and SCM_RIGHTS fd passing between processes, checked against Linux (net/unix/af_unix.c,
 * net/core/scm.c, net/core/datagram.c, net/socket.c): in-flight references, message/fd ordering, truncation,
 * blocking and wake-ups, EOF/EPIPE/ECONNRESET, poll masks, the send buffer, the collector, and a dma-buf passed
 * between processes and mapped by the receiver with no copy.
 */
import test from 'ava';
import { uapi } from '../src/index.js';
import { delay, settlesWithin, spawnSock, withMachine, type SockProc } from './helpers/sim.js';
import type { Machine } from '../src/index.js';

const {
  AF_INET,
  AF_UNIX,
  FD_CLOEXEC,
  F_GETFD,
  F_GETFL,
  F_SETFL,
  MSG_CMSG_CLOEXEC,
  MSG_CMSG_COMPAT,
  MSG_CTRUNC,
  MSG_DONTWAIT,
  MSG_OOB,
  MSG_PEEK,
  MSG_TRUNC,
  MSG_WAITALL,
  O_NONBLOCK,
  O_RDWR,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLOUT,
  POLLRDHUP,
  RLIMIT_NOFILE,
  SCM_MAX_FD,
  SHUT_RD,
  SHUT_WR,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SOCK_RAW,
  SOCK_SEQPACKET,
  SOCK_STREAM,
} = uapi;

/** Two processes A and B holding the two ends of a fresh socketpair (fd 3 in each). */
async function pair(m: Machine, type: number = SOCK_STREAM): Promise<{ A: SockProc; B: SockProc; a: number; b: number }> {
  const A = await spawnSock(m, 'A');
  const B = await spawnSock(m, 'B');
  const [a, b] = await m.socketpair(A.proc, B.proc, type);
  return { A, B, a, b };
}

async function objects(m: Machine, kind: string): Promise<number> {
  return (await m.stats()).objects[kind] ?? 0;
}

test.serial('a /dev/null fd and socket fds pass between processes: new numbers, same open file', async (t) => {
  await withMachine(t, async (m) => {
    const { A, B, a, b } = await pair(m);
    t.deepEqual([a, b], [3, 3]);
    const n = await A.ok('open', '/dev/null', O_RDWR);
    t.is(n, 4);
    t.is(await A.send(a, 'x', [n, a]), 1, 'a socket may pass itself');
    t.regex(await B.ok<string>('readFile', `/proc/self/fdinfo/${b}`), /scm_fds: 2\n$/, 'two fds queued on b');
    const msg = await B.recv(b);
    t.deepEqual(msg, { n: 1, data: 'x', fds: [4, 5], flags: 0 });
    t.regex(await B.ok<string>('readFile', `/proc/self/fdinfo/${b}`), /scm_fds: 0\n$/);
    t.is(await B.readlink(4), '/dev/null');
    const aLink = await A.readlink(a);
    t.is(await B.readlink(5), aLink, "B's fd 5 is A's socket");
    // One open file description: O_NONBLOCK set through B's fd shows through A's.
    await B.ok('fcntl', 5, F_SETFL, O_NONBLOCK);
    t.is(await A.ok('fcntl', a, F_GETFL), O_RDWR | O_NONBLOCK);
    await B.ok('fcntl', 5, F_SETFL, 0);
    // B now holds both ends: what it sends on A's socket arrives on its own b.
    t.is(await B.send(5, 'loop'), 4);
    t.like(await B.recv(b), { data: 'loop', fds: [] });
    // And the peer can go the other way: B passes b to A over b.
    t.is(await B.send(b, 'peer', [b]), 4);
    const back = await A.recv(a);
    t.deepEqual(back, { n: 4, data: 'peer', fds: [5], flags: 0 });
    t.is(await A.readlink(5), await B.readlink(b));
    // A closes its original fd: the socket lives on through B's fd 5, so B's b sees no EOF.
    await A.ok('close', a);
    t.is(await B.send(b, 'still'), 5);
    t.like(await B.recv(5), { data: 'still' });
  });
});

test.serial('an fd in flight outlives the sender closing it; the receiver gets its lowest free fd', async (t) => {
  await withMachine(t, async (m) => {
    const { A, B, a, b } = await pair(m);
    const n = await A.ok('open', '/dev/null', O_RDWR);
    await A.send(a, 'file', [n]);
    await A.ok('close', n);
    t.is(await A.err('fcntl', n, F_GETFD), 'EBADF');
    t.is(await objects(m, 'scm_rights'), 1, 'one reference in flight, held by the skb');
    await B.ok('close', 1);
    const msg = await B.recv(b);
    t.deepEqual(msg.fds, [1], 'fd 1 was the lowest free');
    t.is(await B.readlink(1), '/dev/null');
    t.is(await B.ok('write', 1, 'works'), 5);
    t.is(await objects(m, 'scm_rights'), 0);
  });
});

test.serial('closing a socket with unreceived fds puts them; the peer gets ECONNRESET, then EOF', async (t) => {
  await withMachine(t, async (m) => {
    const { A, B, a, b } = await pair(m);
    const files0 = await objects(m, 'file');
    const n = await A.ok('open', '/dev/null', O_RDWR);
    await A.send(a, 'never read', [n]);
    await A.ok('close', n);
    t.is(await objects(m, 'file'), files0 + 1, 'the /dev/null file lives in flight');
    await B.ok('close', b);
    t.is(await objects(m, 'file'), files0 - 1, "b's socket and the in-flight file are both gone");
    t.is(await objects(m, 'scm_rights'), 0);
    // b died with data queued: unix_release_sock sets ECONNRESET on a, reported once, then EOF.
    t.is(await A.recvErr(a), 'ECONNRESET');
    t.like(await A.recv(a), { n: 0, data: '' });
    t.is(await A.err('sendmsg', a, { data: 'x' }), 'EPIPE', 'no SIGPIPE in the model: just EPIPE');
  });
});

test.serial('stream: fds arrive with the bytes they were sent with, in order', async (t) => {
  await withMachine(t, async (m) => {
    const { A, B, a, b } = await pair(m);
    const [n1, n2] = await A.proc.call<number[]>('openNulls', 2);
    await A.send(a, 'one');
    await A.send(a, 'two', [n1!]);
    await A.send(a, 'three', [n2!]);
    await A.send(a, 'four');
    // unix_stream_read_generic merges plain bytes in front of an skb with fds and stops right after it.
    t.deepEqual(await B.recv(b), { n: 6, data: 'onetwo', fds: [4], flags: 0 });
    t.deepEqual(await B.recv(b), { n: 5, data: 'three', fds: [5], flags: 0 });
    t.deepEqual(await B.recv(b), { n: 4, data: 'four', fds: [], flags: 0 });
    // A short read of an skb with fds gets the fds with its first part.
    await A.send(a, 'hello', [n1!]);
    t.deepEqual(await B.recv(b, 2), { n: 2, data: 'he', fds: [6], flags: 0 });
    t.deepEqual(await B.recv(b), { n: 3, data: 'llo', fds: [], flags: 0 });
    // MSG_WAITALL reads across skbs until the count is reached (but still stops after fds).
    await A.send(a, 'abc');
    await A.send(a, 'def');
    await A.send(a, 'ghi');
    t.like(await B.recv(b, 7, 16, MSG_WAITALL), { n: 7, data: 'abcdefg' });
    t.like(await B.recv(b), { data: 'hi' });
    // Datagram sockets keep every message, and its fds, apart; an empty datagram can carry fds.
    const [c, d] = await m.socketpair(A.proc, B.proc, SOCK_DGRAM);
    await A.send(c!, 'm1', [n1!]);
    await A.send(c!, 'm2');
    t.is(await A.send(c!, '', [n2!, n1!]), 0);
    t.is(d, 7);
    t.deepEqual(await B.recv(d!), { n: 2, data: 'm1', fds: [8], flags: 0 });
    t.deepEqual(await B.recv(d!), { n: 2, data: 'm2', fds: [], flags: 0 });
    t.deepEqual(await B.recv(d!), { n: 0, data: '', fds: [9, 10], flags: 0 });
    for (const fd of [4, 5, 6, 8, 9, 10]) t.is(await B.readlink(fd), '/dev/null');
  });
});

test.serial('MSG_CTRUNC, MSG_CMSG_CLOEXEC and MSG_PEEK', async (t) => {
  await withMachine(t, async (m) => {
    const { A, B, a, b } = await pair(m);
    const n = await A.ok('open', '/dev/null', O_RDWR);
    await A.send(a, 'three fds', [n, n, n]);
    t.deepEqual(await B.recv(b, 4096, 1), { n: 9, data: 'three fds', fds: [4], flags: MSG_CTRUNC }, 'room for one');
    t.is(await objects(m, 'scm_rights'), 0, 'the two that did not fit were put');
    await A.send(a, 'none', [n]);
    t.deepEqual(await B.recv(b, 4096, 0), { n: 4, data: 'none', fds: [], flags: MSG_CTRUNC }, 'no control buffer at all');
    // MSG_CMSG_CLOEXEC: close-on-exec on the new fds; Linux copies the flag back into msg_flags too.
    await A.send(a, 'cloexec', [n]);
    const ce = await B.recv(b, 4096, 16, MSG_CMSG_CLOEXEC);
    t.deepEqual(ce, { n: 7, data: 'cloexec', fds: [5], flags: MSG_CMSG_CLOEXEC });
    t.is(await B.ok('fcntl', 5, F_GETFD), FD_CLOEXEC);
    // MSG_PEEK duplicates the fds (new references); the real read installs them again.
    await A.send(a, 'peek', [n]);
    const p1 = await B.recv(b, 4096, 16, MSG_PEEK);
    t.deepEqual(p1, { n: 4, data: 'peek', fds: [6], flags: 0 });
    const p2 = await B.recv(b);
    t.deepEqual(p2, { n: 4, data: 'peek', fds: [7], flags: 0 });
    t.is(await B.readlink(6), '/dev/null');
    t.is(await B.readlink(7), '/dev/null');
    t.is(await B.recvErr(b, 4096, 16, MSG_DONTWAIT), 'EAGAIN', 'the peeked message is gone after the read');
  });
});

test.serial('EMFILE at the receiver: the fds that fit are installed, the rest put, MSG_CTRUNC', async (t) => {
  await withMachine(t, async (m) => {
    const { A, B, a, b } = await pair(m);
    await B.ok('setrlimit', RLIMIT_NOFILE, { cur: 6, max: 4096 });
    const n = await A.ok('open', '/dev/null', O_RDWR);
    await A.send(a, 'x', [n, n, n]);
    t.deepEqual(await B.recv(b), { n: 1, data: 'x', fds: [4, 5], flags: MSG_CTRUNC }, 'bytes arrive; fds 4 and 5 fit');
    t.is(await objects(m, 'scm_rights'), 0);
    t.deepEqual(await B.openFds(), [0, 1, 2, 3, 4, 5]);
  });
});

test.serial('SOCK_DGRAM and SOCK_SEQPACKET keep boundaries; MSG_TRUNC; streams do not', async (t) => {
  await withMachine(t, async (m) => {
    const { A, B, a, b } = await pair(m, SOCK_DGRAM);
    await A.send(a, 'abcdef');
    await A.send(a, 'gh');
    t.deepEqual(await B.recv(b, 4), { n: 4, data: 'abcd', fds: [], flags: MSG_TRUNC }, 'the rest of the datagram is lost');
    t.deepEqual(await B.recv(b, 100), { n: 2, data: 'gh', fds: [], flags: 0 });
    await A.send(a, 'xyz');
    t.deepEqual(await B.recv(b, 1, 16, MSG_TRUNC), { n: 3, data: 'x', fds: [], flags: MSG_TRUNC }, 'MSG_TRUNC in flags returns the real length');
    await A.send(a, 'peek');
    t.like(await B.recv(b, 2, 16, MSG_PEEK), { data: 'pe', flags: MSG_TRUNC });
    t.like(await B.recv(b), { data: 'peek', flags: 0 });
    // A datagram must fit the model's 64 KiB syscall channel (Linux allows up to sk_sndbuf - 32).
    t.deepEqual(await A.r('sendPattern', a, 70000), { err: 'EMSGSIZE' });

    const [e, f] = await m.socketpair(A.proc, B.proc, SOCK_SEQPACKET);
    await A.send(e!, '12345');
    await A.send(e!, '67');
    t.deepEqual(await B.recv(f!, 3), { n: 3, data: '123', fds: [], flags: MSG_TRUNC });
    t.deepEqual(await B.recv(f!), { n: 2, data: '67', fds: [], flags: 0 });

    const [s, u] = await m.socketpair(A.proc, B.proc, SOCK_STREAM);
    await A.send(s!, 'abcdef');
    await A.send(s!, 'gh');
    t.deepEqual(await B.recv(u!, 4), { n: 4, data: 'abcd', fds: [], flags: 0 }, 'a stream read never truncates');
    t.deepEqual(await B.recv(u!), { n: 4, data: 'efgh', fds: [], flags: 0 });
    t.deepEqual(await B.r('sockq', u!), { ok: { inq: 0, outq: 0 } });
    await A.send(s!, 'queued');
    t.deepEqual(await B.r('sockq', u!), { ok: { inq: 6, outq: 0 } }, 'SIOCINQ: bytes readable');
    t.is(((await A.r<{ inq: number; outq: number }>('sockq', s!)) as { ok: { outq: number } }).ok.outq > 6, true, 'SIOCOUTQ: truesize in flight');
  });
});

test.serial('a blocked recvmsg is woken by another process sending; its fds land in the receiver', async (t) => {
  await withMachine(t, async (m) => {
    const { A, B, a, b } = await pair(m);
    const pending = B.recv(b);
    t.false(await settlesWithin(pending, 50), 'recv sleeps while the queue is empty');
    const n = await A.ok('open', '/dev/null', O_RDWR);
    await A.send(a, 'wake', [n]);
    t.deepEqual(await pending, { n: 4, data: 'wake', fds: [4], flags: 0 });
    t.is(await B.readlink(4), '/dev/null');
    // MSG_WAITALL sleeps until the whole count is there.
    const all = B.recv(b, 6, 16, MSG_WAITALL);
    await A.send(a, 'abc');
    t.false(await settlesWithin(all, 50), 'three bytes are not enough');
    await A.send(a, 'defg');
    t.like(await all, { n: 6, data: 'abcdef' });
    t.like(await B.recv(b), { data: 'g' });
    // A datagram recv sleeps the same way.
    const [c, d] = await m.socketpair(A.proc, B.proc, SOCK_DGRAM);
    const dg = B.recv(d!);
    await delay(20);
    await A.send(c!, 'dgram');
    t.like(await dg, { data: 'dgram' });
  });
});

test.serial('non-blocking: MSG_DONTWAIT, SOCK_NONBLOCK and O_NONBLOCK give EAGAIN', async (t) => {
  await withMachine(t, async (m) => {
    const { A, B, a, b } = await pair(m);
    t.is(await B.recvErr(b, 4096, 16, MSG_DONTWAIT), 'EAGAIN');
    await B.ok('fcntl', b, F_SETFL, O_NONBLOCK);
    t.is(await B.recvErr(b), 'EAGAIN');
    await A.send(a, 'now');
    t.like(await B.recv(b), { data: 'now' });
    const [c, d] = await m.socketpair(A.proc, B.proc, SOCK_DGRAM | SOCK_NONBLOCK);
    t.is(await B.recvErr(d!), 'EAGAIN');
    t.is(await A.ok('fcntl', c!, F_GETFL), O_RDWR | O_NONBLOCK);
  });
});

test.serial('peer close: stream EOF then EPIPE; seqpacket the same; a datagram peer gets ECONNREFUSED', async (t) => {
  await withMachine(t, async (m) => {
    const { A, B, a, b } = await pair(m);
    await A.send(a, 'last words');
    await A.ok('close', a);
    t.like(await B.recv(b), { data: 'last words' }, 'queued data first');
    t.like(await B.recv(b), { n: 0, data: '' }, 'then EOF');
    t.like(await B.recv(b), { n: 0 }, 'EOF again');
    t.is(await B.err('sendmsg', b, { data: 'x' }), 'EPIPE');
    t.is(await B.r<number>('poll1', b, POLLIN | POLLOUT | POLLRDHUP, 0).then((r) => ('ok' in r ? r.ok : -1)), POLLIN | POLLOUT | POLLHUP | POLLRDHUP);

    const [e, f] = await m.socketpair(A.proc, B.proc, SOCK_SEQPACKET);
    await A.ok('close', e);
    t.like(await B.recv(f!), { n: 0 });
    t.like(await B.recv(f!, 10, 0, MSG_DONTWAIT), { n: 0 }, 'a non-blocking seqpacket read also sees EOF');
    t.is(await B.err('sendmsg', f, { data: 'x' }), 'EPIPE');

    // SOCK_DGRAM: closing tells the peer nothing; its next send finds the peer dead and disconnects.
    const [c, d] = await m.socketpair(A.proc, B.proc, SOCK_DGRAM);
    await A.ok('close', c);
    t.is(await B.recvErr(d!, 10, 0, MSG_DONTWAIT), 'EAGAIN', 'no EOF on a datagram socket');
    t.is(await B.err('sendmsg', d, { data: 'x' }), 'ECONNREFUSED');
    t.is(await B.err('sendmsg', d, { data: 'x' }), 'ENOTCONN');
  });
});

test.serial('shutdown: SHUT_WR gives the peer EOF and us EPIPE; SHUT_RD; EINVAL', async (t) => {
  await withMachine(t, async (m) => {
    const { A, B, a, b } = await pair(m);
    await A.send(a, 'before');
    t.is(await A.ok('shutdown', a, SHUT_WR), 0);
    t.is(await A.err('sendmsg', a, { data: 'x' }), 'EPIPE');
    t.like(await B.recv(b), { data: 'before' });
    t.like(await B.recv(b), { n: 0 }, 'EOF after the queued data');
    t.is(await B.send(b, 'back'), 4, 'the other direction still works');
    t.like(await A.recv(a), { data: 'back' });
    // SHUT_RD on one end is SEND_SHUTDOWN on the other.
    const { A: C, B: D, a: c0, b: d0 } = await pair(m);
    t.is(await D.ok('shutdown', d0, SHUT_RD), 0);
    t.is(await C.err('sendmsg', c0, { data: 'x' }), 'EPIPE');
    t.like(await D.recv(d0, 10, 0, MSG_DONTWAIT), { n: 0 }, 'a read-shut socket reads EOF, not EAGAIN');
    t.is(await D.send(d0, 'still writes'), 12);
    t.is(await A.err('shutdown', a, 3), 'EINVAL');
    t.is(await A.err('shutdown', a, -1), 'EINVAL');
    // A datagram shutdown is local: SHUT_WR stops our sends, the peer still sends to us.
    const [c, d] = await m.socketpair(A.proc, B.proc, SOCK_DGRAM);
    await A.ok('shutdown', c, SHUT_WR);
    t.is(await A.err('sendmsg', c, { data: 'x' }), 'EPIPE');
    t.is(await B.send(d!, 'ok'), 2);
    t.like(await A.recv(c!), { data: 'ok' });
  });
});

test.serial('poll on sockets: masks, and a poll woken by another process', async (t) => {
  await withMachine(t, async (m) => {
    const { A, B, a, b } = await pair(m);
    const revents = async (p: SockProc, fd: number, ev: number, ms = 0): Promise<number> => {
      const r = await p.r<number>('poll1', fd, ev, ms);
      if ('err' in r) throw new Error(r.err);
      return r.ok;
    };
    const ALL = POLLIN | POLLOUT | POLLRDHUP;
    t.is(await revents(B, b, ALL), POLLOUT, 'writable, nothing to read');
    t.is(await revents(B, b, POLLIN, 20), 0, 'a timeout');
    const waiting = revents(B, b, POLLIN, -1);
    t.false(await settlesWithin(waiting, 40));
    await A.send(a, 'ping');
    t.is(await waiting, POLLIN);
    t.is(await revents(B, b, ALL), POLLIN | POLLOUT);
    await B.recv(b);
    await A.ok('shutdown', a, SHUT_WR);
    t.is(await revents(B, b, ALL), POLLIN | POLLOUT | POLLRDHUP, 'RCV_SHUTDOWN reads as readable + RDHUP');
    t.is(await revents(B, b, 0), 0, 'POLLHUP only once fully shut down');
    await A.ok('close', a);
    t.is(await revents(B, b, ALL), POLLIN | POLLOUT | POLLRDHUP | POLLHUP);
    t.is(await revents(B, b, 0), POLLHUP, 'POLLHUP is reported even when not asked for');

    // A full send buffer clears POLLOUT until the reader drains it to a quarter.
    const { A: C, B: D, a: c, b: d } = await pair(m);
    const filled = await C.r<{ total: number }>('fill', c);
    t.true('ok' in filled);
    t.is(await revents(C, c, POLLOUT), 0);
    const out = revents(C, c, POLLOUT, -1);
    t.false(await settlesWithin(out, 40));
    const total = (filled as { ok: { total: number } }).ok.total;
    t.like(await D.r('recvPattern', d, total), { ok: { bad: -1 } });
    t.is(await out, POLLOUT);

    // SOCK_ERR: a stream peer that dies with unread data leaves POLLERR until the error is read.
    const { A: E, B: F, a: e, b: f } = await pair(m);
    await F.send(f, 'unread');
    await E.ok('close', e);
    t.is(await revents(F, f, POLLIN) & POLLERR, POLLERR);
    t.is(await F.recvErr(f), 'ECONNRESET');
    t.is(await revents(F, f, POLLIN) & POLLERR, 0);
  });
});

test.serial('the send buffer is bounded: a sender blocks until the reader drains; big sends are short writes', async (t) => {
  await withMachine(t, async (m) => {
    const { A, B, a, b } = await pair(m);
    t.deepEqual(await A.r('sendPattern', a, 100_000, 0), { ok: 65536 }, 'one call carries at most 64 KiB');
    const filled = await A.r<{ total: number; calls: number; last: number }>('fill', a);
    if (!('ok' in filled)) throw new Error(filled.err);
    const queued = 65536 + filled.ok.total;
    // sk_sndbuf is 212992 (wmem_default); skbs cost their truesize, so a little more than that fits.
    t.true(queued > 212992 && queued < 212992 + 65536, `queued ${queued}`);
    t.deepEqual(await A.r('sendPattern', a, 10, 0, MSG_DONTWAIT), { err: 'EAGAIN' });
    const blocked = A.r<number>('sendPattern', a, 65536, queued);
    t.false(await settlesWithin(blocked, 50), 'a blocking send sleeps on the full buffer');
    const drained = await B.r<{ calls: number; bad: number }>('recvPattern', b, queued + 65536, 0);
    t.deepEqual(await blocked, { ok: 65536 });
    t.like(drained, { ok: { bad: -1 } }, 'every byte arrived, in order');
  });
});

test.serial('sendmsg errors: bad fd in the array sends nothing; SCM_MAX_FD; empty stream send drops fds', async (t) => {
  await withMachine(t, async (m) => {
    const { A, B, a, b } = await pair(m);
    const n = await A.ok('open', '/dev/null', O_RDWR);
    t.is(await A.err('sendmsg', a, { data: 'x', fds: [99] }), 'EBADF');
    t.is(await A.err('sendmsg', a, { data: 'x', fds: [n, -1] }), 'EBADF', 'the reference already taken is dropped');
    t.is(await B.recvErr(b, 10, 16, MSG_DONTWAIT), 'EAGAIN', 'nothing was sent');
    t.is(await A.err('sendmsg', a, { data: 'x', fds: Array(SCM_MAX_FD + 1).fill(n) }), 'EINVAL');
    t.is(await A.ok('sendmsg', a, { data: 'x', fds: Array(SCM_MAX_FD).fill(n) }), 1);
    const big = await B.recv(b, 10, SCM_MAX_FD);
    t.is(big.fds.length, SCM_MAX_FD);
    t.is(big.fds[252], 4 + 252);
    t.is(await A.err('sendmsg', a, { data: 'x' }, MSG_OOB), 'EOPNOTSUPP', 'no MSG_OOB (CONFIG_AF_UNIX_OOB=n)');
    t.is(await A.err('sendmsg', a, { data: 'x' }, MSG_CMSG_COMPAT), 'EINVAL');
    t.is(await A.err('recvmsg', a, 10, 1, MSG_CMSG_COMPAT), 'EINVAL');
    // A stream send of zero bytes queues no skb, so nothing carries the fds: Linux returns 0 and drops them.
    t.is(await A.ok('sendmsg', a, { data: '', fds: [n] }), 0);
    t.is(await B.recvErr(b, 10, 16, MSG_DONTWAIT), 'EAGAIN');
    t.is(await objects(m, 'scm_rights'), 0);
  });
});

test.serial('socketpair() errnos as __sys_socketpair / __sock_create / unix_create', async (t) => {
  await withMachine(t, async (m) => {
    const p = await spawnSock(m, 'sp');
    t.is(await p.err('socketpair', AF_UNIX, SOCK_STREAM | 0x100), 'EINVAL', 'a flag bit other than CLOEXEC/NONBLOCK');
    t.is(await p.err('socketpair', 99, SOCK_STREAM), 'EAFNOSUPPORT', 'family ≥ NPROTO');
    t.is(await p.err('socketpair', 45, SOCK_STREAM), 'EAFNOSUPPORT', 'no such family registered');
    t.is(await p.err('socketpair', AF_INET, SOCK_STREAM), 'EOPNOTSUPP', 'inet has no socketpair');
    t.is(await p.err('socketpair', AF_UNIX, 11), 'EINVAL', 'type ≥ SOCK_MAX');
    t.is(await p.err('socketpair', AF_UNIX, 4), 'ESOCKTNOSUPPORT', 'SOCK_RDM');
    t.is(await p.err('socketpair', AF_UNIX, 4, 7), 'EPROTONOSUPPORT', 'protocol is checked before type');
    t.is(await p.err('socketpair', AF_UNIX, SOCK_STREAM, 2), 'EPROTONOSUPPORT');
    t.deepEqual(await p.ok<number[]>('socketpair', AF_UNIX, SOCK_STREAM, AF_UNIX), [3, 4], 'protocol PF_UNIX is fine');
    const [r0, r1] = await p.ok<number[]>('socketpair', AF_UNIX, SOCK_RAW);
    await p.send(r0!, 'abc');
    t.deepEqual(await p.recv(r1!, 1), { n: 1, data: 'a', fds: [], flags: MSG_TRUNC }, 'SOCK_RAW is SOCK_DGRAM');
    t.deepEqual(await p.openFds(), [0, 1, 2, 3, 4, 5, 6], 'failures install nothing');
    await t.throwsAsync(m.socketpair(p.proc, p.proc, 4), { message: /ESOCKTNOSUPPORT/ });
    t.deepEqual(await m.socketpair(p.proc, p.proc, SOCK_DGRAM), [7, 8], 'both ends in one process');
  });
});

test.serial('read() and write() work on sockets; read() drops passed fds', async (t) => {
  await withMachine(t, async (m) => {
    const { A, B, a, b } = await pair(m);
    t.is(await A.ok('write', a, 'hi there'), 8);
    t.deepEqual([...(await B.ok<Uint8Array>('read', b, 2))], [...Buffer.from('hi')]);
    t.deepEqual(Buffer.from(await B.ok<Uint8Array>('read', b, 100)).toString(), ' there');
    const n = await A.ok('open', '/dev/null', O_RDWR);
    await A.send(a, 'f', [n]);
    t.deepEqual(Buffer.from(await B.ok<Uint8Array>('read', b, 10)).toString(), 'f');
    t.is(await objects(m, 'scm_rights'), 0, 'no control buffer: the fd was put');
    t.deepEqual(await B.openFds(), [0, 1, 2, 3]);
  });
});

test.serial('the collector frees sockets kept alive only by their own in-flight references', async (t) => {
  await withMachine(t, async (m) => {
    const p = await spawnSock(m, 'gc');
    // A socket in flight in its own receive queue: s0 sends s1's fd, which lands on s1.
    const [s0, s1] = await p.ok<number[]>('socketpair', AF_UNIX, SOCK_STREAM);
    await p.send(s0!, 'self', [s1!]);
    await p.ok('close', s0);
    await p.ok('close', s1);
    t.is(await objects(m, 'scm_rights'), 1, 'unreachable but still referenced');
    t.regex(await m.debugfs.read('af_unix'), /^sockets: 1\ninflight: 1\n/);
    // Two sockets each in flight in the other's queue.
    const [p0, q0] = await p.ok<number[]>('socketpair', AF_UNIX, SOCK_STREAM);
    const [r0, s2] = await p.ok<number[]>('socketpair', AF_UNIX, SOCK_STREAM);
    await p.send(p0!, 'q holds s', [s2!]);
    await p.send(r0!, 's holds q', [q0!]);
    for (const fd of [p0, q0, r0, s2]) await p.ok('close', fd);
    // Releasing p0 ran the collector: the self-cycle went then. q0 and s2 were still open at that point.
    t.regex(await m.debugfs.read('af_unix'), /gc_collected: 1\n/);
    t.is(await objects(m, 'scm_rights'), 2);
    // Something reachable stays: x is in flight to y, whose fd is open.
    const [x, y] = await p.ok<number[]>('socketpair', AF_UNIX, SOCK_STREAM);
    const [z0, z1] = await p.ok<number[]>('socketpair', AF_UNIX, SOCK_STREAM);
    await p.send(x!, 'keep', [z0!]);
    await p.ok('close', z0);
    t.is(await objects(m, 'scm_rights'), 3);
    // As on Linux, the collector runs when a unix socket is released while anything is in flight.
    const [t0, t1] = await p.ok<number[]>('socketpair', AF_UNIX, SOCK_STREAM);
    await p.ok('close', t0);
    await p.ok('close', t1);
    t.is(await objects(m, 'scm_rights'), 1, 'both cycles collected, the reachable one kept');
    t.regex(await m.debugfs.read('af_unix'), /gc_collected: 3\n/);
    const kept = await p.recv(y!);
    t.is(kept.fds.length, 1);
    await p.send(kept.fds[0]!, 'alive');
    t.like(await p.recv(z1!), { data: 'alive' });
    t.is(await objects(m, 'scm_rights'), 0);
    // A cycle left by a process that exits is collected with its teardown.
    const q = await spawnSock(m, 'gc-exit');
    const [u0, u1] = await q.ok<number[]>('socketpair', AF_UNIX, SOCK_DGRAM);
    await q.send(u0!, 'self', [u1!, u0!]);
    await q.ok('close', u0);
    await q.ok('close', u1);
    t.is(await objects(m, 'scm_rights'), 2);
    await t.throwsAsync(q.ok('exit', 0), { message: /exited with status 0/ });
    await q.proc.exited;
    t.is(await objects(m, 'scm_rights'), 0);
    t.is(await objects(m, 'unix_sock'), 4, "only p's open sockets remain: x, y, z1 and the received z0");
  });
});

test.serial('a dma-buf passed over a socketpair: the receiver maps the same pages, no copy', async (t) => {
  await withMachine(t, async (m) => {
    const { A, B, a, b } = await pair(m);
    const len = 3 * 4096 + 100;
    const buf = await A.r<number>('heapBuffer', len, 7);
    if (!('ok' in buf)) throw new Error(`heap allocation failed: ${buf.err}`);
    const fd = buf.ok;
    const link = await A.readlink(fd);
    t.regex(link, /^\/dmabuf:/);
    const ino = /ino:\t(\d+)/.exec(await A.ok<string>('readFile', `/proc/self/fdinfo/${fd}`))![1];
    await A.send(a, 'frame', [fd]);
    await A.ok('close', fd);
    t.is(await objects(m, 'dma_buf'), 1, 'alive: in flight and mapped by the sender');
    const msg = await B.recv(b);
    t.like(msg, { data: 'frame', fds: [4] });
    t.is(await B.readlink(4), link);
    t.regex(await B.ok<string>('readFile', '/proc/self/fdinfo/4'), new RegExp(`ino:\\t${ino}\n`), 'the same buffer');
    t.deepEqual(await B.r('mapFd', 4, len), { ok: len });
    t.deepEqual(await B.r('checkMapped', 4, 7), { ok: -1 }, "the receiver sees the sender's bytes");
    // Plain stores, no syscall in between: only shared pages can carry them, both ways.
    await B.proc.call('poke', 4, 10, [0xde, 0xad]);
    t.deepEqual(await A.proc.call('peek', fd, 10, 2), [0xde, 0xad], "the sender sees the receiver's write");
    await A.proc.call('poke', fd, len - 1, [0x5a]);
    t.deepEqual(await B.proc.call('peek', 4, len - 1, 1), [0x5a]);
    await A.r('unmapFd', fd);
    await B.r('unmapFd', 4);
    await B.ok('close', 4);
    t.is(await objects(m, 'dma_buf'), 0, 'the last reference released the buffer');
  });
});
