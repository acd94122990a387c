/**
 * The file-descriptor syscalls (fs/open.c, fs/file.c, fs/fcntl.c, fs/ioctl.c, fs/read_write.c, fs/d_path):
 * open, close, dup/dup3, fcntl, ioctl, lseek, read, write, readlink, rlimits, getpid, exit.
 *
 * ABI (see shm/channel.ts): numeric arguments in ARGS, strings and structs in DATA.
 */
import { KernelError } from '../errors.js';
import { E } from '../uapi/errno.js';
import {
  FD_CLOEXEC,
  F_DUPFD,
  F_DUPFD_CLOEXEC,
  F_GETFD,
  F_GETFL,
  F_SETFD,
  F_SETFL,
  NAME_MAX,
  O_APPEND,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECTORY,
  O_EXCL,
  PATH_MAX,
  O_LARGEFILE,
  O_NONBLOCK,
  NR_OPEN,
  RLIMIT_NOFILE,
  SEEK_CUR,
  SEEK_END,
  SEEK_MAX,
  SEEK_SET,
} from '../uapi/posix.js';
import { SYS } from '../shm/channel.js';
import type { SyscallEntry, SyscallRequest } from './entry.js';
import { FMODE_READ, FMODE_WRITE, type File } from './file.js';
import type { Kernel } from './kernel.js';
import { DEBUGFS_ROOT } from './chrdev.js';
import { TASK_SIZE } from './mm.js';
import { UserPtr } from './uaccess.js';
import { Blocked } from './wait.js';

/**
 * The path argument as the kernel copies it in (getname → strncpy_from_user): the bytes up to the first NUL. No NUL
 * within PATH_MAX bytes → ENAMETOOLONG; an empty path → ENOENT.
 */
function getname(req: SyscallRequest): string {
  const input = req.input;
  const nul = input.indexOf(0);
  const bytes = nul < 0 ? input : input.subarray(0, nul);
  if (bytes.length >= PATH_MAX) throw new KernelError(E.ENAMETOOLONG);
  if (bytes.length === 0) throw new KernelError(E.ENOENT);
  return Buffer.from(bytes).toString('utf8');
}

/** Directories where the filesystem's lookup refuses a component longer than NAME_MAX (simple_lookup, ext4). */
function lookupChecksNameMax(dir: string): boolean {
  return dir !== '/sys' && dir !== '/sys/kernel';
}

/** Whether `dir` is a directory of the model's namespace: an ancestor of a device node or of a debugfs file. */
function isDirectory(k: Kernel, dir: string): boolean {
  if (dir === '/') return true;
  const below = `${dir}/`;
  if (k.listPaths(below).length > 0) return true;
  if (DEBUGFS_ROOT.startsWith(below)) return true;
  if (below.startsWith(DEBUGFS_ROOT)) {
    const sub = below.slice(DEBUGFS_ROOT.length);
    for (const key of k.debugfs.keys()) if (key.startsWith(sub)) return true;
  }
  return false;
}

/**
 * The parts of path_openat the model's flat namespace (exact device paths and prefix handlers, kernel.openPath)
 * cannot express: walks `path` component by component, resolving "." and "..", and answers what the walk and
 * do_open would — walking on through a device (a non-directory) or a trailing slash after one → ENOTDIR (EISDIR
 * with O_CREAT: a trailing slash names a directory); a component longer than NAME_MAX where the filesystem checks
 * it → ENAMETOOLONG; O_CREAT|O_EXCL on an existing node → EEXIST; O_DIRECTORY on a device → ENOTDIR.
 * Returns the resolved path for openPath. Existence of what the prefix handlers serve (debugfs files, /proc) is
 * left to them, so EEXIST covers the device nodes.
 */
