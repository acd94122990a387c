/**
 * File descriptors: numbering, dup/dup2/dup3, fcntl, RLIMIT_NOFILE, readlink of /proc/self/fd, fdinfo, and the
 * errno of every failure path, checked against Linux (fs/file.c, fs/fcntl.c, fs/open.c, kernel/sys.c).
 */
import test from 'ava';
import { uapi } from '../src/index.js';
import { spawnSock, withMachine } from './helpers/sim.js';

const {
  AF_UNIX,
  FD_CLOEXEC,
  F_DUPFD,
  F_DUPFD_CLOEXEC,
  F_GETFD,
  F_GETFL,
  F_SETFD,
  F_SETFL,
  MAP_SHARED,
  O_CLOEXEC,
  O_LARGEFILE,
  O_NONBLOCK,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  PROT_READ,
  RLIMIT_NOFILE,
  SEEK_SET,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
} = uapi;

test.serial('fds 0-2 are open at spawn; new fds take the lowest free number', async (t) => {
  await withMachine(t, async (m) => {
    const p = await spawnSock(m, 'numbering');
    t.deepEqual(await p.openFds(), [0, 1, 2]);
    t.is(await p.readlink(0), '/dev/null');
    t.is(await p.ok('open', '/dev/null', O_RDWR), 3);
    t.is(await p.ok('open', '/dev/null', O_RDONLY), 4);
    t.is(await p.ok('open', '/dev/null', O_WRONLY), 5);
    await p.ok('close', 4);
    t.is(await p.ok('open', '/dev/null'), 4, 'the hole is reused');
    await p.ok('close', 0);
    t.is(await p.ok('dup', 5), 0, 'dup also takes the lowest free fd, even below 3');
    t.deepEqual(await p.ok<number[]>('socketpair', AF_UNIX, SOCK_STREAM), [6, 7]);
    await p.ok('close', 3);
    await p.ok('close', 5);
    t.deepEqual(await p.ok<number[]>('socketpair', AF_UNIX, SOCK_STREAM), [3, 5], 'each end at the lowest free');
    t.deepEqual(await p.openFds(), [0, 1, 2, 3, 4, 5, 6, 7]);
    t.is(await p.err('close', 8), 'EBADF');
    t.is(await p.err('close', -1), 'EBADF');
  });
});

test.serial('dup, dup2, dup3: same open file, new fd, and every errno', async (t) => {
  await withMachine(t, async (m) => {
    const p = await spawnSock(m, 'dup');
    const fd = await p.ok('open', '/dev/null', O_RDWR | O_CLOEXEC);
    t.is(fd, 3);
    t.is(await p.ok('fcntl', fd, F_GETFD), FD_CLOEXEC);
    const d = await p.ok('dup', fd);
    t.is(d, 4);
    t.is(await p.ok('fcntl', d, F_GETFD), 0, 'dup clears FD_CLOEXEC (it is per fd)');
    // The open file description is shared: a status flag set through one fd shows through the other.
    await p.ok('fcntl', d, F_SETFL, O_NONBLOCK);
    t.is(await p.ok('fcntl', fd, F_GETFL), O_RDWR | O_LARGEFILE | O_NONBLOCK);

    t.is(await p.ok('dup2', fd, 10), 10);
    t.is(await p.readlink(10), '/dev/null');
    t.is(await p.ok('dup2', fd, fd), fd, 'dup2(fd, fd) returns fd');
    t.is(await p.err('dup2', 9, 9), 'EBADF', 'dup2(fd, fd) on a closed fd');
    t.is(await p.err('dup2', 9, 11), 'EBADF');
    t.is(await p.ok('dup2', d, 10), 10, 'dup2 onto an open fd closes it silently');
    t.is(await p.ok('fcntl', 10, F_GETFD), 0);

    t.is(await p.ok('dup3', fd, 12, O_CLOEXEC), 12);
    t.is(await p.ok('fcntl', 12, F_GETFD), FD_CLOEXEC);
    t.is(await p.err('dup3', fd, 13, O_NONBLOCK), 'EINVAL', 'dup3 accepts only O_CLOEXEC');
    t.is(await p.err('dup3', fd, fd, 0), 'EINVAL', 'dup3(fd, fd) is EINVAL, unlike dup2');
    t.is(await p.err('dup3', 9, 9, 0), 'EINVAL', 'the oldfd == newfd check comes before the fd lookup');
    t.is(await p.err('dup3', 9, 13, 0), 'EBADF');
    t.is(await p.err('dup3', fd, 1024, 0), 'EBADF', 'newfd at RLIMIT_NOFILE');
    t.is(await p.err('dup3', fd, -1, 0), 'EBADF', 'newfd is unsigned: -1 is past the limit');
    t.is(await p.err('dup', 99), 'EBADF');
  });
});

