/**
 * poll(2) (fs/select.c): asks each file's poll op for its ready mask, registering on the wait queues it names;
 * sleeps until one of them wakes or the timeout passes.
 *
 * ABI: DATA holds `struct pollfd { s32 fd; s16 events; s16 revents; }` × nfds (ARGS[0]); ARGS[1] is the timeout
 * in ms (< 0 forever). The array comes back with revents filled; the return value counts fds with revents ≠ 0.
 */
import { KernelError } from '../errors.js';
import { E } from '../uapi/errno.js';
import { POLLERR, POLLHUP, POLLNVAL } from '../uapi/posix.js';
import { SYS } from '../shm/channel.js';
import type { SyscallEntry, SyscallRequest } from './entry.js';
import type { File, PollTable } from './file.js';
import type { Kernel } from './kernel.js';
import { Blocked, WaitQueue } from './wait.js';

export const POLLFD_SIZE = 8;

/**
 * One pass over the pollfds. The first pass (`queues` given) registers on each file's wait queues and records the
 * file in `files` — poll_wait's get_file: the call holds each polled file while it sleeps (SyscallEntry.park), so
 * another thread's close of the fd does not release it; a later pass finds the fd closed and reports POLLNVAL.
 */
function pollOnce(req: SyscallRequest, list: PollList, queues: Set<WaitQueue> | null, files: File[] | null = null): number {
  const dv = req.dataView;
  const t = req.task;
  const nfds = list.fds.length;
  let ready = 0;
  // poll_wait only registers on the first pass (later passes run with _qproc NULL), but every pass hands the poll
  // op the events asked for: do_pollfd sets the table's _key to events | POLLERR | POLLHUP (poll_requested_events).
  const collect = queues ? (q: WaitQueue): void => void queues.add(q) : (): void => {};
  for (let i = 0; i < nfds; i++) {
    const off = i * POLLFD_SIZE;
    const fd = list.fds[i]!;
    const events = list.events[i]!;
    let revents = 0;
    if (fd >= 0) {
      const e = t.getFd(fd);
      if (!e) revents = POLLNVAL;
      else {
        const f = e.file;
        files?.push(f);
        // A file without a poll op is always ready for whatever was asked (DEFAULT_POLLMASK semantics).
        const pt: PollTable = { wait: collect, key: events | POLLERR | POLLHUP };
        const mask = f.ops.poll ? f.ops.poll(f, pt) : 0x145;
        revents = mask & (events | POLLERR | POLLHUP);
      }
    }
    dv.setUint16(off + 6, revents, true);
    if (revents) ready++;
  }
  return ready;
}

/**
 * do_sys_poll's poll_list: the pollfds' fd and events, copied from the caller once (copy_from_user). Every pass
 * reads this copy, so a process rewriting its channel while its poll is parked cannot change what is polled;
 * revents go back to the caller's array on each pass (the reply carries them).
 */
interface PollList {
  readonly fds: Int32Array;
  readonly events: Uint16Array;
}

function copyPollList(req: SyscallRequest, nfds: number): PollList {
  const dv = req.dataView;
  const fds = new Int32Array(nfds);
  const events = new Uint16Array(nfds);
  for (let i = 0; i < nfds; i++) {
    fds[i] = dv.getInt32(i * POLLFD_SIZE, true);
    events[i] = dv.getUint16(i * POLLFD_SIZE + 4, true);
  }
  return { fds, events };
}

function sysPoll(k: Kernel, req: SyscallRequest): number | Blocked {
  // poll(struct pollfd *ufds, unsigned int nfds, int timeout_msecs): a negative timeout waits forever.
  const nfds = req.uint(0);
  const timeout = req.int(1);
  // do_sys_poll: more fds than RLIMIT_NOFILE's soft limit → EINVAL; a pollfd array shorter than nfds → EFAULT.
  if (nfds > req.task.nofileCur) throw new KernelError(E.EINVAL);
  if (nfds * POLLFD_SIZE > req.input.length) throw new KernelError(E.EFAULT);
  req.setOutLen(nfds * POLLFD_SIZE);
  const list = copyPollList(req, nfds);
  const fresh = prepare(k, req, list);
  if (fresh) return pollAfter(fresh, req, list, timeout);
  const queues = new Set<WaitQueue>();
  const first = pollOnce(req, list, timeout === 0 ? null : queues, k.callFiles);
  if (first > 0 || timeout === 0) return first;
  // Queues were collected on the first pass; later passes only re-read masks (their queues are the same ones,
  // as in the kernel, where a file's poll op names the same wait queue every time).
  return new Blocked(
    () => {
      const n = pollOnce(req, list, null);
      return n > 0 ? n : undefined;
    },
    [...queues],
    timeout < 0 ? -1 : timeout,
    () => pollOnce(req, list, null),
  );
}

/**
 * The polled files whose mask lives in a driver worker (FileOperations.pollPrepare): one promise for all their
 * fresh masks, or null when there are none. The files are recorded for the parked call (held while it sleeps).
 */
function prepare(k: Kernel, req: SyscallRequest, list: PollList): Promise<unknown> | null {
  let ps: Promise<void>[] | null = null;
  for (let i = 0; i < list.fds.length; i++) {
    const fd = list.fds[i]!;
    const e = fd >= 0 ? req.task.getFd(fd) : undefined;
    if (!e?.file.ops.pollPrepare) continue;
    k.callFiles.push(e.file);
    (ps ??= []).push(e.file.ops.pollPrepare(e.file));
  }
  return ps ? Promise.all(ps) : null;
}

/**
 * poll(2) once the drivers answered: the first pass (registering on the queues) runs when `fresh` settles, then
 * as the plain path — woken by any of the queues, or the timeout (counted from the call's start).
 */
function pollAfter(fresh: Promise<unknown>, req: SyscallRequest, list: PollList, timeout: number): Blocked {
  const me = new WaitQueue();
  const waker = (): void => me.wake();
  let ready = false;
  let queues: WaitQueue[] | null = null;
  fresh.then(
    () => ((ready = true), me.wake()),
    () => ((ready = true), me.wake()),
  );
  return new Blocked(
    () => {
      if (!ready) return undefined;
      if (!queues) {
        const qs = new Set<WaitQueue>();
        const n = pollOnce(req, list, qs);
        queues = [...qs];
        for (const q of queues) q.add(waker);
        return n > 0 || timeout === 0 ? n : undefined;
      }
      const n = pollOnce(req, list, null);
      return n > 0 ? n : undefined;
    },
    [me],
    timeout < 0 ? -1 : timeout,
    () => pollOnce(req, list, null),
    () => {
      for (const q of queues ?? []) q.remove(waker);
    },
  );
}

export function registerPollSyscall(entry: SyscallEntry): void {
  entry.register(SYS.poll, sysPoll);
}
