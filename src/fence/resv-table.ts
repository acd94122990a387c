/**
 * The machine-wide reservation table: every struct dma_resv's lock words and fence list in one SharedArrayBuffer
 * (created once per machine by the broker at boot, handed to the kernel-side workers only: the broker, the main
 * thread, drivers, processes spawned with { kernelFences: true }), so a resv is reachable from each of them by id.
 *
 * This module is the shared-memory layer only — layout, the object and list allocators, origins, leak reports,
 * each worker's attachment. The dma_resv semantics on top live in dma-resv.ts.
 *
 * ## Why one table
 * A SharedArrayBuffer cannot be stored in another, so a resv cannot own a buffer that grows: every resv is a fixed
 * slot (its lock words and the index of its current fence list) and every fence list a chunk of one shared arena,
 * allocated in the kernel's own kmalloc bucket sizes, so `max_fences` is what Linux computes. A list is replaced —
 * never grown in place — exactly as dma_resv_reserve_fences replaces obj->fences; the old chunk is freed at once
 * (there is no RCU grace period across workers), and unlocked readers detect that with the chunk's generation.
 *
 * ## Layout (byte offsets)
 *
 *   0            header, HEADER_BYTES (Int32 words T_*; 64-bit free-list heads at the byte offsets *_B)
 *   OBJ_BYTE     objects: nobj × OBJ_BYTES
 *   arenaByte    the list arena: arenaUnits × 8 bytes; chunks start on 8-byte units (unit 0 is never used, so 0
 *                means "no list")
 *
 * ## Header (Int32 words; all shared words accessed with Atomics)
 *
 *   T_MAGIC, T_VERSION, T_NOBJ, T_ARENA_UNITS   immutable after creation
 *   T_ID0..T_ID2   who made it (thread id, a per-thread counter, its clock): copies of the buffer that arrive by
 *                  postMessage are recognised as the same table
 *   T_LIVE         objects in use; T_HIGH its maximum
 *   T_SERIAL       creation serial of the last object (leak reports)
 *   T_BUMP         first arena unit never handed out (the bump allocator below the per-class free lists)
 *   T_LISTS        list chunks in use (or kept for reuse in a worker's cache: ResvTable.cache)
 *   byte 64  i64  T_OBJ_FREE_B     free objects: (tag << 32) | (index + 1), 0 in the low half = empty
 *   byte 128 i64  T_CLASS_FREE_B   NCLASSES heads of freed chunks, one per bucket: (tag << 32) | unit
 *
 * ## Object (Int32 words O_* from the object's start; OBJ_BYTES each)
 *
 *   O_LOCK..+3  the reservation ww_mutex, in src/locking/mutex.ts's word layout (L_STATE owner token | WAITERS,
 *               L_ID, L_STAMP, L_CTX_SLOT): WwMutex views it in place (`new WwMutex(cls, opts, { sab, byteOffset })`)
 *   O_GEN       generation: +1 each time the object is freed, so an id (index, gen) of a finalised resv never
 *               names the slot's next occupant (≥ 1)
 *   O_STATE     OBJ_FREE / OBJ_LIVE
 *   O_NEXT      free-list link (index + 1) while free
 *   O_LIST      obj->fences: the arena unit of the current list, 0 = none. Written only under the lock; read by
 *               unlocked readers (see dma-resv.ts)
 *   O_CREATOR   the creator's owner token; O_SERIAL its creation serial; O_THREAD its thread id
 *   byte 64     origin: a length byte, then up to ORIGIN_MAX UTF-8 bytes — where the resv was made
 *
 * ## List chunk (Int32 words C_* from the chunk's start; then the entries)
 *
 *   C_GEN     +1 at every allocation and every free: an unlocked reader that read (chunk, C_GEN) and finds C_GEN
 *             changed after reading an entry knows the entry may be a stranger's and restarts
 *   C_OWNER   index + 1 of the object the chunk belongs to, 0 while free
 *   C_NUM     num_fences (entries in use)                    C_MAX  max_fences (capacity, from the bucket)
 *   C_CLASS   the bucket index                               C_NEXT free-list link (unit) while free
 *   byte 24.. entries, one i64 each: (fence gen << 32) | (usage << 28) | fence slot index — one atomic word, so a
 *             reader sees a whole entry (the kernel's tagged pointer); 0 = none
 *
 * ## A worker killed mid-change
 * Allocation and free are lock-free (compareExchange on tagged heads; no worker holds anything between steps).
 * Every list change is published with a single store (O_LIST, an entry, C_NUM) after the data it publishes, so a
 * worker killed at any instruction leaves every list consistent; what it dies owning — a chunk popped and not yet
 * published, an old list not yet freed, the chunks in its own cache (ResvTable.cache), a fence reference taken and
 * not yet stored — is lost to the table's life (a leak, never a corruption).
 */