function walkPath(k: Kernel, path: string, flags: number): string {
  if (!path.startsWith('/')) return path; // no cwd in the model: openPath answers ENOENT
  const parts = path.split('/');
  const trailingSlash = path.length > 1 && path.endsWith('/');
  const isDevice = (p: string): boolean => k.listPaths(p).includes(p);
  let cur: string[] = [];
  for (const c of parts) {
    if (c === '' || c === '.') continue;
    const dir = `/${cur.join('/')}`;
    // procfs resolves its own names (and checks no length): the /proc prefix handler takes the rest as it is.
    if (dir === '/proc') return path;
    if (!isDirectory(k, dir)) throw new KernelError(isDevice(dir) ? E.ENOTDIR : E.ENOENT);
    if (c === '..') {
      cur = cur.slice(0, -1);
      continue;
    }
    if (Buffer.byteLength(c) > NAME_MAX && lookupChecksNameMax(dir)) throw new KernelError(E.ENAMETOOLONG);
    cur.push(c);
  }
  const resolved = `/${cur.join('/')}`;
  if (isDevice(resolved)) {
    if (flags & O_CREAT) {
      if (trailingSlash) throw new KernelError(E.EISDIR);
      if (flags & O_EXCL) throw new KernelError(E.EEXIST);
    }
    if (trailingSlash || flags & O_DIRECTORY) throw new KernelError(E.ENOTDIR);
  }
  return resolved;
}

/** Flags F_SETFL may change (the rest of f_flags is fixed at open). */
const SETFL_MASK = O_APPEND | O_NONBLOCK;

function dupTo(k: Kernel, f: File, t: import('./task.js').Task, minFd: number, cloexec: boolean): number {
  k.fget(f);
  try {
    return k.installFd(t, f, cloexec, minFd);
  } catch (e) {
    k.fput(f);
    throw e;
  }
}

/** generic_file_llseek for files with a size (or none: size 0). Used by files that support seeking. */
export function genericLlseek(f: File, offset: number, whence: number, size: number): number {
  let pos: number;
  switch (whence) {
    case SEEK_SET:
      pos = offset;
      break;
    case SEEK_CUR:
      pos = f.pos + offset;
      break;
    case SEEK_END:
      pos = size + offset;
      break;
    default:
      throw new KernelError(E.EINVAL);
  }
  if (pos < 0) throw new KernelError(E.EINVAL);
  f.pos = pos;
  return pos;
}

