/**
 * AF_UNIX sockets (net/unix/af_unix.c, net/core/scm.c, net/socket.c): connected pairs of SOCK_STREAM, SOCK_DGRAM
 * and SOCK_SEQPACKET sockets, sendmsg/recvmsg with SCM_RIGHTS fd passing, shutdown, poll, and the garbage
 * collector that frees sockets kept alive only by their own in-flight references.
 *
 * Model: a UnixSock is struct sock + struct unix_sock; its File is the struct socket's file. A message is an Skb:
 * bytes plus, for SCM_RIGHTS, the list of File references it carries (struct scm_fp_list). Those are real f_count
 * references, held by the skb from sendmsg until recvmsg installs them or the skb is freed (which puts them).
 * Every in-flight reference is registered with kernel.tracker as 'scm_rights', and every sock as 'unix_sock' until
 * its last sock_put, so a leak report names them.
 *
 * Threading: broker thread only, one syscall at a time, so the C code's socket locks (unix_state_lock, the
 * receive-queue lock, iolock) have nothing to protect. A call that must block returns `Blocked` and sleeps on the
 * socket's wait queue (sk_sleep), which is woken exactly where Linux wakes it: data ready (the peer queued to us),
 * state change (a shutdown, the peer's release) and write space (our sent skbs were freed and we became writable).
 *
 * Not modelled: bind/connect/listen/accept (socketpair is the only constructor), SCM_CREDENTIALS/SO_PASSCRED,
 * MSG_OOB (EOPNOTSUPP, as with CONFIG_AF_UNIX_OOB=n), SO_PEEK_OFF, SO_SNDTIMEO/SO_RCVTIMEO, setsockopt, the
 * per-user in-flight limit (ETOOMANYREFS: the model's processes are root, who is exempt) and signals: there is no
 * SIGPIPE, so a send on a shut-down socket returns EPIPE with or without MSG_NOSIGNAL.
 */
import { ModuleState } from './module-state.js';
import { BUG, warn } from '../bug.js';
import { KernelError } from '../errors.js';
import { E } from '../uapi/errno.js';
import {
  AF_INET,
  AF_INET6,
  AF_UNIX,
  MSG_CMSG_CLOEXEC,
  MSG_CMSG_COMPAT,
  MSG_CTRUNC,
  MSG_DONTWAIT,
  MSG_EOR,
  MSG_OOB,
  MSG_PEEK,
  MSG_TRUNC,
  MSG_WAITALL,
  NPROTO,
  O_NONBLOCK,
  O_RDWR,
  PAGE_ALIGN,
  PAGE_SIZE,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLOUT,
  POLLRDHUP,
  POLLRDNORM,
  POLLWRBAND,
  POLLWRNORM,
  SCM_MAX_FD,
  SHUT_RD,
  SHUT_RDWR,
  SIOCINQ,
  SIOCOUTQ,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_MAX,
  SOCK_NONBLOCK,
  SOCK_RAW,
  SOCK_SEQPACKET,
  SOCK_STREAM,
  SOCK_TYPE_MASK,
} from '../uapi/posix.js';
import { DATA_SIZE, OUT_LEN, SYS } from '../shm/channel.js';
import type { SyscallEntry, SyscallRequest } from './entry.js';
import { FMODE_READ, FMODE_WRITE, type File, type FileOperations, type PollTable } from './file.js';
import type { Kernel } from './kernel.js';
import type { Task } from './task.js';
import type { UserPtr } from './uaccess.js';
import { Blocked, WaitQueue, type SyscallOutcome } from './wait.js';

// ---- sizes (include/linux/skbuff.h, include/net/sock.h, x86-64, 4 KiB pages) --------------------------------------

/** sk_shutdown bits. */
const RCV_SHUTDOWN = 1;
const SEND_SHUTDOWN = 2;
const SHUTDOWN_MASK = 3;
/** sysctl net.core.wmem_default: every new socket's sk_sndbuf. */
export const SK_SNDBUF_DEFAULT = 212992;
/** SKB_DATA_ALIGN(sizeof(struct sk_buff)) and SKB_DATA_ALIGN(sizeof(struct skb_shared_info)). */
const SKB_STRUCT = 256;
const SKB_SHINFO = 320;
/** SKB_MAX_HEAD(0): the linear part a one-page head can hold. */
const SKB_MAX_HEAD0 = PAGE_SIZE - SKB_SHINFO;
/** UNIX_SKB_FRAGS_SZ: a stream skb's paged part is at most 32 KiB. */
const UNIX_SKB_FRAGS_SZ = 32768;
/** SKB_MAX_ALLOC: the linear part of a datagram skb before it goes paged. */
const SKB_MAX_ALLOC = (PAGE_SIZE << 2) - SKB_SHINFO;
const MAX_SKB_FRAGS = 17;

/** kmalloc_size_roundup for SLUB's kmalloc caches (8…8192 in powers of two plus 96 and 192; beyond: page order). */
function kmallocSize(n: number): number {
  if (n <= 8) return 8;
  if (n > 64 && n <= 96) return 96;
  if (n > 128 && n <= 192) return 192;
  if (n > 8192) return PAGE_SIZE << Math.ceil(Math.log2(Math.ceil(n / PAGE_SIZE)));
  return 1 << Math.ceil(Math.log2(n));
}

/**
 * skb->truesize of an skb with `head` linear bytes and `paged` bytes in page frags: what sock_wfree gives back to
 * the sender's sk_wmem_alloc. An approximation of Linux's accounting (head from kmalloc, frags in whole pages) that
 * keeps its shape: small messages cost ~768 bytes, a full 36.5 KiB stream skb costs 37 120.
 */
function truesize(head: number, paged: number): number {
  return SKB_STRUCT + kmallocSize(Math.ceil(head / 64) * 64 + SKB_SHINFO) + PAGE_ALIGN(paged);
}

/** The linear/paged split unix_stream_sendmsg uses for a `size`-byte skb. */
function streamTruesize(size: number): number {
  let paged = Math.max(0, size - SKB_MAX_HEAD0);
  paged = Math.min(size, PAGE_ALIGN(paged));
  return truesize(size - paged, paged);
}