import { threadId } from 'node:worker_threads';
import { validateInteger } from '../validate.js';
import { BUG } from '../bug.js';

export const RESV_TABLE_MAGIC = 0x72657376; // 'resv'
export const RESV_TABLE_VERSION = 1;

export const T_MAGIC = 0;
export const T_VERSION = 1;
export const T_NOBJ = 2;
export const T_ARENA_UNITS = 3;
export const T_ID0 = 4;
export const T_ID1 = 5;
export const T_ID2 = 6;
export const T_LIVE = 7;
export const T_HIGH = 8;
export const T_SERIAL = 9;
export const T_BUMP = 10;
export const T_LISTS = 11;
export const T_OBJ_FREE_B = 64;
export const T_CLASS_FREE_B = 128;
export const HEADER_BYTES = 512;
export const OBJ_BYTE = HEADER_BYTES;

export const OBJ_BYTES = 128;
export const OBJ_WORDS = OBJ_BYTES / 4;
export const O_LOCK = 0;
export const O_GEN = 4;
export const O_STATE = 5;
export const O_NEXT = 6;
export const O_LIST = 7;
export const O_CREATOR = 8;
export const O_SERIAL = 9;
export const O_THREAD = 10;
export const O_ORIGIN_BYTE = 64;
export const ORIGIN_MAX = 63;
export const OBJ_FREE = 0;
export const OBJ_LIVE = 1;

export const C_GEN = 0;
export const C_OWNER = 1;
export const C_NUM = 2;
export const C_MAX = 3;
export const C_CLASS = 4;
export const C_NEXT = 5;
/** Bytes of a chunk before its entries: as struct dma_resv_list's rcu_head + two u32 on a 64-bit kernel. */
export const LIST_HEADER_BYTES = 24;
export const ENTRY_USAGE_SHIFT = 28;
export const ENTRY_INDEX_MASK = (1 << ENTRY_USAGE_SHIFT) - 1;

/** kmalloc's buckets (then page orders): a list of n fences lands in the first that holds 24 + 8n bytes. */
export const LIST_BUCKETS: readonly number[] = [64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576];
export const NCLASSES = LIST_BUCKETS.length;

export const RESV_OBJECTS_DEFAULT = 4096;
export const RESV_OBJECTS_MIN = 1;
export const RESV_OBJECTS_MAX = 1 << 20;
export const RESV_LIST_BYTES_DEFAULT = 1 << 20;
export const RESV_LIST_BYTES_MIN = 4096;
export const RESV_LIST_BYTES_MAX = 1 << 30;

export interface ResvTableOptions {
  /** Reservation objects alive at once (default 4096; one per dma-buf, plus drivers' own). */
  readonly objects?: number;
  /** Bytes of fence-list arena shared by all of them (default 1 MiB: 16384 lists of up to 5 fences). */
  readonly listBytes?: number;
}

/** The object and list counts of `opts`, validated (defaults filled in); `prefix` names the option object. */
export function resvTableSizes(opts: ResvTableOptions, prefix = ''): { objects: number; listBytes: number } {
  return {
    objects: opts.objects === undefined ? RESV_OBJECTS_DEFAULT : validateInteger(opts.objects, `${prefix}objects`, RESV_OBJECTS_MIN, RESV_OBJECTS_MAX),
    listBytes: opts.listBytes === undefined ? RESV_LIST_BYTES_DEFAULT : validateInteger(opts.listBytes, `${prefix}listBytes`, RESV_LIST_BYTES_MIN, RESV_LIST_BYTES_MAX),
  };
}

/** Thrown when the table has no free object: never silent, it names the option that makes it bigger. */
export class ResvTableFullError extends Error {
  readonly code = 'ENOMEM';
  constructor(message: string) {
    super(message);
    this.name = 'ResvTableFullError';
  }
}

