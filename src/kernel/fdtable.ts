/**
 * struct files_struct for the model: an fd table (open files, close-on-exec bits, the open-fds bitmap with its
 * full-word summary) shared by reference between the tasks that use it — one task after fork, every thread of a
 * CLONE_FILES group. Broker thread only.
 *
 * Allocation follows fs/file.c: `openFds` has one bit per fd, `fullFdsBits` one bit per 32-bit word of `openFds`
 * that is completely used, and `nextFd` remembers where the lowest free fd can start (raised by an allocation at
 * it, lowered by a close below it). Finding the lowest free fd ≥ start is then one scan of the summary for a word
 * with room and one scan inside that word — a few word reads at 200k open fds instead of one read per open fd.
 */
import { BUG } from '../bug.js';
import type { File } from './file.js';
import type { Origin } from './leaks.js';

export interface FdEntry {
  readonly file: File;
  cloexec: boolean;
  /**
   * The call that installed this fd (open, dup, recvmsg, a control-plane socketpair...), shown when the process
   * ends still holding it; null for what the process started with (fds 0–2 on /dev/null).
   */
  readonly origin: Origin | null;
}

const BITS = 32;

/** Index of the lowest zero bit of `w` (w ≠ 0xffffffff). */
function lowestZero(w: number): number {
  return 31 - Math.clz32(~w & (w + 1));
}

/** Ones in the bits of a word below bit `pos % 32` (a mask that makes a search start at pos). */
function belowMask(pos: number): number {
  return ((1 << (pos & 31)) - 1) | 0;
}

/** find_next_zero_bit: the lowest clear bit ≥ `from` of a bitmap of `nbits` bits, or `nbits` when none. */
function nextZeroBit(map: Int32Array, nbits: number, from: number): number {
  if (from >= nbits) return nbits;
  let i = from >>> 5;
  let w = map[i]! | belowMask(from);
  for (;;) {
    if (w !== -1) return Math.min(nbits, i * BITS + lowestZero(w));
    if (++i * BITS >= nbits) return nbits;
    w = map[i]!;
  }
}

export class FilesStruct {
  /**
   * Tasks using this table (files_struct.count): 1 after fork, one more per CLONE_FILES thread. The last user's
   * exit closes every fd (put_files_struct).
   */
  users = 1;
  private entries: (FdEntry | undefined)[] = [];
  /** One bit per fd: set while the fd is open (fdt->open_fds). */
  private openFds = new Int32Array(4);
  /** One bit per word of openFds: set while that word is all ones (fdt->full_fds_bits). */
  private fullFdsBits = new Int32Array(1);
  /** No fd below this is free (files->next_fd). */
  private nextFd = 0;
  private open = 0;

  /** Number of open fds. */
  get count(): number {
    return this.open;
  }

  /** fds the table has room for without growing (fdt->max_fds). */
  private get maxFds(): number {
    return this.openFds.length * BITS;
  }

  /** The entry of an open fd, or undefined (any number, even 3.5 or NaN, is accepted and not found). */
  get(fd: number): FdEntry | undefined {
    return Number.isInteger(fd) && fd >= 0 ? this.entries[fd] : undefined;
  }

  /** Every open fd in ascending order, with its entry. */
  *[Symbol.iterator](): IterableIterator<[number, FdEntry]> {
    for (let fd = 0; fd < this.entries.length; fd++) {
      const e = this.entries[fd];
      if (e) yield [fd, e];
    }
  }

  /**
   * find_next_fd + alloc_fd's limit: the lowest fd ≥ `start` that is not open and is below `limit`, or -1 (the
   * caller's EMFILE). `limit` is RLIMIT_NOFILE (may be Infinity). Does not reserve the fd: install() does.
   */
  findFree(start: number, limit: number): number {
    const fd = this.findNextFd(Math.max(start, this.nextFd));
    return fd < limit ? fd : -1;
  }

  /**
   * find_next_fd: the summary names the first word at or after `from`'s that has a free bit; the word itself gives
   * the bit. A word whose only free bits lie below `from` sends the search back to the summary one word later, so
   * the cost is bounded by the summary's length (maxFds / 1024 words), never by the number of open fds.
   */
  private findNextFd(from: number): number {
    const words = this.openFds.length;
    for (;;) {
      if (from >= words * BITS) return from;
      const word = nextZeroBit(this.fullFdsBits, words, from >>> 5);
      if (word >= words) return words * BITS;
      if (word > from >>> 5) from = word * BITS;
      const bits = this.openFds[word]! | belowMask(from);
      if (bits !== -1) return word * BITS + lowestZero(bits);
      from = (word + 1) * BITS;
    }
  }

  /**
   * fd_install at a number findFree returned (or any free number, for dup3): grows the table as expand_files does,
   * sets the bit and the summary. The entry takes over the caller's file reference.
   */
  install(fd: number, entry: FdEntry): void {
    if (this.entries[fd]) BUG(`fd ${fd} installed twice`);
    this.grow(fd);
    this.entries[fd] = entry;
    this.open++;
    const word = fd >>> 5;
    const bits = (this.openFds[word]! | (1 << (fd & 31))) | 0;
    this.openFds[word] = bits;
    if (bits === -1) this.fullFdsBits[word >>> 5] = this.fullFdsBits[word >>> 5]! | (1 << (word & 31));
    if (fd === this.nextFd) this.nextFd = fd + 1;
  }

  /**
   * Removes an open fd (pick_file + __put_unused_fd) and returns its entry; the caller puts the file. The file's
   * flush op runs first (filp_close calls it for every fd closed, whoever else holds the file).
   */
  remove(fd: number): FdEntry | undefined {
    const e = this.get(fd);
    if (!e) return undefined;
    e.file.ops.flush?.(e.file, this);
    this.entries[fd] = undefined;
    this.open--;
    const word = fd >>> 5;
    this.openFds[word] = this.openFds[word]! & ~(1 << (fd & 31));
    this.fullFdsBits[word >>> 5] = this.fullFdsBits[word >>> 5]! & ~(1 << (word & 31));
    if (fd < this.nextFd) this.nextFd = fd;
    return e;
  }

  /** Removes every fd, lowest first, handing each entry to `put` (close_files at the last user's exit). */
  closeAll(put: (e: FdEntry) => void): void {
    for (let fd = 0; fd < this.entries.length; fd++) {
      const e = this.remove(fd);
      if (e) put(e);
    }
    this.entries = [];
  }

  /**
   * dup_fd: a new table with the same fds and close-on-exec bits, each entry a new reference taken by `get` (the
   * caller's fget). The copy is independent from then on.
   */
  copy(get: (f: File) => void): FilesStruct {
    const n = new FilesStruct();
    n.grow(this.maxFds - 1);
    for (const [fd, e] of this) {
      get(e.file);
      n.install(fd, { file: e.file, cloexec: e.cloexec, origin: e.origin });
    }
    n.nextFd = this.nextFd;
    return n;
  }

  /** expand_fdtable: room for `fd` (the bitmaps double, so each fd costs amortised O(1)). */
  private grow(fd: number): void {
    const need = (fd >>> 5) + 1;
    if (need <= this.openFds.length) return;
    let words = this.openFds.length;
    while (words < need) words *= 2;
    const open = new Int32Array(words);
    open.set(this.openFds);
    this.openFds = open;
    const full = new Int32Array(Math.ceil(words / BITS));
    full.set(this.fullFdsBits);
    this.fullFdsBits = full;
  }
}