/** The split unix_dgram_sendmsg uses for a `len`-byte datagram. */
function dgramTruesize(len: number): number {
  const paged = len > SKB_MAX_ALLOC ? PAGE_ALIGN(Math.min(len - SKB_MAX_ALLOC, MAX_SKB_FRAGS * PAGE_SIZE)) : 0;
  return truesize(len - paged, paged);
}

// ---- objects ----------------------------------------------------------------------------------------------------

/** struct sk_buff on a unix receive queue: bytes, how many are consumed (stream), and the passed files. */
class Skb {
  /** UNIXCB(skb).consumed: stream bytes already read. */
  consumed = 0;
  /** Tracker ids of the in-flight references in `fp` (same order). */
  trackIds: number[] = [];
  constructor(
    readonly data: Uint8Array,
    /** The sending socket: owns the skb's truesize in its sk_wmem_alloc and a sock reference. */
    readonly sender: UnixSock,
    readonly truesize: number,
    /** UNIXCB(skb).fp: one f_count reference per entry, or null. */
    public fp: File[] | null,
  ) {}

  get len(): number {
    return this.data.length;
  }
  /** unix_skb_len: what is left to read. */
  get unread(): number {
    return this.data.length - this.consumed;
  }
}

/** struct sock + struct unix_sock, as far as socketpair sockets need them. */
export class UnixSock {
  /** unix_peer(sk): kept (with its sock reference) after the peer is released, as Linux does. */
  peer: UnixSock | null = null;
  /** sk_state: a socketpair socket is ESTABLISHED until it is released or (SOCK_DGRAM) disconnected. */
  state: 'established' | 'close' = 'established';
  /** sk_shutdown: RCV_SHUTDOWN | SEND_SHUTDOWN. */
  shutdown = 0;
  /** sk_err (positive errno, 0 = none); read-and-cleared by sockError(). */
  err = 0;
  /** SOCK_DEAD: released (its file is gone). */
  dead = false;
  /** sk_receive_queue. */
  readonly queue: Skb[] = [];
  /** sk_wmem_alloc (without the +1 bias): truesize of our skbs not yet freed. */
  wmem = 0;
  readonly sndbuf = SK_SNDBUF_DEFAULT;
  /** sk_sleep(sk): every waiter of this socket (recv, blocked send, poll). */
  readonly wq = new WaitQueue();
  /** sk_refcnt: the file, the peer's unix_peer pointer, and each skb we sent. */
  refcnt = 1;
  /** scm_stat.nr_fds: fds queued on this socket's receive queue (fdinfo "scm_fds"). */
  nrFds = 0;
  /** GC: how many references to this socket's file are held by in-flight skbs. */
  inflight = 0;
  /** The socket's file while it is open (cleared at release). */
  file: File | null = null;
  trackId = 0;

  constructor(
    /** sk_type: SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET. */
    readonly type: number,
    readonly ino: number,
  ) {}

  get typeName(): string {
    return this.type === SOCK_STREAM ? 'STREAM' : this.type === SOCK_DGRAM ? 'DGRAM' : 'SEQPACKET';
  }
}

/** sock_error: takes and clears sk_err. */
function sockError(sk: UnixSock): number {
  const e = sk.err;
  sk.err = 0;
  return e;
}

/** sendBufferCheck's answer when the send buffer is full and the sender may sleep. */
const SEND_WAIT = -1;

/**
 * sock_alloc_send_pskb's checks before an skb is allocated, in its order: a pending socket error (consumed), then
 * SEND_SHUTDOWN → EPIPE, then a full send buffer (sk_wmem_alloc ≥ sk_sndbuf) → EAGAIN when `nonblock`. Returns
 * the errno to fail with, 0 when there is room, or SEND_WAIT when the sender must sleep until the buffer drains.
 */
function sendBufferCheck(sk: UnixSock, nonblock: boolean): number {
  const err = sockError(sk);
  if (err) return err;
  if (sk.shutdown & SEND_SHUTDOWN) return E.EPIPE;
  if (sk.wmem >= sk.sndbuf) return nonblock ? E.EAGAIN : SEND_WAIT;
  return 0;
}

/** unix_writable: a quarter of the send buffer or less in flight. */
function writable(sk: UnixSock): boolean {
  return sk.wmem << 2 <= sk.sndbuf;
}

/** What a recvmsg hands back before the fds are installed (scm_recv). */
interface RecvResult {
  readonly chunks: Uint8Array[];
  readonly copied: number;
  /** The syscall's return value (copied, or the datagram's full length with MSG_TRUNC in flags). */
  readonly ret: number;
  /** Files to install: references the caller now owns. */
  readonly scm: File[] | null;
  readonly msgFlags: number;
}

/** Writes a recv's result to the caller and returns the syscall's value (recvmsg and read() differ here). */
type Deliver = (r: RecvResult) => number;

/**
 * The af_unix subsystem: every live socket (for the collector), the in-flight totals, the file operations, and the
 * socket syscalls. One instance per kernel (afUnixOf).
 */
export class AfUnix {
  /** Open sockets (released ones leave; the collector scans these). */
  private readonly socks = new Set<UnixSock>();
  /** unix_tot_inflight: socket references in flight, machine-wide. */
  totInflight = 0;
  private gcRunning = false;
  /** Collector statistics (debugfs af_unix). */
  gcRuns = 0;
  gcCollected = 0;
  readonly ops: FileOperations;

  constructor(readonly k: Kernel) {
    const self = this;
    this.ops = {
      kind: 'socket',
      dname: (f) => `socket:[${f.ino}]`,
      poll: (f, pt) => self.poll(self.sockOfFile(f), pt),
      read: (f, count, ctx) => self.fileRead(f, count, ctx.task),
      write: (f, data, ctx, len) => self.fileWrite(f, data, len, ctx.task),
      ioctl: (f, cmd, arg) => self.ioctl(self.sockOfFile(f), cmd, arg),
      // unix_show_fdinfo: the fds queued on this socket.
      showFdinfo: (f) => `scm_fds: ${self.sockOfFile(f).nrFds}\n`,
      release: (f) => self.releaseSock(self.sockOfFile(f)),
    };
  }

