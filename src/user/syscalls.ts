/**
 * The C library of a simulated process: synchronous syscalls with POSIX signatures. Each returns what the C call
 * returns on success and throws SyscallError (code/errno/syscall) where C returns -1 and sets errno.
 *
 * Call these only from code running inside a process spawned by Machine.spawn().
 */
import { SyscallError } from '../errors.js';
import { E } from '../uapi/errno.js';
import { F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_SETFD, F_SETFL, O_RDONLY, POLLIN, RLIMIT_NOFILE } from '../uapi/posix.js';
import { DATA_SIZE, SYS } from '../shm/channel.js';
import { ProcessExit, rt } from './runtime.js';
import { DMA_BUF_IOCTL_SYNC, DMA_BUF_SYNC_END, DMA_BUF_SYNC_RW, DMA_BUF_SYNC_VALID_FLAGS_MASK, dma_buf_sync } from '../uapi/dma-buf.js';
import { dmaFenceMightWait, fenceParkedCall } from '../fence/dma-fence.js';
import {
  validateArray,
  validateData,
  validateFd,
  validateFlags,
  validateInt,
  validateObject,
  validatePath,
  validateShort,
  validateString,
  validateTimeout,
  validateWord,
  InvalidArgTypeError,
} from '../validate.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

/** struct dma_buf_sync `bytes` asks for a START the kernel accepts (dma_buf_ioctl's flag checks): it will wait. */
function isSyncStart(bytes: Uint8Array): boolean {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const flags = dv.getBigUint64(dma_buf_sync.flags, true);
  return (flags & ~BigInt(DMA_BUF_SYNC_VALID_FLAGS_MASK)) === 0n && (flags & BigInt(DMA_BUF_SYNC_RW)) !== 0n && (flags & BigInt(DMA_BUF_SYNC_END)) === 0n;
}