let created = 0;

/** Creates a reservation table (the broker at boot, or a standalone one for a thread with none attached). */
export function createResvTable(opts: ResvTableOptions = {}): SharedArrayBuffer {
  const { objects, listBytes } = resvTableSizes(opts);
  const arenaUnits = Math.floor(listBytes / 8);
  const sab = new SharedArrayBuffer(OBJ_BYTE + objects * OBJ_BYTES + arenaUnits * 8);
  const i32 = new Int32Array(sab);
  i32[T_VERSION] = RESV_TABLE_VERSION;
  i32[T_NOBJ] = objects;
  i32[T_ARENA_UNITS] = arenaUnits;
  i32[T_ID0] = threadId;
  i32[T_ID1] = ++created;
  i32[T_ID2] = Math.floor(performance.timeOrigin) | 0;
  i32[T_BUMP] = 1; // unit 0 means "no list"
  // Every object on the free list, in index order; generations start at 1.
  for (let i = 0; i < objects; i++) {
    const b = (OBJ_BYTE + i * OBJ_BYTES) / 4;
    i32[b + O_GEN] = 1;
    i32[b + O_NEXT] = i + 1 < objects ? i + 2 : 0;
  }
  i32[T_OBJ_FREE_B / 4] = 1;
  Atomics.store(i32, T_MAGIC, RESV_TABLE_MAGIC);
  return sab;
}

/** kmalloc_size_roundup's bucket index for a list of `maxFences`, or -1 when it is beyond the largest bucket. */
export function listClass(maxFences: number): number {
  const size = LIST_HEADER_BYTES + 8 * maxFences;
  for (let c = 0; c < NCLASSES; c++) if (size <= LIST_BUCKETS[c]!) return c;
  return -1;
}

/** max_fences of a list in bucket `c`: what fits after the header (dma_resv_list_alloc's recomputation). */
export function classCapacity(c: number): number {
  return Math.floor((LIST_BUCKETS[c]! - LIST_HEADER_BYTES) / 8);
}

/** One live reservation object, for leak reports and debugging. */
export interface ResvInfo {
  readonly id: number;
  readonly origin: string;
  readonly serial: number;
  readonly creator: number;
  readonly thread: number;
  readonly numFences: number;
  readonly locked: boolean;
}

/** Freed chunks a worker keeps per bucket for its own next allocations (see ResvTable.cache). */
export const LOCAL_CACHE = 8;

/** An id names (index, gen): gen · 2^22 + index, below 2^53 for every gen a 31-bit word can hold. */
export const RESV_ID_SPAN = 1 << 22;

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * A lock-free stack of 64-bit tagged heads (tag << 32 | value): pops and pushes are compareExchanges that bump the
 * tag, so a head popped and pushed back meanwhile (ABA) makes a stale swap fail. `link(v)` is the Int32 word
 * holding the next value of entry v (written while the entry is ours).
 */
function popTagged(i32: Int32Array, i64: BigInt64Array, headByte: number, link: (v: number) => number, valid: (v: number) => boolean): number {
  const lo = headByte / 4;
  for (;;) {
    // The two halves are read separately (cheap Int32 loads); a torn pair just makes the 64-bit swap fail.
    const v = Atomics.load(i32, lo);
    const tag = Atomics.load(i32, lo + 1);
    if (v === 0) return 0;
    if (!valid(v)) BUG(`dma_resv table: free-list head ${v} is not an entry of the table (corrupted table memory?)`);
    const next = Atomics.load(i32, link(v));
    const h = (BigInt(tag) << 32n) | BigInt(v >>> 0);
    const nh = (BigInt((tag + 1) | 0) << 32n) | BigInt(next >>> 0);
    if (Atomics.compareExchange(i64, headByte / 8, h, nh) === h) return v;
  }
}

function pushTagged(i32: Int32Array, i64: BigInt64Array, headByte: number, v: number, link: number): void {
  const lo = headByte / 4;
  for (;;) {
    const top = Atomics.load(i32, lo);
    const tag = Atomics.load(i32, lo + 1);
    Atomics.store(i32, link, top);
    const h = (BigInt(tag) << 32n) | BigInt(top >>> 0);
    const nh = (BigInt((tag + 1) | 0) << 32n) | BigInt(v >>> 0);
    if (Atomics.compareExchange(i64, headByte / 8, h, nh) === h) return;
  }
}