  /** The socket behind a file, or null when the file is not an AF_UNIX socket. */
  sockOf(f: File): UnixSock | null {
    return f.ops === this.ops ? (f.privateData as UnixSock) : null;
  }
  private sockOfFile(f: File): UnixSock {
    return f.privateData as UnixSock;
  }

  /** sockfd_lookup_light: EBADF for no such fd, ENOTSOCK for a file that is not a socket. */
  sockfdLookup(t: Task, fd: number): { file: File; sk: UnixSock } {
    const file = this.k.fileOf(t, fd);
    const sk = this.sockOf(file);
    if (!sk) throw new KernelError(E.ENOTSOCK);
    return { file, sk };
  }

  // ---- creation and release -----------------------------------------------------------------------------------

  /**
   * sock_create + unix_create + unix_socketpair + sock_alloc_file, for the checks after the fds are reserved.
   * `type` is the bare type (no SOCK_* flags). Returns two connected socket files, one reference each.
   * Errors in __sock_create/unix_create's order: family out of range → EAFNOSUPPORT; type out of range → EINVAL;
   * family not registered → EAFNOSUPPORT (AF_INET/AF_INET6 exist on Linux and fail later, in sock_no_socketpair,
   * with EOPNOTSUPP); protocol not 0 or PF_UNIX → EPROTONOSUPPORT; type not STREAM/DGRAM/RAW/SEQPACKET →
   * ESOCKTNOSUPPORT. SOCK_RAW is SOCK_DGRAM, as in unix_create.
   */
  createPair(family: number, type: number, protocol: number, fileFlags: number): [File, File] {
    if (family < 0 || family >= NPROTO) throw new KernelError(E.EAFNOSUPPORT);
    if (type < 0 || type >= SOCK_MAX) throw new KernelError(E.EINVAL);
    if (family === AF_INET || family === AF_INET6) throw new KernelError(E.EOPNOTSUPP, 'sock_no_socketpair');
    if (family !== AF_UNIX) throw new KernelError(E.EAFNOSUPPORT);
    if (protocol !== 0 && protocol !== AF_UNIX) throw new KernelError(E.EPROTONOSUPPORT);
    if (type === SOCK_RAW) type = SOCK_DGRAM;
    if (type !== SOCK_STREAM && type !== SOCK_DGRAM && type !== SOCK_SEQPACKET) {
      throw new KernelError(E.ESOCKTNOSUPPORT);
    }
    const a = this.newSock(type);
    const b = this.newSock(type);
    // unix_socketpair: each holds the other.
    a.peer = b;
    b.peer = a;
    a.refcnt++;
    b.refcnt++;
    return [this.allocSockFile(a, fileFlags), this.allocSockFile(b, fileFlags)];
  }

  private newSock(type: number): UnixSock {
    const k = this.k;
    const sk = new UnixSock(type, k.getNextIno());
    sk.trackId = k.tracker.add(
      'unix_sock',
      k.origin(),
      () => `unix ${sk.typeName} sock ino ${sk.ino} (refcnt ${sk.refcnt}, ${sk.queue.length} queued, ${sk.dead ? 'dead' : 'open'})`,
    );
    return sk;
  }

  /** sock_alloc_file: O_RDWR plus O_NONBLOCK if asked; the inode number is the socket's. */
  private allocSockFile(sk: UnixSock, flags: number): File {
    const f = this.k.allocFile<UnixSock>(this.ops, sk, FMODE_READ | FMODE_WRITE, O_RDWR | (flags & O_NONBLOCK), sk.ino);
    sk.file = f;
    this.socks.add(sk);
    return f;
  }

  /** sock_put: the last one destroys the sock (unix_sock_destructor). */
  private sockPut(sk: UnixSock): void {
    if (sk.refcnt <= 0) BUG(`sock_put of freed unix sock ino ${sk.ino}`);
    if (--sk.refcnt > 0) return;
    if (sk.queue.length || sk.wmem) warn(`unix sock ino ${sk.ino} destroyed with queued data or wmem ${sk.wmem}`);
    this.k.tracker.remove(sk.trackId);
  }

  /**
   * unix_release_sock: the socket's file lost its last reference. Marks it dead and fully shut down; a connected
   * stream/seqpacket peer gets SHUTDOWN_MASK (its reads see EOF, its sends EPIPE) and, when we die with unread
   * data, sk_err = ECONNRESET; a datagram peer is told nothing (its next send finds us dead). Then our receive
   * queue is purged, which puts every file still in flight to us, and the collector runs if anything is in flight.
   */
  private releaseSock(sk: UnixSock): void {
    this.socks.delete(sk);
    sk.file = null;
    sk.dead = true;
    sk.shutdown = SHUTDOWN_MASK;
    sk.state = 'close';
    const skpair = sk.peer;
    sk.peer = null;
    if (skpair) {
      if (sk.type === SOCK_STREAM || sk.type === SOCK_SEQPACKET) {
        skpair.shutdown = SHUTDOWN_MASK;
        if (sk.queue.length) skpair.err = E.ECONNRESET;
        skpair.wq.wake(); // sk_state_change
      }
      this.sockPut(skpair);
    }
    this.purgeQueue(sk);
    this.sockPut(sk);
    if (this.totInflight > 0) this.gc();
  }

  private purgeQueue(sk: UnixSock): void {
    for (const skb of sk.queue.splice(0)) {
      if (skb.fp) sk.nrFds -= skb.fp.length;
      this.freeSkb(skb);
    }
  }

  // ---- skbs and in-flight files -------------------------------------------------------------------------------

  /**
   * sock_alloc_send_pskb + unix_scm_to_skb: a new skb charged to `sk`, carrying `fp` (whose references it takes
   * over). Each passed file becomes an in-flight reference (tracked; a socket's inflight count goes up for the
   * collector).
   */
  private allocSkb(sk: UnixSock, data: Uint8Array, size: number, fp: File[] | null): Skb {
    const skb = new Skb(data, sk, size, fp && fp.length ? fp : null);
    sk.wmem += size;
    sk.refcnt++;
    if (skb.fp) {
      const k = this.k;
      const origin = k.origin();
      for (const f of skb.fp) {
        const s = this.sockOf(f);
        if (s) {
          s.inflight++;
          this.totInflight++;
        }
        const id = k.tracker.add('scm_rights', origin, () => `${f.ops.kind} file ${f.ops.dname(f)} in flight from socket:[${sk.ino}]`);
        skb.trackIds.push(id);
      }
    }
    return skb;
  }