test.serial('fcntl: F_GETFD/F_SETFD per fd, F_GETFL/F_SETFL per open file, F_DUPFD(_CLOEXEC)', async (t) => {
  await withMachine(t, async (m) => {
    const p = await spawnSock(m, 'fcntl');
    const fd = await p.ok('open', '/dev/null', O_WRONLY);
    t.is(await p.ok('fcntl', fd, F_GETFL), O_WRONLY | O_LARGEFILE, 'open() sets O_LARGEFILE on 64-bit');
    t.is(await p.ok('fcntl', 0, F_GETFL), O_RDWR | O_LARGEFILE);
    t.is(await p.ok('fcntl', fd, F_SETFD, FD_CLOEXEC), 0);
    t.is(await p.ok('fcntl', fd, F_GETFD), FD_CLOEXEC);
    t.is(await p.ok('fcntl', fd, F_SETFD, 0), 0);
    t.is(await p.ok('fcntl', fd, F_GETFD), 0);
    t.is(await p.ok('fcntl', fd, F_SETFL, O_NONBLOCK | O_RDWR), 0, 'F_SETFL ignores the access mode');
    t.is(await p.ok('fcntl', fd, F_GETFL), O_WRONLY | O_LARGEFILE | O_NONBLOCK);

    t.is(await p.ok('fcntl', fd, F_DUPFD, 10), 10);
    t.is(await p.ok('fcntl', fd, F_DUPFD, 10), 11, 'lowest free at or above arg');
    t.is(await p.ok('fcntl', fd, F_DUPFD, 0), 4);
    t.is(await p.ok('fcntl', fd, F_DUPFD_CLOEXEC, 5), 5);
    t.is(await p.ok('fcntl', 5, F_GETFD), FD_CLOEXEC);
    t.is(await p.ok('fcntl', 10, F_GETFD), 0);
    t.is(await p.err('fcntl', fd, F_DUPFD, 1024), 'EINVAL', 'arg at the limit');
    t.is(await p.err('fcntl', fd, F_DUPFD, -1), 'EINVAL', 'arg is unsigned');
    t.is(await p.err('fcntl', 99, F_GETFD), 'EBADF');
    t.is(await p.err('fcntl', 99, 12345), 'EBADF', 'the fd is checked before the command');
    t.is(await p.err('fcntl', fd, 12345), 'EINVAL');

    // Sockets are made by the kernel (alloc_file_pseudo), not open(): no O_LARGEFILE; SOCK_* flags land per fd / per file.
    const [s0, s1] = await p.ok<number[]>('socketpair', AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK);
    t.is(await p.ok('fcntl', s0!, F_GETFL), O_RDWR | O_NONBLOCK);
    t.is(await p.ok('fcntl', s1!, F_GETFD), FD_CLOEXEC);
  });
});

test.serial('RLIMIT_NOFILE: setrlimit, EMFILE everywhere an fd is made, and the nofile spawn option', async (t) => {
  await withMachine(t, async (m) => {
    const p = await spawnSock(m, 'rlimit');
    t.deepEqual(await p.ok('getrlimit', RLIMIT_NOFILE), { cur: 1024, max: 4096 });
    t.is(await p.err('setrlimit', RLIMIT_NOFILE, { cur: 10, max: 5 }), 'EINVAL', 'cur > max');
    t.is(await p.err('setrlimit', RLIMIT_NOFILE, { cur: 10, max: 2_000_000 }), 'EPERM', 'max above fs.nr_open');
    t.is(await p.err('setrlimit', RLIMIT_NOFILE, { cur: -1, max: -1 }), 'EPERM', 'RLIM_INFINITY is above nr_open too');
    t.is(await p.ok('setrlimit', RLIMIT_NOFILE, { cur: 6, max: 4096 }), 0);
    t.deepEqual(await p.ok('getrlimit', RLIMIT_NOFILE), { cur: 6, max: 4096 });
    t.is(await p.ok('open', '/dev/null'), 3);
    t.is(await p.ok('open', '/dev/null'), 4);
    // One fd left: socketpair needs two and reserves them before anything else.
    t.is(await p.err('socketpair', AF_UNIX, SOCK_STREAM), 'EMFILE');
    t.is(await p.err('socketpair', 99, SOCK_STREAM), 'EMFILE', 'EMFILE comes before the family check');
    t.is(await p.ok('open', '/dev/null'), 5);
    t.is(await p.err('open', '/dev/null'), 'EMFILE');
    t.is(await p.err('open', '/no/such/file'), 'EMFILE', 'the fd is reserved before the path walk');
    t.is(await p.err('dup', 3), 'EMFILE');
    t.is(await p.err('fcntl', 3, F_DUPFD, 0), 'EMFILE');
    t.is(await p.err('fcntl', 3, F_DUPFD, 6), 'EINVAL', 'F_DUPFD at the limit is EINVAL, not EMFILE');
    t.is(await p.err('dup2', 3, 6), 'EBADF', 'dup2 beyond the limit is EBADF');
    t.is(await p.ok('dup2', 3, 5), 5, 'dup2 onto an open fd needs no new slot');
    // Lowering the limit below open fds is allowed; they stay open.
    t.is(await p.ok('setrlimit', RLIMIT_NOFILE, { cur: 2, max: 4096 }), 0);
    t.deepEqual(await p.openFds(), [0, 1, 2, 3, 4, 5]);
    await p.ok('close', 1);
    t.is(await p.ok('open', '/dev/null'), 1);

    const q = await spawnSock(m, 'nofile', { nofile: 4 });
    t.deepEqual(await q.ok('getrlimit', RLIMIT_NOFILE), { cur: 4, max: 4096 });
    t.is(await q.ok('open', '/dev/null'), 3);
    t.is(await q.err('open', '/dev/null'), 'EMFILE');
  });
});

