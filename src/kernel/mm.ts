/**
 * Memory mappings: shared-memory regions (the pages behind a buffer) and per-process VMAs.
 *
 * A ShmRegion is one SharedArrayBuffer range: the whole SAB of one heap buffer (system and carve-out heaps alike
 * give every buffer its own SAB, so a handle posted to a process reaches that buffer's pages and nothing else).
 * mmap gives the process a view of exactly that memory: every mapper sees the same bytes.
 * A process holds each region's SAB handle while at least one of its VMAs uses it; the broker counts those per
 * task so it posts the handle once and tells the process when to drop it.
 */
import { BUG } from '../bug.js';
import type { File } from './file.js';
import { KernelError } from '../errors.js';
import { E } from '../uapi/errno.js';
import {
  MAP_ANONYMOUS,
  MAP_DENYWRITE,
  MAP_EXECUTABLE,
  MAP_FIXED,
  MAP_GROWSDOWN,
  MAP_HUGETLB,
  MAP_LOCKED,
  MAP_NONBLOCK,
  MAP_NORESERVE,
  MAP_POPULATE,
  MAP_PRIVATE,
  MAP_SHARED,
  MAP_SHARED_VALIDATE,
  MAP_STACK,
  MAP_TYPE,
  MAP_UNINITIALIZED,
  PAGE_ALIGN,
  PAGE_SIZE,
  PROT_WRITE,
} from '../uapi/posix.js';
import { SYS } from '../shm/channel.js';
import type { SyscallEntry, SyscallRequest } from './entry.js';
import { FMODE_READ, FMODE_WRITE } from './file.js';
import type { Kernel } from './kernel.js';
import type { Origin } from './leaks.js';
import type { Task } from './task.js';
import { blockOnPromise, type SyscallOutcome } from './wait.js';

export class ShmRegion {
  constructor(
    /** Unique id (counter); processes key their handle cache by it. */
    readonly id: number,
    readonly sab: SharedArrayBuffer,
    readonly byteOffset: number,
    readonly size: number,
  ) {}

  bytes(): Uint8Array {
    return new Uint8Array(this.sab, this.byteOffset, this.size);
  }
}

/** vm_area_struct: [start, end) of a process's synthetic address space mapped to a file. */
export class Vma {
  region: ShmRegion | null = null;
  /** Byte offset of `start` within `region`. */
  regionOffset = 0;
  constructor(
    public start: number,
    public end: number,
    readonly file: File,
    /** Offset into the file, in pages. */
    public pgoff: number,
    readonly prot: number,
    readonly flags: number,
    /** The mmap that made it (a split keeps it): shown when the process ends still holding it. */
    readonly origin: Origin,
  ) {}

  get length(): number {
    return this.end - this.start;
  }
}

/** First address handed out; addresses are synthetic and page-aligned, growing upward with a guard page. */
export const MMAP_BASE = 0x7f00_0000_0000;
/** TASK_SIZE on x86-64 with 4-level page tables (TASK_SIZE_MAX): the end of the user address space. */
export const TASK_SIZE = 2 ** 47 - PAGE_SIZE;
/** MAX_LFS_FILESIZE on 64-bit (LLONG_MAX): what file_mmap_ok allows offset + length to reach. */
const MAX_LFS_FILESIZE = 2 ** 63 - 1;
/**
 * LEGACY_MAP_MASK (include/linux/mman.h): the flags every kernel accepted with MAP_SHARED. MAP_SHARED drops any
 * other bit silently; MAP_SHARED_VALIDATE refuses it with EOPNOTSUPP (no file here supports MAP_SYNC).
 */
const LEGACY_MAP_MASK =
  MAP_SHARED | MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_DENYWRITE | MAP_EXECUTABLE | MAP_UNINITIALIZED |
  MAP_GROWSDOWN | MAP_LOCKED | MAP_NORESERVE | MAP_POPULATE | MAP_NONBLOCK | MAP_STACK | MAP_HUGETLB;

// ---- mmap / munmap syscalls (mm/mmap.c, mm/util.c) -----------------------------------------------------------


function insertVma(t: Task, vma: Vma): void {
  let i = 0;
  while (i < t.vmas.length && t.vmas[i]!.start < vma.start) i++;
  t.vmas.splice(i, 0, vma);
}

/** Counts one more VMA of `t` on `region`; posts the SAB handle when it is the first. */
function regionGet(t: Task, region: ShmRegion, req: SyscallRequest | null): void {
  const n = t.regionRefs.get(region.id) ?? 0;
  if (n === 0 && req) req.postRegion(region);
  t.regionRefs.set(region.id, n + 1);
}