/**
 * One worker's view of a reservation table: typed views, geometry (read once), and the views of the resvs this
 * worker has touched (dma-resv.ts keeps them in `views`). Obtain with attachResvTable().
 */
export class ResvTable {
  readonly i32: Int32Array;
  readonly i64: BigInt64Array;
  readonly u8: Uint8Array;
  readonly nobj: number;
  readonly arenaUnits: number;
  readonly arenaByte: number;
  /** The table's identity (T_ID*), equal in every worker. */
  readonly tableId: string;
  /** Per-worker cache of resv views by object index (dma-resv.ts). */
  readonly views: unknown[] = [];
  /**
   * This worker's freed chunks, per bucket (at most LOCAL_CACHE each), handed out again before the shared free
   * lists: a driver's lock / reserve / add / unlock cycle replaces its list every time (reservations are forgotten
   * at unlock), and this keeps that cycle off the shared heads. A cached chunk counts as in use (T_LISTS); a worker
   * that dies loses its cache — at most LOCAL_CACHE chunks per bucket, never a corruption.
   */
  private readonly cache: number[][] = Array.from({ length: NCLASSES }, () => []);

  constructor(readonly sab: SharedArrayBuffer) {
    if (!(sab instanceof SharedArrayBuffer) || sab.byteLength < HEADER_BYTES) {
      throw Object.assign(new TypeError('The "table" argument must be a dma_resv table SharedArrayBuffer'), { code: 'ERR_INVALID_ARG_TYPE' });
    }
    this.i32 = new Int32Array(sab);
    if (Atomics.load(this.i32, T_MAGIC) !== RESV_TABLE_MAGIC || this.i32[T_VERSION] !== RESV_TABLE_VERSION) {
      throw Object.assign(new TypeError('The "table" argument is not a dma_resv table (bad magic or version)'), { code: 'ERR_INVALID_ARG_TYPE' });
    }
    this.i64 = new BigInt64Array(sab, 0, Math.floor(sab.byteLength / 8));
    this.u8 = new Uint8Array(sab);
    this.nobj = this.i32[T_NOBJ]!;
    this.arenaUnits = this.i32[T_ARENA_UNITS]!;
    this.arenaByte = OBJ_BYTE + this.nobj * OBJ_BYTES;
    if (sab.byteLength < this.arenaByte + this.arenaUnits * 8) BUG('dma_resv table: buffer smaller than its geometry');
    this.tableId = `${this.i32[T_ID0]}.${this.i32[T_ID1]}.${this.i32[T_ID2]}`;
  }

  /** Int32 word index of object `index`'s first word. */
  obj(index: number): number {
    return (OBJ_BYTE + index * OBJ_BYTES) >> 2;
  }

  /** Int32 word index of chunk `unit`'s first word. */
  chunk(unit: number): number {
    return (this.arenaByte >> 2) + unit * 2;
  }

  /** BigInt64 index of entry `i` of chunk `unit`. */
  entry(unit: number, i: number): number {
    return (this.arenaByte >> 3) + unit + LIST_HEADER_BYTES / 8 + i;
  }

  /** Entries that fit between chunk `unit`'s header and the end of the arena (a bound for counts read from words). */
  room(unit: number): number {
    return Math.max(0, this.arenaUnits - unit - LIST_HEADER_BYTES / 8);
  }

  /** True when `unit` (read from a shared word) names a chunk start inside the arena. */
  validUnit(unit: number): boolean {
    return unit > 0 && unit < this.arenaUnits && Number.isInteger(unit);
  }

  // ---- objects -----------------------------------------------------------------------------------------------