  /** unix_detach_fds: the skb's file references move to the caller (they are no longer in flight). */
  private detachFds(skb: Skb): File[] {
    const fp = skb.fp ?? [];
    for (const f of fp) {
      const s = this.sockOf(f);
      if (s) {
        s.inflight--;
        this.totInflight--;
      }
    }
    for (const id of skb.trackIds) this.k.tracker.remove(id);
    skb.fp = null;
    skb.trackIds = [];
    return fp;
  }

  /**
   * kfree_skb → unix_destruct_scm: puts the files still attached (scm_destroy), then sock_wfree gives the truesize
   * back to the sender and, if that makes it writable, wakes its writers (unix_write_space).
   */
  private freeSkb(skb: Skb): void {
    for (const f of this.detachFds(skb)) this.k.fput(f);
    const sk = skb.sender;
    sk.wmem -= skb.truesize;
    if (writable(sk)) sk.wq.wake();
    this.sockPut(sk);
  }

  /** skb_queue_tail + scm_stat_add + sk_data_ready. */
  private enqueue(other: UnixSock, skb: Skb): void {
    other.queue.push(skb);
    if (skb.fp) other.nrFds += skb.fp.length;
    other.wq.wake();
  }

  /** skb_unlink + scm_stat_del (the fds are still attached). */
  private unlink(sk: UnixSock, skb: Skb): void {
    const i = sk.queue.indexOf(skb);
    if (i >= 0) sk.queue.splice(i, 1);
    if (skb.fp) sk.nrFds -= skb.fp.length;
  }

  /**
   * scm_send / scm_fp_copy: takes a reference on each file named by `fds`. More than SCM_MAX_FD → EINVAL; a
   * negative or closed fd → EBADF and no reference is kept. Socket type does not matter (the SCM_RIGHTS check is on
   * the family, and only AF_UNIX exists here).
   */
  private scmSend(t: Task, fds: readonly number[]): File[] | null {
    if (fds.length === 0) return null;
    if (fds.length > SCM_MAX_FD) throw new KernelError(E.EINVAL);
    const files = fds.map((fd) => this.k.fileOf(t, fd));
    for (const f of files) this.k.fget(f);
    return files;
  }

  private scmDestroy(files: File[] | null): void {
    if (files) for (const f of files.splice(0)) this.k.fput(f);
  }

  // ---- send -----------------------------------------------------------------------------------------------------

  /**
   * sock_sendmsg for a unix socket. `data` is what the caller's buffer holds; `len` is the length it claimed (the
   * channel carries at most 64 KiB, so a stream send of more is a short write and a bigger datagram EMSGSIZE).
   * Takes over `fds` (fd numbers in `t`). Returns bytes sent, or Blocked while the send buffer is full.
   */
  sendmsg(t: Task, file: File, sk: UnixSock, data: Uint8Array, len: number, fds: readonly number[], flags: number): SyscallOutcome {
    if (file.flags & O_NONBLOCK) flags |= MSG_DONTWAIT;
    if (sk.type === SOCK_STREAM) return this.streamSendmsg(t, sk, data, fds, flags);
    if (sk.type === SOCK_SEQPACKET) {
      // unix_seqpacket_sendmsg: a pending error first, then the connection check.
      const err = sockError(sk);
      if (err) throw new KernelError(err);
      if (sk.state !== 'established') throw new KernelError(E.ENOTCONN);
    }
    return this.dgramSendmsg(t, sk, data, len, fds, flags);
  }

  /**
   * unix_stream_sendmsg. The message is cut into skbs of at most 36 544 bytes (SKB_MAX_HEAD(0) + 32 KiB); the fds
   * ride on the first one. Zero bytes send nothing: no skb exists to carry the fds, so they are dropped (put) and 0
   * is returned — Linux does exactly this. SEND_SHUTDOWN → EPIPE before anything is queued; a peer that is dead or
   * shut for reading → EPIPE, or the count already sent. A full send buffer (sk_wmem_alloc ≥ sk_sndbuf) blocks
   * until the reader frees enough that we are writable again, or gives EAGAIN / the partial count when
   * non-blocking.
   */
  private streamSendmsg(t: Task, sk: UnixSock, data: Uint8Array, fds: readonly number[], flags: number): SyscallOutcome {
    let scm = this.scmSend(t, fds);
    try {
      if (flags & MSG_OOB) throw new KernelError(E.EOPNOTSUPP);
      if (!sk.peer) throw new KernelError(E.ENOTCONN);
      if (sk.shutdown & SEND_SHUTDOWN) throw new KernelError(E.EPIPE);
    } catch (e) {
      this.scmDestroy(scm);
      throw e;
    }
    const other = sk.peer;
    const len = data.length;
    const nonblock = (flags & MSG_DONTWAIT) !== 0;
    const maxSkb = Math.min((sk.sndbuf >> 1) - 64, SKB_MAX_HEAD0 + UNIX_SKB_FRAGS_SZ);
    let sent = 0;
    const fail = (err: number): number => {
      this.scmDestroy(scm);
      if (sent) return sent;
      throw new KernelError(err);
    };
    const step = (): number | undefined => {
      while (sent < len) {
        const size = Math.min(len - sent, maxSkb);
        const err = sendBufferCheck(sk, nonblock);
        if (err === SEND_WAIT) return undefined;
        if (err) return fail(err);
        const skb = this.allocSkb(sk, data.subarray(sent, sent + size), streamTruesize(size), scm);
        scm = null; // only the first skb carries the fds
        if (other.dead || other.shutdown & RCV_SHUTDOWN) {
          this.freeSkb(skb);
          return fail(E.EPIPE);
        }
        sent += size;
        this.enqueue(other, skb);
      }
      this.scmDestroy(scm); // len == 0: nothing carried them
      return sent;
    };
    const r = step();
    if (r !== undefined) return r;
    return new Blocked(step, [sk.wq], -1, () => sent, () => this.scmDestroy(scm));
  }