/** A C string: the bytes of `s` and a terminating NUL. */
export function cstr(s: string): Uint8Array {
  const b = enc.encode(validateString(s, 's'));
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

export function getpid(): number {
  return rt().pid;
}

export function open(path: string, flags = O_RDONLY, mode = 0): number {
  const p = validatePath(path);
  const fl = validateFlags(flags, 'flags');
  const m = validateFlags(mode, 'mode');
  return rt().call(SYS.open, fl, m, 0, 0, 0, 0, enc.encode(p), 'open');
}

export function close(fd: number): number {
  const f = validateFd(fd);
  const r = rt();
  r.forgetLane(f);
  return r.call(SYS.close, f, 0, 0, 0, 0, 0, undefined, 'close');
}

export function dup(fd: number): number {
  return rt().call(SYS.dup, validateFd(fd), 0, 0, 0, 0, 0, undefined, 'dup');
}

export function dup3(oldfd: number, newfd: number, flags: number): number {
  const o = validateFd(oldfd, 'oldfd');
  const n = validateFd(newfd, 'newfd');
  const r = rt();
  r.forgetLane(n);
  return r.call(SYS.dup3, o, n, validateFlags(flags, 'flags'), 0, 0, 0, undefined, 'dup3');
}

/** dup2: like dup3 without flags, except that dup2(fd, fd) checks fd and returns it. */
export function dup2(oldfd: number, newfd: number): number {
  validateFd(oldfd, 'oldfd');
  validateFd(newfd, 'newfd');
  if (oldfd === newfd) {
    rt().call(SYS.fcntl, oldfd, F_GETFD, 0, 0, 0, 0, undefined, 'dup2');
    return newfd;
  }
  const r = rt();
  r.forgetLane(newfd);
  return r.call(SYS.dup3, oldfd, newfd, 0, 0, 0, 0, undefined, 'dup2');
}

/**
 * fcntl(fd, cmd, arg). `arg` (an unsigned long) is required by the commands that read it (F_DUPFD, F_DUPFD_CLOEXEC,
 * F_SETFD, F_SETFL): a missing one is refused rather than taken as 0, which for F_DUPFD would mean "from fd 0".
 */
export function fcntl(fd: number, cmd: number, arg?: number): number {
  const f = validateFd(fd);
  const c = validateInt(cmd, 'cmd');
  const usesArg = c === F_DUPFD || c === F_DUPFD_CLOEXEC || c === F_SETFD || c === F_SETFL;
  const a = usesArg || arg !== undefined ? validateWord(arg, 'arg') : 0;
  return rt().call(SYS.fcntl, f, c, a, 0, 0, 0, undefined, 'fcntl');
}

/**
 * ioctl(fd, request, arg). `arg` is the C struct as bytes (any typed array or DataView over it: copied in like
 * copy_from_user and the kernel's writes copied back into it), a string (passed as a NUL-terminated char *), or
 * an integer for requests that take a value rather than a pointer.
 */
export function ioctl(fd: number, request: number, arg?: ArrayBufferView | string | number): number {
  const f = validateFd(fd);
  const req = validateFlags(request, 'request') >>> 0;
  const r = rt();
  if (arg === undefined || typeof arg === 'number') {
    const v = arg === undefined ? 0 : validateWord(arg, 'arg');
    // A driver file this task holds a lane grant for: straight to the driver (src/shm/driver-lane.ts).
    const fast = r.laneIoctl(f, req, null, v);
    if (fast !== undefined) return fast;
    try {
      return r.call(SYS.ioctl, f, req, 0, v, 0, 0, undefined, 'ioctl');
    } finally {
      r.noteLane(f);
    }
  }
  if (typeof arg !== 'string' && !ArrayBuffer.isView(arg)) {
    throw new InvalidArgTypeError('arg', ['number', 'string', 'Buffer', 'TypedArray', 'DataView'], arg);
  }
  const bytes = typeof arg === 'string' ? cstr(arg) : new Uint8Array(arg.buffer, arg.byteOffset, arg.byteLength);
  // DMA_BUF_IOCTL_SYNC START waits for the buffer's fences (dma_buf_begin_cpu_access → dma_resv_wait_timeout): an
  // annotated fence wait in the caller's context, whether or not a fence is pending (issue 8; src/locking).
  const start = req === DMA_BUF_IOCTL_SYNC && bytes.length >= 8 && isSyncStart(bytes);
  if (start) dmaFenceMightWait();
  else {
    // The lane copies the struct back itself (into `bytes`; a string argument is a copy nobody sees).
    const fast = r.laneIoctl(f, req, bytes, 0);
    if (fast !== undefined) return fast;
  }
  try {
    if (start) return fenceParkedCall(r, 'DMA_BUF_IOCTL_SYNC(START)', () => r.call(SYS.ioctl, f, req, 1, 0, 0, 0, bytes, 'ioctl'));
    return r.call(SYS.ioctl, f, req, 1, 0, 0, 0, bytes, 'ioctl');
  } finally {
    // copy_to_user already happened in the kernel's view of the buffer; bring it back even on failure, since
    // a handler may have written part of the struct before failing (as a real kernel may).
    if (typeof arg !== 'string') bytes.set(r.outBytes().subarray(0, bytes.length));
    r.noteLane(f);
  }
}

/** A mapping returned by mmap: the same shared memory every other mapper of the object sees. */
export class Mapping {
  constructor(
    /** The synthetic address to pass to munmap. */
    readonly addr: number,
    /** The length asked for. */
    readonly length: number,
    /** The SharedArrayBuffer behind the mapping and where in it the mapping starts. */
    readonly sab: SharedArrayBuffer,
    readonly byteOffset: number,
  ) {}

  /** The mapped bytes (zero copy). */
  get bytes(): Uint8Array {
    return new Uint8Array(this.sab, this.byteOffset, this.length);
  }

  /** Any typed view of the mapping, e.g. `m.view(Int32Array)` for Atomics on shared words. */
  view<T extends ArrayBufferView>(ctor: new (b: SharedArrayBuffer, off: number, len: number) => T): T {
    const per = (ctor as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT;
    return new ctor(this.sab, this.byteOffset, Math.floor(this.length / per));
  }
}

/** mmap(addr, length, prot, flags, fd, offset): `addr` is a hint (null for none); `offset` defaults to 0. */
export function mmap(addr: number | null, length: number, prot: number, flags: number, fd: number, offset = 0): Mapping {
  const hint = addr === null ? 0 : validateWord(addr, 'addr');
  const len = validateWord(length, 'length');
  const p = validateFlags(prot, 'prot');
  const fl = validateFlags(flags, 'flags');
  const f = validateFd(fd);
  const off = validateWord(offset, 'offset');
  const r = rt();
  const a = r.call(SYS.mmap, hint, len, p, fl, f, off, undefined, 'mmap');
  const res = r.ch.res;
  return new Mapping(a, length, r.region(res[1]!), res[2]!);
}

/** munmap(addr, length), or munmap(mapping) for the whole of a Mapping (a length is then optional). */
export function munmap(addr: number | Mapping, length?: number): number {
  const byMapping = addr instanceof Mapping;
  if (!byMapping && typeof addr !== 'number') throw new InvalidArgTypeError('addr', ['number', 'Mapping'], addr);
  const a = byMapping ? addr.addr : validateWord(addr, 'addr');
  const len = byMapping && length === undefined ? addr.length : validateWord(length, 'length');
  const r = rt();
  const ret = r.call(SYS.munmap, a, len, 0, 0, 0, 0, undefined, 'munmap');
  const out = r.outBytes();
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let i = 0; i < r.ch.res[1]!; i++) r.regions.delete(dv.getInt32(i * 4, true));
  return ret;
}

export function lseek(fd: number, offset: number, whence: number): number {
  const f = validateFd(fd);
  const off = validateWord(offset, 'offset');
  return rt().call(SYS.lseek, f, off, validateInt(whence, 'whence'), 0, 0, 0, undefined, 'lseek');
}

/** read(fd, count): the bytes read (shorter at end of file). */
export function read(fd: number, count: number): Uint8Array {
  const f = validateFd(fd);
  const c = validateWord(count, 'count');
  const r = rt();
  const n = r.call(SYS.read, f, c, 0, 0, 0, 0, undefined, 'read');
  return r.outBytes().slice(0, n);
}

/** Reads a (small, generated) file to its end: debugfs nodes, /proc/self/fdinfo/N. */
export function readFile(path: string): string {
  const fd = open(path, O_RDONLY);
  try {
    let s = '';
    for (;;) {
      const b = read(fd, 65536);
      if (b.length === 0) return s;
      s += dec.decode(b);
    }
  } finally {
    close(fd);
  }
}

export function write(fd: number, data: Uint8Array | string): number {
  const f = validateFd(fd);
  const d = validateData(data, 'data');
  const bytes = typeof d === 'string' ? enc.encode(d) : new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  // The channel carries at most DATA_SIZE bytes; the count says how many were asked for, as with sendmsg: a stream
  // writes what arrived (a short write, as write(2) may), a datagram that does not fit is EMSGSIZE.
  return rt().call(SYS.write, f, bytes.length, 0, 0, 0, 0, bytes.subarray(0, DATA_SIZE), 'write');
}

export function readlink(path: string): string {
  const r = rt();
  const n = r.call(SYS.readlink, 0, 0, 0, 0, 0, 0, enc.encode(validatePath(path)), 'readlink');
  return dec.decode(r.outBytes().subarray(0, n));
}

export interface PollFd {
  fd: number;
  events: number;
  revents: number;
}

/**
 * poll(fds, timeoutMs): fills each entry's revents; returns how many have revents ≠ 0 (0 on timeout). A negative,
 * infinite or huge (≥ 2^31 ms) timeout waits until an fd is ready.
 */
export function poll(fds: PollFd[], timeoutMs: number): number {
  const list = validateArray(fds, 'fds');
  const timeout = validateTimeout(timeoutMs, 'timeout');
  const buf = new Uint8Array(list.length * 8);
  const dv = new DataView(buf.buffer);
  list.forEach((p, i) => {
    const pfd = validateObject(p, `fds[${i}]`);
    dv.setInt32(i * 8, validateFd(pfd['fd'], `fds[${i}].fd`), true);
    dv.setInt16(i * 8 + 4, validateShort(pfd['events'], `fds[${i}].events`), true);
  });
  const r = rt();
  // A poll that may sleep may sleep on a fence (a sync_file, a dma-buf): annotated like a fence wait, so holding a
  // lock a signaller needs across it is reported (issue 8's addition; timeout 0 never sleeps).
  if (timeout !== 0) dmaFenceMightWait();
  const n = timeout !== 0 ? fenceParkedCall(r, 'poll', () => r.call(SYS.poll, list.length, timeout, 0, 0, 0, 0, buf, 'poll')) : r.call(SYS.poll, list.length, timeout, 0, 0, 0, 0, buf, 'poll');
  const out = r.outBytes();
  const odv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  fds.forEach((p, i) => (p.revents = odv.getUint16(i * 8 + 6, true)));
  return n;
}

/** Convenience: poll one fd for `events`; returns revents (0 on timeout). */
export function pollOne(fd: number, events = POLLIN, timeoutMs = -1): number {
  const p = [{ fd: validateFd(fd), events: validateShort(events, 'events'), revents: 0 }];
  poll(p, timeoutMs);
  return p[0]!.revents;
}

export function socketpair(domain: number, type: number, protocol = 0): [number, number] {
  const d = validateInt(domain, 'domain');
  const ty = validateFlags(type, 'type');
  const pr = validateInt(protocol, 'protocol');
  const r = rt();
  r.call(SYS.socketpair, d, ty, pr, 0, 0, 0, undefined, 'socketpair');
  return [r.ch.res[1]!, r.ch.res[2]!];
}

export interface SendMsg {
  /**
   * Payload bytes. On a stream socket send at least one byte with fds: with zero bytes no skb is queued, so Linux
   * drops the fds (puts them) and returns 0. A datagram may be empty and still carry fds.
   */
  readonly data?: Uint8Array | string;
  /** fds to pass (SCM_RIGHTS). */
  readonly fds?: readonly number[];
}

/** sendmsg with an optional SCM_RIGHTS fd array; returns bytes sent. */
export function sendmsg(fd: number, msg: SendMsg, flags = 0): number {
  const f = validateFd(fd);
  const m = validateObject(msg, 'msg');
  const fl = validateFlags(flags, 'flags');
  const raw = m['data'] === undefined ? new Uint8Array(0) : validateData(m['data'], 'msg.data');
  const data = typeof raw === 'string' ? enc.encode(raw) : new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
  const fds = m['fds'] === undefined ? [] : validateArray(m['fds'], 'msg.fds').map((x, i) => validateFd(x, `msg.fds[${i}]`));
  // The channel carries at most DATA_SIZE bytes: what does not fit stays behind. The full length goes in ARGS, so
  // a stream socket sends what arrived (a short write) and a datagram socket refuses a message it cannot carry.
  const carried = Math.max(0, Math.min(data.length, DATA_SIZE - fds.length * 4));
  const buf = new Uint8Array(fds.length * 4 + carried);
  const dv = new DataView(buf.buffer);
  fds.forEach((f, i) => dv.setInt32(i * 4, f, true));
  buf.set(data.subarray(0, carried), fds.length * 4);
  return rt().call(SYS.sendmsg, f, fl, fds.length, data.length, 0, 0, buf, 'sendmsg');
}

export interface RecvMsg {
  readonly data: Uint8Array;
  readonly fds: number[];
  /** msg_flags: MSG_CTRUNC when fds were dropped, MSG_TRUNC when a datagram was cut. */
  readonly flags: number;
}

/** recvmsg: up to maxLen bytes and up to maxFds passed fds (installed at this process's lowest free fds). */
export function recvmsg(fd: number, maxLen = 4096, maxFds = 16, flags = 0): RecvMsg {
  const f = validateFd(fd);
  const len = validateWord(maxLen, 'maxLen');
  const room = validateInt(maxFds, 'maxFds');
  const fl = validateFlags(flags, 'flags');
  const r = rt();
  const n = r.call(SYS.recvmsg, f, fl, len, room, 0, 0, undefined, 'recvmsg');
  const nfds = r.ch.res[1]!;
  const mflags = r.ch.res[2]!;
  const out = r.outBytes();
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const fds: number[] = [];
  for (let i = 0; i < nfds; i++) fds.push(dv.getInt32(i * 4, true));
  return { data: out.slice(nfds * 4, nfds * 4 + n), fds, flags: mflags };
}

export function shutdown(fd: number, how: number): number {
  const f = validateFd(fd);
  return rt().call(SYS.shutdown, f, validateInt(how, 'how'), 0, 0, 0, 0, undefined, 'shutdown');
}

export function getrlimit(resource = RLIMIT_NOFILE): { cur: number; max: number } {
  const res = validateInt(resource, 'resource');
  const r = rt();
  const cur = r.call(SYS.getrlimit, res, 0, 0, 0, 0, 0, undefined, 'getrlimit');
  return { cur, max: r.ch.res[1]! };
}

/** A limit (rlim_t): Infinity is RLIM_INFINITY, as is -1 (all bits set), as in C. */
function rlim(value: unknown, name: string): number {
  return value === Infinity ? -1 : validateWord(value, name);
}

export function setrlimit(resource: number, limit: { cur: number; max: number }): number {
  const res = validateInt(resource, 'resource');
  const l = validateObject(limit, 'limit');
  const cur = rlim(l['cur'], 'limit.cur');
  const max = rlim(l['max'], 'limit.max');
  return rt().call(SYS.setrlimit, res, cur, max, 0, 0, 0, undefined, 'setrlimit');
}

/** A syscall that does nothing in the kernel: the transport's round-trip cost. */
export function nop(): number {
  return rt().call(SYS.nop, 0, 0, 0, 0, 0, 0, undefined, 'nop');
}

export { ProcessExit };

/**
 * exit(code): the kernel tears the process down (closes every fd, drops every mapping) before this returns
 * control to the worker, which then ends. Never returns.
 */
export function exit(code = 0): never {
  const status = validateInt(code, 'code');
  const r = rt();
  r.call(SYS.exit, status, 0, 0, 0, 0, 0, undefined, 'exit');
  r.exited = code;
  throw new ProcessExit(code);
}

export { SyscallError, E };
