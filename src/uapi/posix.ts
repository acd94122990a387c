/** POSIX/Linux x86-64 constants the model's syscalls take: open flags, fcntl, seek, mmap, poll, sockets, limits. */

export const PAGE_SIZE = 4096;
export const PAGE_SHIFT = 12;
export const PAGE_ALIGN = (len: number): number => Math.ceil(len / PAGE_SIZE) * PAGE_SIZE;

// open(2) flags (octal as in asm-generic/fcntl.h)
export const O_RDONLY = 0;
export const O_WRONLY = 0o1;
export const O_RDWR = 0o2;
export const O_ACCMODE = 0o3;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_NOCTTY = 0o400;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_NONBLOCK = 0o4000;
export const O_LARGEFILE = 0o100000;
export const O_DIRECTORY = 0o200000;
export const O_CLOEXEC = 0o2000000;

// fcntl(2)
export const F_DUPFD = 0;
export const F_GETFD = 1;
export const F_SETFD = 2;
export const F_GETFL = 3;
export const F_SETFL = 4;
export const F_DUPFD_CLOEXEC = 1030;
export const FD_CLOEXEC = 1;

// lseek(2)
export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;
export const SEEK_MAX = SEEK_HOLE;

// mmap(2)
export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_SHARED_VALIDATE = 0x03;
export const MAP_TYPE = 0x0f;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_GROWSDOWN = 0x0100;
export const MAP_DENYWRITE = 0x0800;
export const MAP_EXECUTABLE = 0x1000;
export const MAP_LOCKED = 0x2000;
export const MAP_NORESERVE = 0x4000;
export const MAP_POPULATE = 0x8000;
export const MAP_NONBLOCK = 0x10000;
export const MAP_STACK = 0x20000;
export const MAP_HUGETLB = 0x40000;
export const MAP_SYNC = 0x80000;
export const MAP_FIXED_NOREPLACE = 0x100000;
export const MAP_UNINITIALIZED = 0x4000000;

// poll(2)
export const POLLIN = 0x001;
export const POLLPRI = 0x002;
export const POLLOUT = 0x004;
export const POLLERR = 0x008;
export const POLLHUP = 0x010;
export const POLLNVAL = 0x020;
export const POLLRDNORM = 0x040;
export const POLLWRNORM = 0x100;
export const POLLWRBAND = 0x200;
export const POLLRDHUP = 0x2000;

// sockets
export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
/** NPROTO (AF_MAX): families at or above it are EAFNOSUPPORT before any lookup. */
export const NPROTO = 46;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;
export const SOCK_RDM = 4;
export const SOCK_SEQPACKET = 5;
/** SOCK_MAX = SOCK_PACKET + 1: types at or above it are EINVAL in __sock_create. */
export const SOCK_MAX = 11;
/** The type bits of socket()'s type argument; the rest are SOCK_CLOEXEC / SOCK_NONBLOCK. */
export const SOCK_TYPE_MASK = 0xf;
export const SOCK_NONBLOCK = O_NONBLOCK;
export const SOCK_CLOEXEC = O_CLOEXEC;
export const SOL_SOCKET = 1;
export const SCM_RIGHTS = 1;
export const MSG_OOB = 0x1;
export const MSG_PEEK = 0x2;
export const MSG_CTRUNC = 0x8;
export const MSG_TRUNC = 0x20;
export const MSG_DONTWAIT = 0x40;
export const MSG_EOR = 0x80;
export const MSG_WAITALL = 0x100;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;
/** Set only by the 32-bit compat entry points; from a native sendmsg/recvmsg it is EINVAL. */
export const MSG_CMSG_COMPAT = 0x80000000;
export const SHUT_RD = 0;
export const SHUT_WR = 1;
export const SHUT_RDWR = 2;
/** SCM_MAX_FD (include/net/scm.h): most fds one SCM_RIGHTS message may carry. */
export const SCM_MAX_FD = 253;
/** SIOCINQ (= FIONREAD) and SIOCOUTQ (= TIOCOUTQ): bytes queued to read / sent but not yet consumed. */
export const SIOCINQ = 0x541b;
export const SIOCOUTQ = 0x5411;

// limits
export const RLIMIT_NOFILE = 7;
export const DEFAULT_NOFILE = 1024;
/** fs.nr_open default: the highest RLIMIT_NOFILE setrlimit accepts (above: EPERM). */
export const NR_OPEN = 1048576;

// clone(2) flags (include/uapi/linux/sched.h) and wait options (include/uapi/linux/wait.h)
export const CLONE_VM = 0x00000100;
export const CLONE_FS = 0x00000200;
export const CLONE_FILES = 0x00000400;
export const CLONE_SIGHAND = 0x00000800;
export const CLONE_THREAD = 0x00010000;
/** The flags glibc's pthread_create passes that the model gives meaning to: share mm, fd table, thread group. */
export const CLONE_PTHREAD = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD;
export const WNOHANG = 0x00000001;
/** linux/limits.h: a path's bytes including its NUL, and one component's bytes. */
export const PATH_MAX = 4096;
export const NAME_MAX = 255;