  /**
   * unix_dgram_sendmsg (and the seqpacket path after its checks): one skb per message, boundaries kept. No peer →
   * ENOTCONN; longer than sk_sndbuf − 32 → EMSGSIZE; the send buffer as for streams; then a dead peer gives
   * ECONNREFUSED and disconnects us (SOCK_DGRAM: unix_peer becomes NULL, our queue is purged, later sends
   * ENOTCONN) or EPIPE (SOCK_SEQPACKET); a peer shut for reading → EPIPE. A zero-length datagram is a message
   * (it may carry fds).
   */
  private dgramSendmsg(t: Task, sk: UnixSock, data: Uint8Array, len: number, fds: readonly number[], flags: number): SyscallOutcome {
    let scm = this.scmSend(t, fds);
    let other: UnixSock;
    try {
      if (flags & MSG_OOB) throw new KernelError(E.EOPNOTSUPP);
      if (!sk.peer) throw new KernelError(E.ENOTCONN);
      other = sk.peer;
      if (len > sk.sndbuf - 32) throw new KernelError(E.EMSGSIZE);
      // The model's channel carries at most 64 KiB per call: a datagram it cannot carry whole is too long.
      if (len > data.length) throw new KernelError(E.EMSGSIZE, 'datagram larger than the syscall channel');
    } catch (e) {
      this.scmDestroy(scm);
      throw e;
    }
    const nonblock = (flags & MSG_DONTWAIT) !== 0;
    const fail = (err: number): never => {
      this.scmDestroy(scm);
      throw new KernelError(err);
    };
    const step = (): number | undefined => {
      const err = sendBufferCheck(sk, nonblock);
      if (err === SEND_WAIT) return undefined;
      if (err) return fail(err);
      const skb = this.allocSkb(sk, data, dgramTruesize(len), scm);
      scm = null;
      if (other.dead) {
        this.freeSkb(skb);
        if (sk.type === SOCK_SEQPACKET) throw new KernelError(E.EPIPE);
        if (sk.peer === other) {
          sk.peer = null;
          sk.state = 'close';
          sk.wq.wake();
          this.dgramDisconnected(sk, other);
          this.sockPut(other);
          throw new KernelError(E.ECONNREFUSED);
        }
        // Someone else (the socket may be shared) disconnected it while we slept: unix_dgram_sendmsg restarts,
        // finds no peer and no address, and gives ECONNRESET.
        throw new KernelError(E.ECONNRESET);
      }
      if (other.shutdown & RCV_SHUTDOWN) {
        this.freeSkb(skb);
        throw new KernelError(E.EPIPE);
      }
      this.enqueue(other, skb);
      return len;
    };
    const r = step();
    if (r !== undefined) return r;
    return new Blocked(step, [sk.wq], -1, () => 0, () => this.scmDestroy(scm));
  }

  /** unix_dgram_disconnected: a datagram socket that lost its peer drops what that peer had sent it. */
  private dgramDisconnected(sk: UnixSock, other: UnixSock): void {
    if (!sk.queue.length) return;
    this.purgeQueue(sk);
    if (!other.dead && other.peer === sk) {
      other.err = E.ECONNRESET;
      other.wq.wake();
    }
  }

  // ---- receive --------------------------------------------------------------------------------------------------

  /**
   * sock_recvmsg for a unix socket: up to `size` bytes. `deliver` installs the fds and writes the reply once the
   * message is taken (in the receiver's context, also when that happens in a wake-up). Returns what deliver
   * returns, or Blocked.
   */
  recvmsg(file: File, sk: UnixSock, size: number, flags: number, deliver: Deliver): SyscallOutcome {
    if (file.flags & O_NONBLOCK) flags |= MSG_DONTWAIT;
    if (flags & MSG_OOB) throw new KernelError(E.EOPNOTSUPP);
    if (sk.type === SOCK_STREAM) return this.streamRecvmsg(sk, size, flags, deliver);
    if (sk.type === SOCK_SEQPACKET && sk.state !== 'established') throw new KernelError(E.ENOTCONN);
    return this.dgramRecvmsg(sk, size, flags, deliver);
  }

  /**
   * unix_stream_read_generic. Reads across skbs until `size` bytes are copied, except that it stops right after an
   * skb that carried fds (so fds come back with the bytes they were sent with and never with bytes sent after
   * them: bytes sent before them on the same stream may be merged in front, as on Linux). With no data: the count so
   * far if it reached the target (1, or `size` with MSG_WAITALL); else a pending sk_err (ECONNRESET when the peer
   * died with unread data); else EOF (0) after RCV_SHUTDOWN; else EAGAIN when non-blocking; else sleep. MSG_PEEK
   * copies without consuming and duplicates the fds (new references), stopping at the end of the queue.
   * Waiting with a partial MSG_WAITALL read keeps what was consumed (the retry continues the same read).
   */
  private streamRecvmsg(sk: UnixSock, size: number, flags: number, deliver: Deliver): SyscallOutcome {
    const peek = (flags & MSG_PEEK) !== 0;
    const nonblock = (flags & MSG_DONTWAIT) !== 0;
    // sock_rcvlowat: the whole request with MSG_WAITALL, else one byte (never 0).
    const target = (flags & MSG_WAITALL ? size : Math.min(1, size)) || 1;
    const chunks: Uint8Array[] = [];
    let copied = 0;
    let scm: File[] | null = null;
    const done = (err: number): number => {
      if (copied === 0 && err) {
        this.scmDestroy(scm);
        throw new KernelError(err);
      }
      return deliver({ chunks, copied, ret: copied, scm, msgFlags: 0 });
    };
    const step = (): number | undefined => {
      do {
        // redo:
        let idx = 0;
        let skb: Skb | undefined = sk.queue[0];
        for (;;) {
          // again:
          if (!skb) {
            if (copied >= target) return done(0);
            const err = sockError(sk);
            if (err) return done(err);
            if (sk.shutdown & RCV_SHUTDOWN) return done(0);
            if (nonblock) return done(E.EAGAIN);
            return undefined; // unix_stream_data_wait; the retry redoes from the queue head
          }
          const chunk = Math.min(skb.unread, size);
          chunks.push(skb.data.subarray(skb.consumed, skb.consumed + chunk));
          copied += chunk;
          size -= chunk;
          if (!peek) {
            skb.consumed += chunk;
            if (skb.fp) {
              sk.nrFds -= skb.fp.length;
              scm = this.detachFds(skb);
            }
            if (skb.unread) return done(0);
            this.unlink(sk, skb);
            this.freeSkb(skb);
            if (scm) return done(0);
            break; // while (size)
          }
          if (skb.fp) {
            scm = this.dupFds(skb.fp);
            return done(0);
          }
          skb = sk.queue[++idx];
          if (!skb) return done(0);
        }
      } while (size);
      return done(0);
    };
    const r = step();
    if (r !== undefined) return r;
    return new Blocked(step, [sk.wq], -1, () => 0);
  }