  /**
   * Allocates an object for a new resv (unlocked, no list), recording `origin`, `creator` and a serial. Returns its
   * index. Throws ResvTableFullError (loudly, naming the option) when every object is in use.
   */
  allocObject(origin: string, creator: number): number {
    const i32 = this.i32;
    const v = popTagged(i32, this.i64, T_OBJ_FREE_B, (x) => this.obj(x - 1) + O_NEXT, (x) => x >= 1 && x <= this.nobj);
    if (v === 0) this.full();
    const index = v - 1;
    const b = this.obj(index);
    const live = Atomics.add(i32, T_LIVE, 1) + 1;
    for (let hw = Atomics.load(i32, T_HIGH); live > hw; hw = Atomics.load(i32, T_HIGH)) {
      if (Atomics.compareExchange(i32, T_HIGH, hw, live) === hw) break;
    }
    Atomics.store(i32, b + O_LIST, 0);
    Atomics.store(i32, b + O_CREATOR, creator);
    Atomics.store(i32, b + O_THREAD, threadId);
    Atomics.store(i32, b + O_SERIAL, Atomics.add(i32, T_SERIAL, 1) + 1);
    let bytes = enc.encode(origin);
    if (bytes.length > ORIGIN_MAX) bytes = bytes.subarray(0, ORIGIN_MAX);
    const at = index * OBJ_BYTES + OBJ_BYTE + O_ORIGIN_BYTE;
    this.u8[at] = bytes.length;
    this.u8.set(bytes, at + 1);
    // Publishes the object (seq-cst, after the plain writes above).
    Atomics.store(i32, b + O_STATE, OBJ_LIVE);
    return index;
  }

  /** Frees object `index` (its list already freed, its lock free): generation bumped first, then pushed. */
  freeObject(index: number): void {
    const i32 = this.i32;
    const b = this.obj(index);
    Atomics.store(i32, b + O_STATE, OBJ_FREE);
    Atomics.add(i32, b + O_GEN, 1);
    if (Atomics.load(i32, b + O_GEN) === 0) Atomics.store(i32, b + O_GEN, 1);
    Atomics.sub(i32, T_LIVE, 1);
    pushTagged(i32, this.i64, T_OBJ_FREE_B, index + 1, b + O_NEXT);
  }

  private full(): never {
    const byOrigin = new Map<string, number>();
    for (const r of this.live()) byOrigin.set(r.origin, (byOrigin.get(r.origin) ?? 0) + 1);
    const who = [...byOrigin.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 6)
      .map(([o, n]) => `${o}: ${n}`)
      .join(', ');
    const msg =
      `dmabuf-sim: dma_resv table full: all ${this.nobj} reservation objects in use (by origin: ${who || 'none'}). ` +
      `Reservation objects are leaking (a missing dma_resv_fini / dma_buf_put?) or the table is too small ` +
      `(Machine.boot({ resv: { objects } }), or createResvTable({ objects }) for a table of your own).`;
    process.stderr.write(`${msg}\n`);
    throw new ResvTableFullError(msg);
  }

  /** The origin string of object `index` (length byte clamped: shared memory is never trusted past the field). */
  origin(index: number): string {
    const at = index * OBJ_BYTES + OBJ_BYTE + O_ORIGIN_BYTE;
    const len = Math.min(this.u8[at]!, ORIGIN_MAX);
    return dec.decode(this.u8.slice(at + 1, at + 1 + len));
  }

  // ---- lists -------------------------------------------------------------------------------------------------

  /**
   * dma_resv_list_alloc: a chunk for at least `maxFences` entries, owned by object `owner`, num_fences 0 and
   * max_fences recomputed from its bucket. Returns its unit, or 0 when the arena has no room (the message, naming
   * the option, is printed: the caller returns -ENOMEM).
   */
  allocList(maxFences: number, owner: number): number {
    const c = listClass(maxFences);
    const i32 = this.i32;
    const cached = c < 0 ? undefined : this.cache[c]!.pop();
    if (cached !== undefined) {
      // Ours alone since we freed it (C_GEN bumped then): C_CLASS still holds c, C_NUM 0.
      const w = this.chunk(cached);
      Atomics.add(i32, w + C_GEN, 1);
      Atomics.store(i32, w + C_OWNER, owner + 1);
      Atomics.store(i32, w + C_MAX, classCapacity(c));
      return cached;
    }
    let unit = c < 0 ? 0 : popTagged(i32, this.i64, T_CLASS_FREE_B + c * 8, (u) => this.chunk(u) + C_NEXT, (u) => this.validUnit(u));
    if (unit === 0 && c >= 0) {
      const units = LIST_BUCKETS[c]! / 8;
      for (;;) {
        const top = Atomics.load(i32, T_BUMP);
        if (top + units > this.arenaUnits) break;
        if (Atomics.compareExchange(i32, T_BUMP, top, top + units) === top) {
          unit = top;
          break;
        }
      }
    }
    if (unit === 0) {
      const msg =
        `dmabuf-sim: dma_resv list arena full: no room for a list of ${maxFences} fences ` +
        `(${Atomics.load(i32, T_LISTS)} lists in use, ${this.arenaUnits * 8} bytes). Fences or reservation objects ` +
        `are leaking, or the arena is too small (Machine.boot({ resv: { listBytes } }), or createResvTable({ listBytes })).`;
      process.stderr.write(`${msg}\n`);
      return 0;
    }
    const w = this.chunk(unit);
    Atomics.add(i32, w + C_GEN, 1);
    Atomics.store(i32, w + C_OWNER, owner + 1);
    Atomics.store(i32, w + C_NUM, 0);
    Atomics.store(i32, w + C_MAX, classCapacity(c));
    Atomics.store(i32, w + C_CLASS, c);
    Atomics.add(i32, T_LISTS, 1);
    return unit;
  }