/** Drops one VMA's use of `region`; returns true when the process should drop its handle. */
function regionPut(t: Task, region: ShmRegion): boolean {
  const n = (t.regionRefs.get(region.id) ?? 0) - 1;
  if (n > 0) {
    t.regionRefs.set(region.id, n);
    return false;
  }
  t.regionRefs.delete(region.id);
  return true;
}

/**
 * do_mmap for a file mapping. ARGS = [addr, len, prot, flags, fd, offset], all unsigned long (sys_mmap on x86-64;
 * fget takes the fd's low 32 bits). Returns the address; RES[1] = region id, RES[2] = byte offset of the mapping
 * in the region's SAB, RES[3] = mapped (page-aligned) length.
 * Checks in Linux's order: unaligned offset → EINVAL; fd → EBADF; len 0 → EINVAL; len rounding past 2^64 or past
 * the address space → ENOMEM; offset + len beyond MAX_LFS_FILESIZE → EOVERFLOW; then by map type: MAP_SHARED
 * drops non-legacy flags, MAP_SHARED_VALIDATE refuses them (EOPNOTSUPP), a shared writable map of a file not
 * open for writing → EACCES; any map of a file not open for reading → EACCES; no mmap op → ENODEV; another
 * type → EINVAL; then the file's mmap.
 */
function sysMmap(k: Kernel, req: SyscallRequest): SyscallOutcome {
  const t = req.task;
  const [len, prot, offset] = [req.ulong(1), req.ulong(2), req.ulong(5)];
  const flagsWord = req.ulong(3);
  // Bits above 31 exist in an unsigned long but in no flag: they only matter to MAP_SHARED_VALIDATE's check.
  const highFlags = flagsWord >= 2 ** 32;
  let flags = flagsWord >>> 0;
  // sys_mmap: an unaligned offset; ksys_mmap_pgoff: the fd (anonymous maps take none); do_mmap: len, the
  // address space, the offset range, the map type, then access and the file's mmap op. Unknown PROT_* bits are
  // not an error for mmap (mprotect checks them).
  // The signed view keeps the low bits exact (-1 is 2^64 − 1, which an f64 rounds to 2^64).
  if (req.long(5) % PAGE_SIZE !== 0) throw new KernelError(E.EINVAL);
  if (flags & MAP_ANONYMOUS) throw new KernelError(E.EINVAL, 'anonymous mappings are not modelled');
  const f = k.fileOf(t, req.fd(4));
  if (len === 0) throw new KernelError(E.EINVAL);
  if (flags & MAP_FIXED) throw new KernelError(E.EINVAL, 'MAP_FIXED is not modelled');
  const size = PAGE_ALIGN(len);
  // PAGE_ALIGN wrapping to 0 → ENOMEM; get_unmapped_area: longer than the address space, or no room left in it.
  if (size >= 2 ** 64 || size > TASK_SIZE) throw new KernelError(E.ENOMEM);
  const start = unmappedArea(t, size);
  if (start < 0) throw new KernelError(E.ENOMEM);
  // file_mmap_ok: the mapping's end in the file must stay within MAX_LFS_FILESIZE.
  if (offset > MAX_LFS_FILESIZE - size) throw new KernelError(E.EOVERFLOW);
  const type = flags & MAP_TYPE;
  if (type !== MAP_SHARED && type !== MAP_SHARED_VALIDATE && type !== MAP_PRIVATE) throw new KernelError(E.EINVAL);
  if (type !== MAP_PRIVATE) {
    // MAP_SHARED silently drops what is not a legacy flag; MAP_SHARED_VALIDATE refuses it.
    if (type === MAP_SHARED) flags &= LEGACY_MAP_MASK;
    else if (flags & ~LEGACY_MAP_MASK || highFlags) throw new KernelError(E.EOPNOTSUPP);
    if (prot & PROT_WRITE && !(f.fmode & FMODE_WRITE)) throw new KernelError(E.EACCES);
  }
  if (!(f.fmode & FMODE_READ)) throw new KernelError(E.EACCES);
  if (!f.ops.mmap) throw new KernelError(E.ENODEV);
  const vma = new Vma(start, start + size, f, offset / PAGE_SIZE, prot >>> 0, flags, k.origin());
  const pending = f.ops.mmap(f, vma);
  // A file served by a driver worker answers later: the call parks, and the address is chosen again when it
  // does (a thread sharing the address space may have mapped meanwhile).
  if (pending) return blockOnPromise(pending, () => installVma(k, req, f, vma, unmappedArea(t, size)));
  return installVma(k, req, f, vma, start);
}