  /**
   * __unix_dgram_recvmsg: one message per call. A pending sk_err comes first (before queued data, unlike
   * streams). A message longer than `size` is cut and MSG_TRUNC set in msg_flags; with MSG_TRUNC in flags the
   * return value is the full length. No message: EAGAIN when non-blocking (0 for SOCK_SEQPACKET after
   * RCV_SHUTDOWN); blocking, 0 after RCV_SHUTDOWN, else sleep — a SOCK_DGRAM whose peer closed is not shut down and
   * sleeps until data or a signal, as on Linux.
   */
  private dgramRecvmsg(sk: UnixSock, size: number, flags: number, deliver: Deliver): SyscallOutcome {
    const peek = (flags & MSG_PEEK) !== 0;
    const nonblock = (flags & MSG_DONTWAIT) !== 0;
    const empty = (): RecvResult => ({ chunks: [], copied: 0, ret: 0, scm: null, msgFlags: 0 });
    const step = (): number | undefined => {
      const err = sockError(sk);
      if (err) throw new KernelError(err);
      const skb = sk.queue[0];
      if (!skb) {
        if (nonblock) {
          if (sk.type === SOCK_SEQPACKET && sk.shutdown & RCV_SHUTDOWN) return deliver(empty());
          throw new KernelError(E.EAGAIN);
        }
        if (sk.shutdown & RCV_SHUTDOWN) return deliver(empty());
        if (sk.type === SOCK_SEQPACKET && sk.state !== 'established') throw new KernelError(E.ENOTCONN);
        return undefined;
      }
      if (!peek) this.unlink(sk, skb);
      let msgFlags = 0;
      let n = size;
      if (n > skb.len) n = skb.len;
      else if (n < skb.len) msgFlags |= MSG_TRUNC;
      const chunks = [skb.data.subarray(0, n)];
      const scm = peek ? (skb.fp ? this.dupFds(skb.fp) : null) : skb.fp ? this.detachFds(skb) : null;
      const ret = flags & MSG_TRUNC ? skb.len : n;
      if (!peek) this.freeSkb(skb);
      return deliver({ chunks, copied: n, ret, scm, msgFlags });
    };
    const r = step();
    if (r !== undefined) return r;
    return new Blocked(step, [sk.wq], -1, () => 0);
  }

  /** unix_peek_fds → scm_fp_dup: new references to the same files. */
  private dupFds(fp: readonly File[]): File[] {
    return fp.map((f) => this.k.fget(f));
  }

  /**
   * scm_detach_fds: installs the passed files at the receiver's lowest free fds, in order, at most `maxFds` of
   * them (the room in its control buffer). It stops at the first fd it cannot get (EMFILE); every file not
   * installed is put, and MSG_CTRUNC is set. Installed fds take over the references.
   */
  detachFdsTo(t: Task, scm: File[] | null, maxFds: number, cloexec: boolean): { fds: number[]; ctrunc: boolean } {
    const fds: number[] = [];
    if (!scm) return { fds, ctrunc: false };
    const k = this.k;
    const fdmax = Math.min(maxFds, scm.length);
    let i = 0;
    for (; i < fdmax; i++) {
      if (t.lowestFreeFd() < 0) break;
      fds.push(k.installFd(t, scm[i]!, cloexec));
    }
    const ctrunc = i < scm.length;
    for (; i < scm.length; i++) k.fput(scm[i]!);
    return { fds, ctrunc };
  }

  // ---- shutdown, poll, ioctl, read/write -------------------------------------------------------------------------

  /**
   * unix_shutdown: SHUT_RD/WR/RDWR set our RCV/SEND_SHUTDOWN bits; a stream/seqpacket peer gets the mirror image
   * (our SHUT_WR is its RCV_SHUTDOWN: it reads EOF after the queued data). Both sides' waiters are woken. `how`
   * outside 0..2 → EINVAL. Never ENOTCONN for a unix socket.
   */
  shutdownSock(sk: UnixSock, how: number): number {
    if (!Number.isInteger(how) || how < SHUT_RD || how > SHUT_RDWR) throw new KernelError(E.EINVAL);
    const mode = how + 1;
    sk.shutdown |= mode;
    const other = sk.peer;
    sk.wq.wake();
    if (other && (sk.type === SOCK_STREAM || sk.type === SOCK_SEQPACKET)) {
      let peerMode = 0;
      if (mode & RCV_SHUTDOWN) peerMode |= SEND_SHUTDOWN;
      if (mode & SEND_SHUTDOWN) peerMode |= RCV_SHUTDOWN;
      other.shutdown |= peerMode;
      other.wq.wake();
    }
    return 0;
  }

  /**
   * unix_poll (SOCK_STREAM) and unix_dgram_poll (SOCK_DGRAM, SOCK_SEQPACKET): ERR for a pending sk_err, HUP when
   * fully shut down, IN|RDNORM|RDHUP after RCV_SHUTDOWN, IN|RDNORM with queued data, HUP for a closed seqpacket /
   * stream, OUT|WRNORM|WRBAND while writable (a quarter of sk_sndbuf or less in flight — also after the peer shut
   * down, so a writer finds out through EPIPE rather than hanging).
   */
  poll(sk: UnixSock, pt: PollTable | null): number {
    pt?.wait(sk.wq);
    let mask = 0;
    if (sk.err) mask |= POLLERR;
    if (sk.shutdown === SHUTDOWN_MASK) mask |= POLLHUP;
    if (sk.shutdown & RCV_SHUTDOWN) mask |= POLLRDHUP | POLLIN | POLLRDNORM;
    if (sk.queue.length) mask |= POLLIN | POLLRDNORM;
    if (sk.state === 'close' && sk.type !== SOCK_DGRAM) mask |= POLLHUP;
    // unix_dgram_poll also withholds POLLOUT from a sender whose peer is connected elsewhere with a full queue;
    // socketpair peers are always connected to each other, so that case does not arise.
    if (writable(sk)) mask |= POLLOUT | POLLWRNORM | POLLWRBAND;
    return mask;
  }