test.serial('readlink /proc/<pid>/fd/N and fdinfo', async (t) => {
  await withMachine(t, async (m) => {
    const p = await spawnSock(m, 'readlink');
    const [s0, s1] = await p.ok<number[]>('socketpair', AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC);
    const l0 = await p.readlink(s0!);
    const l1 = await p.readlink(s1!);
    t.regex(l0, /^socket:\[\d+\]$/);
    t.regex(l1, /^socket:\[\d+\]$/);
    t.not(l0, l1, 'each end has its own inode');
    t.is(await p.ok<string>('readlink', `/proc/${p.pid}/fd/${s0}`), l0, '/proc/<pid> names the same thing as /proc/self');
    const info = await p.ok<string>('readFile', `/proc/self/fdinfo/${s0}`);
    t.is(info, `pos:\t0\nflags:\t02000002\nmnt_id:\t8\nino:\t${/\d+/.exec(l0)![0]}\nscm_fds: 0\n`);
    t.regex(await p.ok<string>('readFile', '/proc/self/fdinfo/0'), /^pos:\t0\nflags:\t0100002\n/);

    t.is(await p.err('readlink', '/proc/self/fd/99'), 'ENOENT', 'a closed fd has no link (not EBADF)');
    t.is(await p.err('readlink', '/proc/self/fd'), 'EINVAL', 'a directory is not a link');
    t.is(await p.err('readlink', '/proc/self/fdinfo/0'), 'EINVAL', 'a regular file is not a link');
    t.is(await p.err('readlink', '/proc/self/fdinfo/99'), 'ENOENT');
    t.is(await p.err('readlink', '/dev/null'), 'EINVAL', 'a device node is not a link');
    t.is(await p.err('readlink', '/no/such'), 'ENOENT');
    t.is(await p.err('readlink', '/proc/99999/fd/0'), 'ENOENT', 'no such process');

    // Another process can read this one's links (the model runs everything as root).
    const q = await spawnSock(m, 'peeker');
    t.is(await q.ok<string>('readlink', `/proc/${p.pid}/fd/${s1}`), l1);
  });
});

test.serial('errno of the other fd paths: ENOSYS, ESPIPE, ENOTTY, ENODEV, ENOTSOCK, EBADF by access mode', async (t) => {
  await withMachine(t, async (m) => {
    const p = await spawnSock(m, 'errnos');
    t.deepEqual(await p.r('raw', 63), { err: 'ENOSYS' }, 'an unknown syscall number');
    const [s0] = await p.ok<number[]>('socketpair', AF_UNIX, SOCK_STREAM);
    t.is(await p.err('lseek', s0, 0, SEEK_SET), 'ESPIPE', 'sockets do not seek');
    t.is(await p.err('ioctl', s0, 0x1234), 'ENOTTY', 'unknown socket ioctl');
    t.is(await p.err('mmap', null, 4096, PROT_READ, MAP_SHARED, s0), 'ENODEV', 'sock_no_mmap');
    const n = await p.ok('open', '/dev/null', O_RDWR);
    t.is(await p.err('ioctl', n, 0x1234), 'ENOTTY');
    t.is(await p.err('sendmsg', n, { data: 'x' }), 'ENOTSOCK');
    t.is(await p.err('recvmsg', n), 'ENOTSOCK');
    t.is(await p.err('shutdown', n, 0), 'ENOTSOCK');
    t.is(await p.err('sendmsg', 99, { data: 'x' }), 'EBADF', 'EBADF before ENOTSOCK');
    t.is(await p.err('shutdown', 99, 0), 'EBADF');
    const ro = await p.ok('open', '/dev/null', O_RDONLY);
    t.is(await p.err('write', ro, 'x'), 'EBADF', 'write on a read-only fd');
    const wo = await p.ok('open', '/dev/null', O_WRONLY);
    t.is(await p.err('read', wo, 1), 'EBADF', 'read on a write-only fd');
    t.is(await p.err('open', '/dev/nonexistent'), 'ENOENT');
    t.is(await p.err('open', '/sys/kernel/debug/af_unix', O_RDWR), 'EACCES', 'debugfs nodes are read-only');
    t.regex(await p.ok<string>('readFile', '/sys/kernel/debug/af_unix'), /^sockets: 2\n/);
  });
});