/** The end of do_mmap once the file's mmap set the region: the VMA at `start`, its file reference, the SAB handle. */
function installVma(k: Kernel, req: SyscallRequest, f: File, vma: Vma, start: number): number {
  const t = req.task;
  const size = vma.length;
  if (start < 0) throw new KernelError(E.ENOMEM);
  vma.start = start;
  vma.end = start + size;
  if (!vma.region) BUG(`${f.ops.kind} mmap set no region`);
  if (start === t.nextMmapAddr) t.nextMmapAddr = start + size + PAGE_SIZE; // guard page between mappings
  k.fget(f);
  insertVma(t, vma);
  regionGet(t, vma.region, req);
  req.res[1] = vma.region.id;
  req.res[2] = vma.region.byteOffset + vma.regionOffset;
  req.res[3] = size;
  return start;
}

/**
 * munmap(unsigned long addr, size_t len): unmaps every page of [addr, addr+len), splitting VMAs that straddle an
 * edge (a split VMA holds its own file reference, as vma splitting does get_file). No mapping in range is not an
 * error. do_vmi_munmap's checks: addr unaligned or past TASK_SIZE, len reaching past TASK_SIZE (a negative len is
 * a huge size_t), or a range that rounds to nothing → EINVAL.
 * DATA out: the region ids whose last VMA went (i32 each); RES[1] = their count.
 */
function sysMunmap(k: Kernel, req: SyscallRequest): number {
  const t = req.task;
  const addr = req.ulong(0);
  const len = req.ulong(1);
  if (req.long(0) % PAGE_SIZE !== 0 || addr > TASK_SIZE || len > TASK_SIZE - addr) throw new KernelError(E.EINVAL);
  const end = addr + PAGE_ALIGN(len);
  if (end === addr) throw new KernelError(E.EINVAL);
  const dropped = munmapRange(k, t, addr, end);
  for (let i = 0; i < dropped.length; i++) req.dataView.setInt32(i * 4, dropped[i]!, true);
  req.setOutLen(dropped.length * 4);
  req.res[1] = dropped.length;
  return 0;
}

/** Removes [start, end) from the task's address space; returns region ids the process should forget. */
export function munmapRange(k: Kernel, t: Task, start: number, end: number): number[] {
  const dropped: number[] = [];
  const keep: Vma[] = [];
  for (const v of t.vmas.splice(0)) {
    if (v.end <= start || v.start >= end) {
      keep.push(v);
      continue;
    }
    // Pieces that survive on either side; each surviving piece beyond the first needs its own file reference.
    const pieces: Vma[] = [];
    if (v.start < start) pieces.push(slice(v, v.start, start));
    if (v.end > end) pieces.push(slice(v, end, v.end));
    for (let i = 0; i < pieces.length; i++) {
      if (i > 0) k.fget(v.file);
      keep.push(pieces[i]!);
      t.regionRefs.set(v.region!.id, (t.regionRefs.get(v.region!.id) ?? 0) + (i > 0 ? 1 : 0));
    }
    if (pieces.length === 0) {
      if (regionPut(t, v.region!)) dropped.push(v.region!.id);
      k.fput(v.file);
    }
  }
  keep.sort((a, b) => a.start - b.start);
  t.vmas.push(...keep);
  return dropped;
}

function slice(v: Vma, start: number, end: number): Vma {
  const n = new Vma(start, end, v.file, v.pgoff + (start - v.start) / PAGE_SIZE, v.prot, v.flags, v.origin);
  n.region = v.region;
  n.regionOffset = v.regionOffset + (start - v.start);
  return n;
}

export function registerMmSyscalls(entry: SyscallEntry): void {
  entry.register(SYS.mmap, sysMmap);
  entry.register(SYS.munmap, sysMunmap);
}

/**
 * get_unmapped_area for the model: where a new mapping of `size` bytes goes, or -1 when the address space has no
 * room (ENOMEM). Fast path: the bump pointer above every mapping so far (deterministic addresses, one guard page
 * between mappings). When that runs past TASK_SIZE — a long-running process that maps and unmaps in a loop gets
 * there after ~1 TiB of mappings — the first gap between the sorted VMAs above MMAP_BASE that holds the mapping and
 * its guard page is reused, as Linux reuses freed address space. Broker thread, inside the mmap syscall.
 */
function unmappedArea(t: Task, size: number): number {
  if (t.nextMmapAddr + size <= TASK_SIZE) return t.nextMmapAddr;
  let addr = MMAP_BASE;
  for (const v of t.vmas) {
    if (v.end + PAGE_SIZE <= addr) continue;
    if (v.start >= addr + size + PAGE_SIZE) break;
    addr = Math.max(addr, v.end + PAGE_SIZE);
  }
  return addr + size <= TASK_SIZE ? addr : -1;
}