  /** unix_ioctl: SIOCINQ (bytes readable: the whole queue for stream/seqpacket, the next datagram for dgram) and
   * SIOCOUTQ (sk_wmem_alloc). Anything else → ENOTTY (sock_do_ioctl's answer for a non-socket ioctl). */
  private ioctl(sk: UnixSock, cmd: number, arg: UserPtr): number {
    let amount: number;
    if (cmd === SIOCINQ) {
      if (sk.type === SOCK_DGRAM) amount = sk.queue[0]?.len ?? 0;
      else amount = sk.queue.reduce((n, skb) => n + skb.unread, 0);
    } else if (cmd === SIOCOUTQ) amount = sk.wmem;
    else throw new KernelError(E.ENOTTY);
    arg.setI32(0, amount);
    return 0;
  }

  /** sock_read_iter: recvmsg without a control buffer (passed fds are dropped, as msg_control == NULL does). */
  private fileRead(f: File, count: number, t: Task): SyscallOutcome {
    if (count === 0) return 0;
    const sk = this.sockOfFile(f);
    return this.recvmsg(f, sk, count, 0, (r) => {
      this.scmDestroy(r.scm);
      const data = t.channel.data;
      let off = 0;
      for (const c of r.chunks) {
        data.set(c, off);
        off += c.length;
      }
      t.channel.i32[OUT_LEN] = off;
      return r.ret;
    });
  }

  /** sock_write_iter: sendmsg without fds (MSG_EOR for seqpacket, which unix ignores). */
  private fileWrite(f: File, data: Uint8Array, len: number, t: Task): SyscallOutcome {
    const sk = this.sockOfFile(f);
    return this.sendmsg(t, f, sk, data, len, [], sk.type === SOCK_SEQPACKET ? MSG_EOR : 0);
  }

  // ---- garbage collector ------------------------------------------------------------------------------------------

  /**
   * unix_gc: frees sockets that only in-flight references keep alive (a socket sent over itself, or two sockets
   * each in flight in the other's queue, after every fd is closed). Candidates are open sockets whose every file
   * reference is in flight. Each candidate's queue accounts for references to other candidates; a candidate with
   * references left over is reachable from outside, and so is everything in flight in its queue. The rest are
   * garbage: the skbs in their queues that carry garbage sockets are unlinked and freed, which puts those files;
   * the sockets then release normally (and purge whatever else they held).
   *
   * When: as on Linux, after a unix socket is released while anything is in flight; the model also runs it when a
   * process has been torn down (Linux would at the next socket release anywhere, which on a real system is soon),
   * so a cycle never outlives its last process. Not re-entered (releases during collection do not recurse).
   */
  gc(): void {
    if (this.gcRunning || this.totInflight === 0) return;
    this.gcRunning = true;
    try {
      const refs = new Map<UnixSock, number>();
      for (const s of this.socks) if (s.file && s.inflight > 0 && s.file.count === s.inflight) refs.set(s, s.file.count);
      if (refs.size === 0) return;
      this.gcRuns++;
      const children = (s: UnixSock): UnixSock[] => {
        const out: UnixSock[] = [];
        for (const skb of s.queue) for (const f of skb.fp ?? []) {
          const c = this.sockOf(f);
          if (c && refs.has(c)) out.push(c);
        }
        return out;
      };
      for (const s of refs.keys()) for (const c of children(s)) refs.set(c, refs.get(c)! - 1);
      const alive = new Set<UnixSock>();
      const work = [...refs].filter(([, n]) => n > 0).map(([s]) => s);
      while (work.length) {
        const s = work.pop()!;
        if (alive.has(s)) continue;
        alive.add(s);
        for (const c of children(s)) if (!alive.has(c)) work.push(c);
      }
      const garbage = new Set([...refs.keys()].filter((s) => !alive.has(s)));
      const hitlist: Skb[] = [];
      for (const s of garbage) {
        for (const skb of [...s.queue]) {
          if (skb.fp?.some((f) => garbage.has(this.sockOf(f) as UnixSock))) {
            this.unlink(s, skb);
            hitlist.push(skb);
          }
        }
      }
      this.gcCollected += garbage.size;
      for (const skb of hitlist) this.freeSkb(skb);
    } finally {
      this.gcRunning = false;
    }
  }

  /** debugfs af_unix: open sockets and the collector's counters. */
  debugfsText(): string {
    let s = `sockets: ${this.socks.size}\ninflight: ${this.totInflight}\ngc_runs: ${this.gcRuns}\ngc_collected: ${this.gcCollected}\n`;
    for (const sk of [...this.socks].sort((a, b) => a.ino - b.ino)) {
      s += `socket:[${sk.ino}] ${sk.typeName} peer ${sk.peer ? `socket:[${sk.peer.ino}]${sk.peer.dead ? ' (dead)' : ''}` : '-'} `;
      s += `queued ${sk.queue.length} scm_fds ${sk.nrFds} wmem ${sk.wmem} shutdown ${sk.shutdown} inflight ${sk.inflight}\n`;
    }
    return s;
  }
}

// ---- syscalls ------------------------------------------------------------------------------------------------------

const afUnixState = new ModuleState<AfUnix>('af_unix');

export function afUnixOf(k: Kernel): AfUnix {
  return afUnixState.of(k);
}

/**
 * socketpair(domain, type, protocol): ARGS = [domain, type, protocol]; returns 0 with the two fds in RES[1], RES[2].
 * Order as __sys_socketpair: flags other than SOCK_CLOEXEC|SOCK_NONBLOCK in type → EINVAL; two free fds or EMFILE;
 * then the family/type/protocol checks of createPair.
 */