export function registerFsSyscalls(entry: SyscallEntry): void {
  entry.register(SYS.nop, () => 0);
  entry.register(SYS.getpid, (_k, req) => req.task.tgid);

  // open(const char *path, int flags, umode_t mode), in do_sys_openat2's order: the flags (build_open_flags),
  // the path (getname), a free fd (EMFILE), then the walk and do_open.
  entry.register(SYS.open, (k, req) => {
    const flags = req.int(0);
    // build_open_flags: O_DIRECTORY|O_CREAT is refused since Linux 6.4 (it used to create regular files).
    if ((flags & (O_DIRECTORY | O_CREAT)) === (O_DIRECTORY | O_CREAT)) throw new KernelError(E.EINVAL);
    const path = getname(req);
    const t = req.task;
    if (t.lowestFreeFd() < 0) throw new KernelError(E.EMFILE);
    const resolved = walkPath(k, path, flags);
    // build_open_flags: force_o_largefile() is true on 64-bit, so every open() file has O_LARGEFILE in f_flags
    // (files made by the kernel itself — sockets, dma-bufs, sync_files — do not).
    const f = k.openPath(t, resolved, flags | O_LARGEFILE);
    // A driver's device: the driver's open answers later and the parked call installs the fd itself.
    if (f instanceof Blocked) return f;
    return k.installFd(t, f, (flags & O_CLOEXEC) !== 0);
  });

  // close(unsigned int fd), dup(unsigned int fildes): a negative int is a huge fd, EBADF like any closed one.
  entry.register(SYS.close, (k, req) => {
    k.closeFd(req.task, req.fd(0));
    return 0;
  });

  entry.register(SYS.dup, (k, req) => dupTo(k, k.fileOf(req.task, req.fd(0)), req.task, 0, false));

  // dup3(oldfd, newfd, flags): the user library builds dup2 on it (dup2(fd, fd) is answered there).
  entry.register(SYS.dup3, (k, req) => {
    // ksys_dup3(unsigned int oldfd, unsigned int newfd, int flags)'s order: flags, then oldfd == newfd (EINVAL
    // even for a closed fd), then newfd against the limit (a negative int is a huge unsigned one), then oldfd.
    const flags = req.int(2);
    const [oldfd, newfd] = [req.fd(0) >>> 0, req.fd(1) >>> 0];
    const t = req.task;
    if (flags & ~O_CLOEXEC) throw new KernelError(E.EINVAL);
    if (oldfd === newfd) throw new KernelError(E.EINVAL);
    if (newfd >= t.nofileCur) throw new KernelError(E.EBADF);
    const f = k.fileOf(t, oldfd);
    k.fget(f);
    k.replaceFd(t, newfd, f, (flags & O_CLOEXEC) !== 0);
    return newfd;
  });

  entry.register(SYS.fcntl, (k, req) => {
    // fcntl(unsigned int fd, unsigned int cmd, unsigned long arg); do_fcntl passes the commands below (int)arg.
    const fd = req.fd(0);
    const cmd = req.uint(1);
    const arg = req.int(2);
    const t = req.task;
    const e = t.getFd(fd);
    if (!e) throw new KernelError(E.EBADF);
    switch (cmd) {
      case F_GETFD:
        return e.cloexec ? FD_CLOEXEC : 0;
      case F_SETFD:
        e.cloexec = (arg & FD_CLOEXEC) !== 0;
        return 0;
      case F_GETFL:
        return e.file.flags;
      case F_SETFL:
        e.file.flags = (e.file.flags & ~SETFL_MASK) | (arg & SETFL_MASK);
        return 0;
      case F_DUPFD:
      case F_DUPFD_CLOEXEC:
        // f_dupfd(unsigned int from): a negative int is a huge unsigned one.
        if (arg >>> 0 >= t.nofileCur) throw new KernelError(E.EINVAL);
        return dupTo(k, e.file, t, arg, cmd === F_DUPFD_CLOEXEC);
      default:
        throw new KernelError(E.EINVAL);
    }
  });

  // ioctl(fd, cmd, arg): ARGS = [fd, cmd, hasBuffer, integerArg]; DATA = the struct bytes, copied back after.
  entry.register(SYS.ioctl, (k, req) => {
    // ioctl(unsigned int fd, unsigned int cmd, unsigned long arg); ARGS[2] is the model's "arg is a buffer" flag.
    const [fd, cmd, hasBuf, intArg] = [req.fd(0), req.uint(1), req.int(2) !== 0, req.ulong(3)];
    const t = req.task;
    t.beginIoctl(cmd);
    const f = k.fileOf(t, fd);
    if (!f.ops.ioctl) throw new KernelError(E.ENOTTY);
    const input = req.input;
    const arg = new UserPtr(hasBuf ? input : null, intArg);
    req.setOutLen(hasBuf ? input.length : 0);
    return f.ops.ioctl(f, cmd, arg, { task: t });
  });

  entry.register(SYS.lseek, (k, req) => {
    // lseek(unsigned int fd, off_t offset, unsigned int whence).
    const f = k.fileOf(req.task, req.fd(0));
    const offset = req.long(1);
    const whence = req.uint(2);
    // ksys_lseek: whence beyond SEEK_MAX is EINVAL before the file's llseek (or no_llseek's ESPIPE) is asked.
    if (whence > SEEK_MAX) throw new KernelError(E.EINVAL);
    if (!f.ops.llseek) throw new KernelError(E.ESPIPE);
    return f.ops.llseek(f, offset, whence);
  });

  // read(fd, count): the bytes come back in DATA (at most its size per call, like a short read).
  entry.register(SYS.read, (k, req) => {
    // read(unsigned int fd, char *buf, size_t count).
    const f = k.fileOf(req.task, req.fd(0));
    const want = req.ulong(1);
    // vfs_read's order: not opened for reading → EBADF, no read op → EINVAL, then the buffer: a count reaching
    // past the user address space (a negative one is a huge size_t) fails access_ok → EFAULT.
    if (!(f.fmode & FMODE_READ)) throw new KernelError(E.EBADF);
    if (!f.ops.read) throw new KernelError(E.EINVAL);
    if (want > TASK_SIZE) throw new KernelError(E.EFAULT);
    const count = Math.min(want, req.data.length);
    const r = f.ops.read(f, count, { task: req.task });
    if (r instanceof Uint8Array) {
      req.out(r);
      return r.length;
    }
    return r;
  });

  entry.register(SYS.write, (k, req) => {
    const f = k.fileOf(req.task, req.fd(0));
    if (!(f.fmode & FMODE_WRITE)) throw new KernelError(E.EBADF);
    if (!f.ops.write) throw new KernelError(E.EINVAL);
    // write(fd, buf, count): the channel carries at most DATA_SIZE bytes of buf; count may claim more.
    const count = req.ulong(1);
    const data = req.input.slice(0, Math.min(count, req.input.length));
    return f.ops.write(f, data, { task: req.task }, Math.max(count, data.length));
  });

  // readlink(path): /proc/<pid|self>/fd/N gives the open file's d_path.
  // Errors as the VFS gives them: a path that exists but is not a symlink (a device, /proc/self/fd, an fdinfo
  // file) → EINVAL; a path that does not exist, including /proc/self/fd/N for a closed N → ENOENT.
  entry.register(SYS.readlink, (k, req) => {
    const path = getname(req);
    if (!path.startsWith('/proc/')) throw new KernelError(k.listPaths(path).includes(path) ? E.EINVAL : E.ENOENT);
    const { task, rest } = k.procTask(req.task, path);
    const fdinfo = /^fdinfo\/(\d+)$/.exec(rest);
    if (rest === 'fd' || rest === 'fdinfo') throw new KernelError(E.EINVAL);
    if (fdinfo) throw new KernelError(task.getFd(Number(fdinfo[1])) ? E.EINVAL : E.ENOENT);
    const m = /^fd\/(\d+)$/.exec(rest);
    if (!m) throw new KernelError(E.ENOENT);
    const e = task.getFd(Number(m[1]));
    if (!e) throw new KernelError(E.ENOENT);
    const f = e.file;
    const target = Buffer.from(f.ops.dname(f), 'utf8');
    req.out(target);
    return target.length;
  });

  entry.register(SYS.getrlimit, (_k, req) => {
    if (req.uint(0) !== RLIMIT_NOFILE) throw new KernelError(E.EINVAL);
    req.res[1] = req.task.nofileMax;
    return req.task.nofileCur;
  });

  entry.register(SYS.setrlimit, (_k, req) => {
    // setrlimit(unsigned int resource, struct rlimit *rlim): rlim_t is u64, so -1 is RLIM_INFINITY (held as 2^64).
    const res = req.uint(0);
    const t = req.task;
    if (res !== RLIMIT_NOFILE) throw new KernelError(E.EINVAL);
    const [c, m] = [req.ulong(1), req.ulong(2)];
    // do_prlimit: cur > max → EINVAL; a NOFILE limit above fs.nr_open → EPERM (even for root). Past these checks
    // both are exact small integers: cur ≤ max ≤ nr_open.
    if (c > m) throw new KernelError(E.EINVAL);
    if (m > NR_OPEN) throw new KernelError(E.EPERM);
    // Raising the hard limit needs CAP_SYS_RESOURCE: the model's processes run as root, so it is allowed.
    t.nofileCur = c;
    t.nofileMax = m;
    return 0;
  });

  entry.register(SYS.exit, (k, req) => {
    // sys_exit_group: do_group_exit((error_code & 0xff) << 8) — only the low 8 bits are the status wait4 reports.
    k.teardown(req.task, req.int(0) & 0xff);
    return 0;
  });
}