  /**
   * Frees chunk `unit` (unpublished already: no O_LIST names it). C_GEN is bumped before the chunk can be reused, so
   * an unlocked reader still walking it notices (dma-resv.ts). The entries are not touched: their references were
   * put or handed over by the caller.
   */
  freeList(unit: number): void {
    const i32 = this.i32;
    const w = this.chunk(unit);
    const c = Atomics.load(i32, w + C_CLASS);
    if (!(c >= 0 && c < NCLASSES)) BUG(`dma_resv table: list at unit ${unit} has bucket ${c} (corrupted table memory?)`);
    Atomics.add(i32, w + C_GEN, 1);
    Atomics.store(i32, w + C_OWNER, 0);
    Atomics.store(i32, w + C_NUM, 0);
    const local = this.cache[c]!;
    if (local.length < LOCAL_CACHE) {
      local.push(unit);
      return;
    }
    Atomics.sub(i32, T_LISTS, 1);
    pushTagged(i32, this.i64, T_CLASS_FREE_B + c * 8, unit, w + C_NEXT);
  }

  // ---- reports -----------------------------------------------------------------------------------------------

  /** Objects and lists in use, and the most objects ever in use. */
  usage(): { live: number; highWater: number; objects: number; lists: number; listBytes: number } {
    const i32 = this.i32;
    return { live: Atomics.load(i32, T_LIVE), highWater: Atomics.load(i32, T_HIGH), objects: this.nobj, lists: Atomics.load(i32, T_LISTS), listBytes: this.arenaUnits * 8 };
  }

  /** Every live reservation object, with where it was made (leak reports). */
  live(): ResvInfo[] {
    const out: ResvInfo[] = [];
    const i32 = this.i32;
    for (let i = 0; i < this.nobj; i++) {
      const b = this.obj(i);
      if (Atomics.load(i32, b + O_STATE) !== OBJ_LIVE) continue;
      const unit = Atomics.load(i32, b + O_LIST);
      out.push({
        id: Atomics.load(i32, b + O_GEN) * RESV_ID_SPAN + i,
        origin: this.origin(i),
        serial: Atomics.load(i32, b + O_SERIAL),
        creator: Atomics.load(i32, b + O_CREATOR),
        thread: Atomics.load(i32, b + O_THREAD),
        numFences: this.validUnit(unit) ? Atomics.load(i32, this.chunk(unit) + C_NUM) : 0,
        locked: Atomics.load(i32, b + O_LOCK) !== 0,
      });
    }
    return out;
  }
}

/** Leak report lines for live reservation objects (empty string when there are none). */
export function formatResvLeaks(resvs: readonly ResvInfo[]): string {
  if (resvs.length === 0) return '';
  let s = `${resvs.length} live dma_resv object(s):\n`;
  for (const r of resvs) {
    s += `  dma_resv ${r.id} ${r.numFences} fence(s)${r.locked ? ' locked' : ''} created by ${r.origin} (thread ${r.thread}, serial ${r.serial})\n`;
  }
  return s;
}

/** Live reservation objects of a table, without attaching to it. */
export function liveResvs(sab: SharedArrayBuffer): ResvInfo[] {
  return new ResvTable(sab).live();
}