function sysSocketpair(k: Kernel, req: SyscallRequest): number {
  const t = req.task;
  const domain = req.int(0);
  const rawType = req.int(1);
  const protocol = req.int(2);
  const flags = rawType & ~SOCK_TYPE_MASK;
  if (flags & ~(SOCK_CLOEXEC | SOCK_NONBLOCK)) throw new KernelError(E.EINVAL);
  const fd1 = t.lowestFreeFd();
  if (fd1 < 0 || t.lowestFreeFd(fd1 + 1) < 0) throw new KernelError(E.EMFILE);
  const [f1, f2] = afUnixOf(k).createPair(domain, rawType & SOCK_TYPE_MASK, protocol, flags);
  const cloexec = (flags & SOCK_CLOEXEC) !== 0;
  req.res[1] = k.installFd(t, f1, cloexec);
  req.res[2] = k.installFd(t, f2, cloexec);
  return 0;
}

/**
 * sendmsg(int fd, msg, unsigned int flags): ARGS = [fd, flags, nfds, dataLen (the iovec's size_t length)],
 * DATA = [i32 fds × nfds][the first bytes of data]. MSG_CMSG_COMPAT → EINVAL (the native entry point refuses it);
 * then EBADF/ENOTSOCK for fd; then the message: an iov_len that is negative as ssize_t → EINVAL (import_iovec),
 * an fd array the DATA does not hold → EFAULT; then the protocol.
 */
function sysSendmsg(k: Kernel, req: SyscallRequest): SyscallOutcome {
  const flags = req.uint(1);
  if (flags & MSG_CMSG_COMPAT) throw new KernelError(E.EINVAL);
  const u = afUnixOf(k);
  const { file, sk } = u.sockfdLookup(req.task, req.fd(0));
  const [nfds, dataLen] = [req.int(2), req.ulong(3)];
  const input = req.input;
  if (dataLen >= 2 ** 63) throw new KernelError(E.EINVAL);
  if (nfds < 0 || nfds * 4 > input.length) throw new KernelError(E.EFAULT);
  const fds: number[] = [];
  for (let i = 0; i < nfds; i++) fds.push(req.dataView.getInt32(i * 4, true));
  // The skb owns its bytes: copy them out of the channel (a blocked send resumes after the process may reuse it).
  const data = input.slice(nfds * 4, nfds * 4 + Math.min(dataLen, input.length - nfds * 4));
  return u.sendmsg(req.task, file, sk, data, dataLen, fds, flags);
}

/**
 * recvmsg(int fd, msg, unsigned int flags): ARGS = [fd, flags, maxLen (the iovec's size_t length), maxFds (the
 * room in the control buffer, an int)]; reply DATA = [i32 fds × n][bytes], RES[0] = bytes (or the datagram's
 * length with MSG_TRUNC), RES[1] = n, RES[2] = msg_flags. msg_flags carries MSG_TRUNC, MSG_CTRUNC, and
 * MSG_CMSG_CLOEXEC when the caller passed it (Linux copies that flag back too). A maxLen negative as ssize_t or a
 * negative maxFds → EINVAL. The reply must fit the 64 KiB channel, so maxLen is clamped to
 * 64 KiB − 4·min(maxFds, SCM_MAX_FD), as read() clamps its count.
 */
function sysRecvmsg(k: Kernel, req: SyscallRequest): SyscallOutcome {
  const flags = req.uint(1);
  if (flags & MSG_CMSG_COMPAT) throw new KernelError(E.EINVAL);
  const u = afUnixOf(k);
  const t = req.task;
  const { file, sk } = u.sockfdLookup(t, req.fd(0));
  const [maxLen, maxFds] = [req.ulong(2), req.int(3)];
  if (maxLen >= 2 ** 63 || maxFds < 0) throw new KernelError(E.EINVAL);
  const room = Math.min(maxFds, SCM_MAX_FD);
  const size = Math.min(maxLen, DATA_SIZE - room * 4);
  const cloexecFlag = flags & MSG_CMSG_CLOEXEC;
  return u.recvmsg(file, sk, size, flags, (r) => {
    const { fds, ctrunc } = u.detachFdsTo(t, r.scm, room, cloexecFlag !== 0);
    const dv = req.dataView;
    fds.forEach((f, i) => dv.setInt32(i * 4, f, true));
    let off = fds.length * 4;
    for (const c of r.chunks) {
      req.data.set(c, off);
      off += c.length;
    }
    req.setOutLen(off);
    req.res[1] = fds.length;
    req.res[2] = (r.msgFlags | (ctrunc ? MSG_CTRUNC : 0) | cloexecFlag) >>> 0;
    return r.ret;
  });
}

function sysShutdown(k: Kernel, req: SyscallRequest): number {
  const u = afUnixOf(k);
  // shutdown(int fd, int how).
  const { sk } = u.sockfdLookup(req.task, req.fd(0));
  return u.shutdownSock(sk, req.int(1));
}

/**
 * Registers AF_UNIX: the socket syscalls, the collector's exit hook and debugfs af_unix (the model's own view of
 * its sockets and collector; Linux lists sockets in /proc/net/unix, which is not modelled).
 */
export function registerAfUnix(k: Kernel, entry: SyscallEntry): AfUnix {
  const u = afUnixState.init(k, new AfUnix(k));
  entry.register(SYS.socketpair, sysSocketpair);
  entry.register(SYS.sendmsg, sysSendmsg);
  entry.register(SYS.recvmsg, sysRecvmsg);
  entry.register(SYS.shutdown, sysShutdown);
  k.exitHooks.push(() => u.gc());
  k.debugfs.set('af_unix', () => u.debugfsText());
  return u;
}

/** For the control plane: the flags a socketpair `type` carries (SOCK_CLOEXEC/SOCK_NONBLOCK), or EINVAL. */
export function socketpairFlags(type: number): number {
  const flags = type & ~SOCK_TYPE_MASK;
  if (flags & ~(SOCK_CLOEXEC | SOCK_NONBLOCK)) throw new KernelError(E.EINVAL);
  return flags;
}
