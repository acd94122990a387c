/**
 * The shared fence table: per machine (created by the broker at boot, attachable by any worker that is handed it)
 * every dma_fence's state in a fixed-size slot, so that a fence is a word any worker can Atomics.wait on and a
 * signal wakes — with no broker round trip — plus the kernel-owned state in a buffer of its own.
 *
 * This module is only the shared-memory layer: layout, slot allocator, context counter, names table, callback
 * doorbells. The dma_fence semantics on top of it live in src/fence/dma-fence*.ts.
 *
 * ## Two buffers: what fence users share, and what the kernel owns
 *
 * A machine's table is split (createSplitFenceTable): `table`, which every process is handed (the fast wait path
 * needs the fence words), holds only what waiting and signalling use — the slots, the doorbells, the geometry;
 * `kernel`, handed only to kernel-side workers (the broker, the main thread, processes spawned with
 * { kernelFences: true } that play drivers), holds the kernel-owned state: the names table and its lock, the alive
 * table, the counters, the slot allocator and each slot's names id. A process can write every word of what it is
 * handed, so none of that may live in `table`. A worker attached without the kernel state is wait-only
 * (FenceWaitOnlyError on every kernel operation). A standalone table (createFenceTable: tests, tools) keeps both
 * in one buffer, the kernel state at byte H_KSTATE_BYTE.
 *
 * ## `table` layout (byte offsets)
 *
 *   0                      header, HEADER_BYTES (word offsets H_* below)
 *   HEADER_BYTES           slots: nslots × SLOT_BYTES; slot 0 is the global signaled stub (context 0)
 *   (standalone only)      the kernel state, at H_KSTATE_BYTE
 *
 * ## Header (Int32 word offsets unless noted; all accessed with Atomics)
 *
 *   H_MAGIC, H_VERSION, H_NSLOTS, H_NAMES_CAP   immutable after creation (kernel-side workers read the kernel
 *                                                state's copies: processes can write these)
 *   H_KSTATE_BYTE  byte offset of the kernel state in this buffer (standalone tables); 0 = a separate buffer
 *   words 16..31  H_SPIN         a spin slot block (layout in src/shm/spin.ts), used when a worker attaches
 *                                without the machine's control block
 *   words 32..63  H_DOORBELLS    32 callback doorbells, one per worker bucket (attach id mod 32)
 *   byte 256 f64 H_EPOCH_B       the machine clock's epoch (see clock.ts)
 *
 * ## Kernel state (Int32 words K_* from its start; 64-bit words at the byte offsets named *_B)
 *
 *   K_MAGIC         FENCE_KSTATE_MAGIC once initialised
 *   K_NSLOTS, K_NAMES_CAP   the geometry, immutable (the copy kernel-side workers trust)
 *   K_NAMES_COUNT   names entries ever used (the part of the table below it has been written at least once)
 *   K_NAMES_LOCK    0 free, else the holder's owner token (| LOCK_WAITERS while someone may sleep on it): a
 *                   robust lock serialising allocating and freeing names entries (readers never take it); see
 *                   lockNames
 *   K_NAMES_FREE    head of the free names entries (NE_LINK chain; −1 = none), under K_NAMES_LOCK
 *   K_NAMES_LIVE    names entries in use (fixed ones included), for diagnostics
 *   K_LIVE          slots in use (fences + array extension slots); K_HIGH_WATER its maximum
 *   K_NEXT_ATTACH   attach ids handed to kernel-side workers (creator ids, doorbell buckets)
 *   K_SERIAL        creation serial of the last fence (for leak reports)
 *   K_KERNEL_OWNER  the broker's owner token in the alive table (0 = none: a table without a machine)
 *   byte 48  i64 K_FREE_HEAD_B   free-list head: (tag << 32) | index, index 0xffffffff = empty (see allocSlot)
 *   byte 56  i64 K_CONTEXT_B     the fence context counter; starts at 1 (context 0 is the stub)
 *   words 64..   K_ALIVE         the "who is alive" table, ALIVE_WORDS words (layout in src/shm/alive.ts)
 *   K_NAMES_BYTE                 names table: namesCap × NAME_ENTRY_BYTES, refcounted interned (driver, timeline)
 *                                pairs
 *   then (64-aligned)            KS_WORDS words per slot: KS_NEXT_FREE (free-list next while the slot is free),
 *                                KS_NAME_ID (index of the fence's names entry; NAME_ID_STUB for extension slots),
 *                                KS_SIGNALLER (owner token of the worker annotated as the fence's signaller, 0 =
 *                                unknown: dma_fence_set_signaller, read by the lock watchdog)
 *
 * ## Slot (Int32 words S_*, 64-bit words S64_* in units of 8 bytes from the slot start)
 *
 *   S_SIGNAL      0 pending → 1 signaled, exactly once per fence lifetime. THE word waiters Atomics.wait on; the
 *                 signaller claims the fence by compareExchange(0 → 1) and then notifies.
 *   S_GEN         slot generation: +1 every time the slot is freed, so a handle (index, gen) of a released fence
 *                 never matches the slot's next occupant.
 *   S_FLAGS       F_* bits (Atomics.or) | kind << KIND_SHIFT
 *   S_REFCOUNT    kref; −1 while the slot is free or being freed (so get_unless_zero fails on it). A fence at 0
 *                 with S_CB_PENDING > 0 is a zombie: released, kept until its queued callbacks ran or were removed
 *   S_LINK        first extension slot of an array; next extension of an extension
 *   S_ERROR       0 or −errno (set_error); arrays hold PENDING_ERROR (1) until they signal. Extension slots: count
 *   S_CB_PENDING  callbacks registered on this fence (in any worker) not yet run or removed
 *   S_WAITERS     bitmask of doorbell buckets to ring when the fence signals (callback owners, multi-waiters)
 *   word 8        unused by plain fences (the names id is kernel state: KS_NAME_ID)
 *   S_NUM_FENCES  arrays: number of components
 *   S_CREATOR     attach id of the worker that created the fence
 *   S_SERIAL      machine-wide creation serial
 *   S64_CONTEXT   u64 fence context          S64_SEQNO       u64 seqno
 *   S64_TIMESTAMP i64 signal time in ns + 1; 0 = not published yet. Installed with compareExchange(0 → t + 1)
 *                 by the signaller — or by a reader that finds the fence signaled without it (the signaller died
 *                 between its S_SIGNAL compareExchange and this store): one install wins, so they cannot conflict
 *   S64_DEADLINE  i64 earliest deadline requested, ns (valid when F_HAS_DEADLINE)
 *   S64_PREV      chains: handle of the previous link (0 = none), swapped with compareExchange by the walk's GC
 *   S64_FENCE     chains: handle of the link's fence     S64_PREV_SEQNO  chains: u64 prev_seqno
 *   Extension slots (KIND_EXT, arrays' component lists): handles at S64_EXT_FIRST.. (EXT_HANDLES per slot).
 *
 * A handle is the i64 (gen << 32) | index; gen ≥ 1 always, so 0 means "no fence".
 *
 * ## Names entry (NAME_ENTRY_BYTES from K_NAMES_BYTE + id × NAME_ENTRY_BYTES, in the kernel state)
 *
 *   i32 NE_REF    references: one per fence slot naming the entry, plus one per interner between intern and
 *                 createSlot; 0 = being freed, −1 = free. The fixed entries (stub, array, chain) stay at 1 forever.
 *   i32 NE_GEN    +1 every time the entry is freed: a worker's cached (id, gen) of a freed entry never matches its
 *                 next occupant, so a cache never hands out a freed-and-reused id.
 *   i32 NE_LINK   next free entry while free
 *   u8[64] driver, u8[64] timeline: a length byte then up to NAME_MAX UTF-8 bytes; written while the entry is
 *                 free and owned by the allocator (under the names lock), published by the NE_REF store of 1.
 */
import { BUG, warn } from '../bug.js';
import { availableParallelism } from 'node:os';
import { threadId } from 'node:worker_threads';
import { ALIVE_WORDS, AliveTable, TOKEN_MASK } from '../shm/alive.js';
import { initSpinBlock, SPIN_BLOCK_WORDS } from '../shm/spin.js';
import { machineEpochNow } from '../shm/clock.js';
import { validateInteger } from '../validate.js';

// ---- header ----------------------------------------------------------------------------------------------------

export const FENCE_TABLE_MAGIC = 0x66656e63; // 'fenc'
export const FENCE_TABLE_VERSION = 3;

export const H_MAGIC = 0;
export const H_VERSION = 1;
export const H_NSLOTS = 2;
export const H_NAMES_CAP = 3;
/** Byte offset of the kernel state inside this same buffer (a standalone table), or 0: a separate buffer. */
export const H_KSTATE_BYTE = 4;
export const H_SPIN = 16;
export const H_SPIN_WORDS = SPIN_BLOCK_WORDS;
export const H_DOORBELLS = 32;
export const DOORBELL_BUCKETS = 32;
export const H_EPOCH_B = 256;
export const HEADER_BYTES = 320;
/** Lock words (K_NAMES_LOCK, dma_resv's RL_STATE): the owner token plus this bit while a waiter may sleep. */
export const LOCK_WAITERS = 1 << 30;
/** How long a lock waiter sleeps before it re-checks the owner's liveness (ms). */
export const LOCK_SLICE_MS = 50;

// ---- kernel state --------------------------------------------------------------------------------------------

export const FENCE_KSTATE_MAGIC = 0x66656e6b; // 'fenk'
export const K_MAGIC = 0;
export const K_NAMES_COUNT = 1;
export const K_NAMES_LOCK = 2;
export const K_NAMES_FREE = 3;
export const K_NAMES_LIVE = 4;
export const K_LIVE = 5;
export const K_HIGH_WATER = 6;
export const K_NEXT_ATTACH = 7;
export const K_SERIAL = 8;
/** The broker's owner token in the alive table (0 = none: a table without a machine). */
export const K_KERNEL_OWNER = 9;
export const K_FREE_HEAD_B = 48;
export const K_CONTEXT_B = 56;
export const K_NSLOTS = 10;
export const K_NAMES_CAP = 11;
export const K_ALIVE = 64;
/** Byte offset (from the kernel state's start) of the names table. */
export const K_NAMES_BYTE = (((K_ALIVE + ALIVE_WORDS) * 4 + 63) & ~63) >>> 0;
/** Kernel words per fence slot (KS_*), from kernelSlotsByte(). */
export const KS_WORDS = 3;
export const KS_NEXT_FREE = 0;
export const KS_NAME_ID = 1;
/** The fence's annotated signaller: an owner token (0 = unknown), read by the lock watchdog (src/locking). */
export const KS_SIGNALLER = 2;

/** Byte offset (from the kernel state's start) of the per-slot kernel words. */
function kernelSlotsByte(namesCap: number): number {
  return (K_NAMES_BYTE + namesCap * NAME_ENTRY_BYTES + 63) & ~63;
}

/** Bytes of a table's kernel state. */
export function kernelStateBytes(nslots: number, namesCap: number): number {
  return (kernelSlotsByte(namesCap) + nslots * KS_WORDS * 4 + 63) & ~63;
}

/**
 * A worker attached to the table wait-only (a plain machine process) tried what only the kernel side may: create
 * a fence, intern or free names, allocate contexts.
 */
export class FenceWaitOnlyError extends Error {
  readonly code = 'ERR_DMABUF_SIM_FENCE_WAIT_ONLY';
  constructor(what: string) {
    super(
      `dmabuf-sim: ${what}: this worker is attached to the fence table wait-only (a plain process: it may wait on ` +
        `fences, not create or free them). Creating fences is the kernel's; a test process that plays a driver ` +
        `is spawned with Machine.spawn(module, { kernelFences: true }).`,
    );
    this.name = 'FenceWaitOnlyError';
  }
}

// ---- names ---------------------------------------------------------------------------------------------------

/** One string of a names entry: a length byte then up to NAME_MAX UTF-8 bytes. */
export const NAME_STR_BYTES = 64;
export const NAME_MAX = NAME_STR_BYTES - 1;
/** Bytes of an entry's words (NE_*) before its strings. */
export const NAME_WORDS_BYTES = 16;
export const NAME_ENTRY_BYTES = NAME_WORDS_BYTES + 2 * NAME_STR_BYTES;
export const NE_REF = 0;
export const NE_GEN = 1;
export const NE_LINK = 2;
/** Names interned at creation, at fixed ids. */
export const NAME_ID_STUB = 0;
export const NAME_ID_ARRAY = 1;
export const NAME_ID_CHAIN = 2;
/** The first id interning hands out; ids below it are fixed and never freed (no reference counting). */
export const NAME_ID_FIRST_DYNAMIC = 3;

// ---- slots ---------------------------------------------------------------------------------------------------

export const SLOT_BYTES = 128;
export const SLOT_WORDS = SLOT_BYTES / 4;

export const S_SIGNAL = 0;
export const S_GEN = 1;
export const S_FLAGS = 2;
export const S_REFCOUNT = 3;
export const S_LINK = 4;
export const S_ERROR = 5;
export const S_CB_PENDING = 6;
export const S_WAITERS = 7;
export const S_NUM_FENCES = 9;
export const S_CREATOR = 10;
export const S_SERIAL = 11;
/** Extension slots keep their handle count here (S_ERROR is unused in them). */
export const S_EXT_COUNT = S_ERROR;

export const S64_CONTEXT = 8;
export const S64_SEQNO = 9;
export const S64_TIMESTAMP = 10;
export const S64_DEADLINE = 11;
export const S64_PREV = 12;
export const S64_FENCE = 13;
export const S64_PREV_SEQNO = 14;
export const S64_EXT_FIRST = 4;
export const EXT_HANDLES = SLOT_BYTES / 8 - S64_EXT_FIRST;

/** dma_fence flag bits (kernel names where they exist). */
export const F_SIGNALED = 1 << 0;
export const F_TIMESTAMP = 1 << 1;
export const F_ENABLE_SIGNAL = 1 << 2;
export const F_SEQNO64 = 1 << 3;
export const F_SIGNAL_ON_ANY = 1 << 4;
export const F_HAS_DEADLINE = 1 << 5;
/** A stub: the global one (slot 0) or a private one (dma_fence_allocate_private_stub). */
export const F_STUB = 1 << 7;
export const KIND_SHIFT = 8;
export const KIND_MASK = 0x7;

export const KIND_FREE = 0;
export const KIND_PLAIN = 1;
export const KIND_ARRAY = 2;
export const KIND_CHAIN = 3;
export const KIND_EXT = 4;
export const KIND_NAMES = ['free', 'fence', 'array', 'chain', 'ext'] as const;

/** Arrays' error while unsignaled, as dma-fence-array.c's PENDING_ERROR. */
export const PENDING_ERROR = 1;

const NIL = 0xffffffff;
const STUB_INDEX = 0;

/** Default and allowed table sizes (Machine.boot({ fences: { slots, names } }), createFenceTable). */
export const FENCE_SLOTS_DEFAULT = 32768;
export const FENCE_SLOTS_MIN = 2;
/** 512 MiB of slots. */
export const FENCE_SLOTS_MAX = 1 << 22;
export const FENCE_NAMES_DEFAULT = 256;
/** The three fixed entries (stub, array, chain) and at least one more. */
export const FENCE_NAMES_MIN = 4;
export const FENCE_NAMES_MAX = 1 << 16;

export interface FenceTableOptions {
  /**
   * Number of fence slots (default 32768, 4 MiB; FENCE_SLOTS_MIN..FENCE_SLOTS_MAX). The global stub takes one;
   * arrays use ⌈n / EXT_HANDLES⌉ extra slots for n components.
   */
  readonly slots?: number;
  /** Capacity of the names table: distinct (driver, timeline) pairs alive at once (default 256). */
  readonly names?: number;
  /** Waiters allowed to spin at once when a worker attaches without the machine control block (default vCPUs − 1). */
  readonly maxSpinners?: number;
}

/** Thrown when the table has no free slot: never silent, it names who holds the slots. */
export class FenceTableFullError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FenceTableFullError';
  }
}

/** One live slot, for leak reports and debugging. */
export interface FenceInfo {
  readonly index: number;
  readonly gen: number;
  readonly kind: (typeof KIND_NAMES)[number];
  readonly context: number;
  readonly seqno: bigint;
  readonly refcount: number;
  readonly cbPending: number;
  readonly signaled: boolean;
  readonly error: number;
  readonly driver: string;
  readonly timeline: string;
  readonly creator: number;
  readonly serial: number;
  readonly zombie: boolean;
}

/**
 * Checks one table size the way Node checks its arguments (src/validate.ts): a non-number is a TypeError
 * (ERR_INVALID_ARG_TYPE), a number that is not an integer in [min, max] a RangeError (ERR_OUT_OF_RANGE); both
 * name `field`. Returns the value.
 */
export function checkTableSize(field: string, value: unknown, min: number, max: number): number {
  return validateInteger(value, field, min, max);
}

/**
 * The slot and names counts of `opts`, validated (defaults filled in). `prefix` names the option object in the
 * errors ('fences.' for Machine.boot).
 */
export function fenceTableSizes(opts: FenceTableOptions, prefix = ''): { slots: number; names: number } {
  return {
    slots: opts.slots === undefined ? FENCE_SLOTS_DEFAULT : checkTableSize(`${prefix}slots`, opts.slots, FENCE_SLOTS_MIN, FENCE_SLOTS_MAX),
    names: opts.names === undefined ? FENCE_NAMES_DEFAULT : checkTableSize(`${prefix}names`, opts.names, FENCE_NAMES_MIN, FENCE_NAMES_MAX),
  };
}

/**
 * Creates a standalone fence table (tests, tools, a table of your own): one SharedArrayBuffer holding the shared
 * part and the kernel state (H_KSTATE_BYTE), so every worker handed it may create fences. A machine's table is
 * split instead (createSplitFenceTable).
 */
export function createFenceTable(opts: FenceTableOptions = {}): SharedArrayBuffer {
  return buildFenceTable(opts, false).table;
}

/**
 * Creates a machine's fence table (once per machine, by the broker at boot) in two buffers: `table`, the slots,
 * doorbells and geometry every fence user needs (every process is handed it), and `kernel`, the kernel-owned state
 * (names table and its lock, the alive table, the counters, the slot allocator, each slot's names id) that only
 * kernel-side workers are handed. A worker attached without `kernel` is wait-only.
 */
export function createSplitFenceTable(opts: FenceTableOptions = {}): { table: SharedArrayBuffer; kernel: SharedArrayBuffer } {
  const r = buildFenceTable(opts, true);
  return { table: r.table, kernel: r.kernel };
}

function buildFenceTable(opts: FenceTableOptions, split: boolean): { table: SharedArrayBuffer; kernel: SharedArrayBuffer } {
  const { slots: nslots, names: namesCap } = fenceTableSizes(opts);
  const publicBytes = HEADER_BYTES + nslots * SLOT_BYTES;
  const kBytes = kernelStateBytes(nslots, namesCap);
  const sab = new SharedArrayBuffer(split ? publicBytes : publicBytes + kBytes);
  const ksab = split ? new SharedArrayBuffer(kBytes) : sab;
  const kOff = split ? 0 : publicBytes;
  const i32 = new Int32Array(sab);
  const i64 = new BigInt64Array(sab);
  const f64 = new Float64Array(sab);
  const k = new Int32Array(ksab, kOff, kBytes / 4);
  const k64 = new BigInt64Array(ksab, kOff, kBytes / 8);
  i32[H_VERSION] = FENCE_TABLE_VERSION;
  i32[H_NSLOTS] = nslots;
  i32[H_NAMES_CAP] = namesCap;
  i32[H_KSTATE_BYTE] = kOff;
  initSpinBlock(new Int32Array(sab, H_SPIN * 4, H_SPIN_WORDS), opts.maxSpinners ?? Math.max(1, availableParallelism() - 1));
  f64[H_EPOCH_B / 8] = machineEpochNow();
  k64[K_CONTEXT_B / 8] = 1n;
  // Every slot starts free with generation 1 (so no handle is ever 0) and a dead refcount.
  const slot0 = HEADER_BYTES / 4;
  const ks0 = kernelSlotsByte(namesCap) / 4;
  for (let i = 0; i < nslots; i++) {
    const b = slot0 + i * SLOT_WORDS;
    i32[b + S_GEN] = 1;
    i32[b + S_REFCOUNT] = -1;
    i32[b + S_LINK] = -1;
    k[ks0 + i * KS_WORDS + KS_NEXT_FREE] = i + 1 < nslots ? i + 1 : -1;
  }
  // Free list: 1 → 2 → … → nslots − 1 (slot 0 is the stub), tag 0.
  k64[K_FREE_HEAD_B / 8] = BigInt(nslots > 1 ? 1 : NIL); // low word 0xffffffff (-1 as Int32) = empty
  // Every names entry starts free with generation 1; the fixed ones are written and hold one permanent reference.
  for (let id = 0; id < namesCap; id++) {
    const w = nameWord(id);
    k[w + NE_REF] = -1;
    k[w + NE_GEN] = 1;
  }
  k[K_NSLOTS] = nslots;
  k[K_NAMES_CAP] = namesCap;
  k[K_MAGIC] = FENCE_KSTATE_MAGIC;
  const t = new FenceTable(sab, split ? ksab : null, false);
  t.writeNames(NAME_ID_STUB, 'stub', 'stub');
  t.writeNames(NAME_ID_ARRAY, 'dma_fence_array', 'unbound');
  t.writeNames(NAME_ID_CHAIN, 'dma_fence_chain', 'unbound');
  for (let id = 0; id < NAME_ID_FIRST_DYNAMIC; id++) k[nameWord(id) + NE_REF] = 1;
  k[K_NAMES_COUNT] = NAME_ID_FIRST_DYNAMIC;
  k[K_NAMES_LIVE] = NAME_ID_FIRST_DYNAMIC;
  k[K_NAMES_FREE] = -1;
  // The global stub: signaled at the epoch, context 0, seqno 0, one reference held by the table itself.
  const b = slot0;
  i32[b + S_SIGNAL] = 1;
  i32[b + S_FLAGS] = (KIND_PLAIN << KIND_SHIFT) | F_SIGNALED | F_TIMESTAMP | F_ENABLE_SIGNAL | F_STUB;
  k[ks0 + KS_NAME_ID] = NAME_ID_STUB;
  i32[b + S_REFCOUNT] = 1;
  // Signaled at the epoch: ktime 0, published in S64_TIMESTAMP's encoding (t + 1; 0 would read as "not published").
  i64[(b >> 1) + S64_TIMESTAMP] = 1n;
  k[K_LIVE] = 1;
  k[K_HIGH_WATER] = 1;
  // Published last: an attach that sees the magic sees everything above.
  Atomics.store(i32, H_MAGIC, FENCE_TABLE_MAGIC);
  return { table: sab, kernel: ksab };
}

/** Int32 index (in the kernel state view) of names entry `id`'s first word. */
function nameWord(id: number): number {
  return (K_NAMES_BYTE + id * NAME_ENTRY_BYTES) / 4;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Typed views over a fence table and the operations on its shared state. One instance per worker and table.
 * With kernel state (a standalone table's own, or a machine table's `kernel` buffer) the worker may create and
 * free fences; without it the worker is wait-only: every kernel operation throws FenceWaitOnlyError.
 */
export class FenceTable {
  readonly i32: Int32Array;
  readonly i64: BigInt64Array;
  readonly u64: BigUint64Array;
  readonly f64: Float64Array;
  readonly nslots: number;
  readonly namesCap: number;
  /** Int32 index of slot 0's first word. */
  readonly slot0: number;
  /** The table's own spin slot block (src/shm/spin.ts), for workers attached without a machine control block. */
  readonly spinControl: Int32Array;
  /** The kernel state's Int32 view (K_* words, names entries, per-slot KS_* words), or null: wait-only. */
  readonly k: Int32Array | null;
  private readonly k64: BigInt64Array | null;
  private readonly ku8: Uint8Array | null;
  /** Int32 index (in `k`) of slot 0's kernel words. */
  private readonly ks0: number;
  /** The "who is alive" table (src/shm/alive.ts), in the kernel state; null when wait-only. */
  readonly alive: AliveTable | null;
  /**
   * This worker's owner token, stamped in lock words it takes (set by FenceRuntime at attach; an untracked id
   * until then).
   */
  owner: number;
  /**
   * How long this worker may wait for the names lock, or null for as long as it takes (bounded slices). The
   * broker sets one (FenceRuntime, eventLoop): processes that play drivers are handed the kernel state, so the
   * kernel must not stall behind one that holds the lock, or writes a live-looking owner into it, and never lets go.
   */
  namesLockTimeoutMs: number | null = null;
  /** This worker's cache of interned pairs: key → (id, gen), validated against NE_GEN on every use. */
  private readonly nameKeys = new Map<string, { readonly id: number; readonly gen: number }>();
  /** This worker's cache of entries' strings, by id, with the generation they were read at. */
  private readonly nameCache: ({ readonly gen: number; readonly pair: [string, string] } | undefined)[] = [];

  /**
   * @param kernel  the machine table's kernel state buffer (kernel-side workers only); null or absent: the
   *                table's own inline kernel state when it is a standalone table, else wait-only
   */
  constructor(
    readonly sab: SharedArrayBuffer,
    kernel: SharedArrayBuffer | null = null,
    check = true,
  ) {
    this.i32 = new Int32Array(sab);
    this.i64 = new BigInt64Array(sab);
    this.u64 = new BigUint64Array(sab);
    this.f64 = new Float64Array(sab);
    // A kernel-side worker of a machine table trusts only the kernel state (processes can write this header).
    if (!kernel && check && Atomics.load(this.i32, H_MAGIC) !== FENCE_TABLE_MAGIC) throw new Error('not a fence table');
    if (!kernel && this.i32[H_VERSION] !== FENCE_TABLE_VERSION) throw new Error(`fence table version ${this.i32[H_VERSION]}`);
    // The header is process-writable: never believe a slot count the buffer cannot hold.
    this.nslots = Math.max(1, Math.min(this.i32[H_NSLOTS]! | 0, Math.floor((sab.byteLength - HEADER_BYTES) / SLOT_BYTES)));
    this.slot0 = HEADER_BYTES / 4;
    this.spinControl = new Int32Array(sab, H_SPIN * 4, H_SPIN_WORDS);
    const kOff = kernel ? 0 : this.i32[H_KSTATE_BYTE]! | 0;
    const ksab = kernel ?? (kOff > 0 && kOff % 8 === 0 && kOff < sab.byteLength ? sab : null);
    this.k = ksab ? new Int32Array(ksab, kOff) : null;
    if (this.k && this.k[K_MAGIC] !== FENCE_KSTATE_MAGIC) throw new Error('not a fence table\'s kernel state');
    this.k64 = ksab ? new BigInt64Array(ksab, kOff) : null;
    this.ku8 = ksab ? new Uint8Array(ksab, kOff) : null;
    // Kernel-side geometry comes from the kernel state (processes cannot change it there).
    this.namesCap = this.k ? this.k[K_NAMES_CAP]! : 0;
    if (this.k) this.nslots = this.k[K_NSLOTS]!;
    this.ks0 = this.k ? kernelSlotsByte(this.namesCap) / 4 : 0;
    this.alive = this.k ? new AliveTable(this.k, K_ALIVE) : null;
    this.owner = untrackedOwner();
  }

  /** True when this worker holds the kernel state (may create and free fences). */
  get kernelSide(): boolean {
    return this.k !== null;
  }

  /** The kernel state's Int32 view; throws FenceWaitOnlyError (naming `what`) in a wait-only worker. */
  kernelWords(what: string): Int32Array {
    if (!this.k) throw new FenceWaitOnlyError(what);
    return this.k;
  }

  /** Index in `k` of slot `index`'s kernel words (KS_*). */
  private ks(index: number): number {
    return this.ks0 + index * KS_WORDS;
  }

  /** The names id of the fence in slot `index` (kernel state; −1, which prints as '?', when wait-only). */
  slotNameId(index: number): number {
    const k = this.k;
    return k ? Atomics.load(k, this.ks(index) + KS_NAME_ID) : -1;
  }

  /** The owner token annotated as slot `index`'s signaller (0: unknown, or a wait-only view that cannot read it). */
  slotSignaller(index: number): number {
    const k = this.k;
    return k ? Atomics.load(k, this.ks(index) + KS_SIGNALLER) : 0;
  }

  /** Annotates slot `index`'s signaller (kernel-side workers: the fence's creator, a driver, sw_sync). */
  setSlotSignaller(index: number, owner: number): void {
    Atomics.store(this.kernelWords('dma_fence_set_signaller'), this.ks(index) + KS_SIGNALLER, owner);
  }

  /** Sets slot `index`'s names id (createSlot, the slot's creator). */
  setSlotNameId(index: number, id: number): void {
    Atomics.store(this.kernelWords('dma_fence_init'), this.ks(index) + KS_NAME_ID, id);
  }

  /** The machine clock's epoch (ms on the timeOrigin scale). */
  get epochMs(): number {
    return this.f64[H_EPOCH_B / 8]!;
  }

  /** Int32 index of slot `index`'s first word. */
  base(index: number): number {
    return this.slot0 + index * SLOT_WORDS;
  }

  /** Index of slot `index`'s first 64-bit word (in i64/u64/f64 units). */
  base64(index: number): number {
    return (this.slot0 + index * SLOT_WORDS) >> 1;
  }

  get stubIndex(): number {
    return STUB_INDEX;
  }

  // ---- attach ids and doorbells ------------------------------------------------------------------------------

  /**
   * A new attach id (≥ 1) for a worker: its creator id and doorbell bucket (id mod DOORBELL_BUCKETS). A wait-only
   * worker creates nothing, so its id only picks a doorbell bucket: its thread id + 1.
   */
  newAttachId(): number {
    if (!this.k) return threadId + 1;
    return Atomics.add(this.k, K_NEXT_ATTACH, 1) + 1;
  }

  doorbellWord(bucket: number): number {
    return H_DOORBELLS + bucket;
  }

  /** Rings the doorbell of every bucket in `mask` (a signal reached fences those workers care about). */
  ring(mask: number): void {
    const i32 = this.i32;
    for (let m = mask >>> 0; m !== 0; m &= m - 1) {
      const w = H_DOORBELLS + (31 - Math.clz32(m & -m));
      Atomics.add(i32, w, 1);
      Atomics.notify(i32, w);
    }
  }

  // ---- contexts ----------------------------------------------------------------------------------------------

  /** dma_fence_context_alloc(n): the first of n consecutive new contexts (the counter starts at 1). */
  contextAlloc(n: number): number {
    this.kernelWords('dma_fence_context_alloc');
    return Number(Atomics.add(this.k64!, K_CONTEXT_B / 8, BigInt(n)));
  }

  // ---- slot allocator ----------------------------------------------------------------------------------------

  /**
   * Takes a free slot and initialises its common words for `kind` (refcount stays −1: the caller publishes the
   * fence by storing 1 last). Throws FenceTableFullError when none is left.
   *
   * The free list is a lock-free Treiber stack whose head is one i64 word, (tag << 32) | index, swapped with
   * compareExchange. Race-freeness: a pop reads the head h, then the next link of h's slot, then swaps h → (tag+1,
   * next). If any other pop or push completed in between, the head's tag changed (every swap bumps it), so the
   * compareExchange fails and we retry — this is what rules out ABA (slot popped, reused and pushed back between
   * our two reads: same index, different tag). The link we read may be garbage if the slot was popped meanwhile;
   * the failed swap discards it. Slots are never unmapped, so reading a stale link is harmless.
   */
  allocSlot(kind: number, creator: number): number {
    const k = this.kernelWords('dma_fence_init');
    const i32 = this.i32;
    const k64 = this.k64!;
    const headW = K_FREE_HEAD_B / 8;
    const lo = K_FREE_HEAD_B / 4;
    let index: number;
    for (;;) {
      // The two halves are read separately (cheap Int32 loads); a torn pair just makes the 64-bit swap fail.
      const idx = Atomics.load(k, lo);
      const tag = Atomics.load(k, lo + 1);
      if (idx === -1) this.full();
      // The head and the links are kernel state, but a process that plays a driver is handed it: never index with
      // a bad one.
      if (!(idx > STUB_INDEX && idx < this.nslots)) BUG(`fence table free list: head ${idx} is not a slot (a corrupted fence word?)`);
      const next = Atomics.load(k, this.ks(idx) + KS_NEXT_FREE);
      const h = (BigInt(tag) << 32n) | BigInt(idx >>> 0);
      const nh = (BigInt((tag + 1) | 0) << 32n) | BigInt(next >>> 0);
      if (Atomics.compareExchange(k64, headW, h, nh) === h) {
        index = idx;
        break;
      }
    }
    const live = Atomics.add(k, K_LIVE, 1) + 1;
    for (let hw = Atomics.load(k, K_HIGH_WATER); live > hw; hw = Atomics.load(k, K_HIGH_WATER)) {
      if (Atomics.compareExchange(k, K_HIGH_WATER, hw, live) === hw) break;
    }
    const b = this.base(index);
    // Words other workers may read racily (a stale handle's checks, interest bits) are stored atomically; the
    // rest is ours alone until the caller publishes the refcount (a seq-cst store, ordering everything before it).
    Atomics.store(i32, b + S_SIGNAL, 0);
    Atomics.store(i32, b + S_FLAGS, kind << KIND_SHIFT);
    Atomics.store(i32, b + S_CB_PENDING, 0);
    Atomics.store(i32, b + S_WAITERS, 0);
    i32[b + S_LINK] = -1;
    i32[b + S_ERROR] = 0;
    Atomics.store(k, this.ks(index) + KS_NAME_ID, NAME_ID_STUB);
    Atomics.store(k, this.ks(index) + KS_SIGNALLER, 0);
    i32[b + S_NUM_FENCES] = 0;
    i32[b + S_CREATOR] = creator;
    i32[b + S_SERIAL] = kind === KIND_EXT ? 0 : Atomics.add(k, K_SERIAL, 1) + 1;
    i32.fill(0, b + 16, b + SLOT_WORDS);
    return index;
  }

  /**
   * Returns a slot to the free list and puts the names entry it held. The caller owns it exclusively (refcount
   * already claimed at −1). The generation bump comes first, so every handle of the old occupant is stale before
   * the slot can be reused.
   */
  freeSlot(index: number): void {
    if (index === STUB_INDEX) BUG('freeing the global stub fence slot');
    const k = this.kernelWords('dma_fence_release');
    const i32 = this.i32;
    const b = this.base(index);
    // The names reference createSlot's intern handed over (extension slots and fixed names hold none, and their
    // names id is NAME_ID_STUB or another fixed one).
    const nameId = Atomics.exchange(k, this.ks(index) + KS_NAME_ID, NAME_ID_STUB);
    this.putNames(nameId);
    Atomics.add(i32, b + S_GEN, 1);
    Atomics.store(i32, b + S_REFCOUNT, -1);
    Atomics.store(i32, b + S_FLAGS, KIND_FREE << KIND_SHIFT);
    Atomics.sub(k, K_LIVE, 1);
    const k64 = this.k64!;
    const headW = K_FREE_HEAD_B / 8;
    const lo = K_FREE_HEAD_B / 4;
    for (;;) {
      const top = Atomics.load(k, lo);
      const tag = Atomics.load(k, lo + 1);
      Atomics.store(k, this.ks(index) + KS_NEXT_FREE, top);
      const h = (BigInt(tag) << 32n) | BigInt(top >>> 0);
      const nh = (BigInt((tag + 1) | 0) << 32n) | BigInt(index);
      if (Atomics.compareExchange(k64, headW, h, nh) === h) return;
    }
  }

  private full(): never {
    const byCreator = new Map<number, number>();
    for (const f of this.liveFences()) byCreator.set(f.creator, (byCreator.get(f.creator) ?? 0) + 1);
    const who = [...byCreator.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 8)
      .map(([c, n]) => `attach#${c}: ${n}`)
      .join(', ');
    const msg =
      `dmabuf-sim: fence table full: all ${this.nslots} slots in use (live fences by creator: ${who || 'none'}). ` +
      `Fences are leaking (a missing dma_fence_put?) or the table is too small ` +
      `(Machine.boot({ fences: { slots } }), or createFenceTable({ slots }) for a table of your own).`;
    process.stderr.write(`${msg}\n`);
    throw new FenceTableFullError(msg);
  }

  /** Slots in use (fences and extension slots) and the most ever in use. */
  usage(): { live: number; highWater: number; slots: number } {
    const k = this.kernelWords('fence table usage');
    return { live: Atomics.load(k, K_LIVE), highWater: Atomics.load(k, K_HIGH_WATER), slots: this.nslots };
  }

  // ---- names -------------------------------------------------------------------------------------------------

  /** Writes names entry `id` (creation time, or under the names lock). */
  writeNames(id: number, driver: string, timeline: string): void {
    const at = K_NAMES_BYTE + id * NAME_ENTRY_BYTES + NAME_WORDS_BYTES;
    this.writeStr(at, driver);
    this.writeStr(at + NAME_STR_BYTES, timeline);
  }

  private writeStr(at: number, s: string): void {
    let bytes = encoder.encode(s);
    if (bytes.length > NAME_MAX) bytes = bytes.subarray(0, NAME_MAX);
    const u8 = this.ku8;
    if (!u8) throw new FenceWaitOnlyError('fence names');
    u8[at] = bytes.length;
    u8.set(bytes, at + 1);
  }

  private readStr(at: number): string {
    // The length byte is shared memory: never trust it past the field.
    const u8 = this.ku8!;
    const len = Math.min(u8[at]!, NAME_MAX);
    // TextDecoder refuses shared memory: copy the bytes out first.
    return decoder.decode(u8.slice(at + 1, at + 1 + len));
  }

  /**
   * internNames: the id of the (driver, timeline) names pair with one reference taken for the caller (a fence
   * about to be created; createSlot hands it to the slot, freeSlot puts it). Names longer than NAME_MAX bytes are
   * truncated. Throws FenceTableFullError (loudly) when every entry is in use by live fences.
   *
   * Fast path: this worker's cached (id, gen) — a get_unless_zero on NE_REF, then the generation check (an entry
   * freed and reused since it was cached has a new generation: the reference just taken belongs to the new
   * occupant and is put back). Slow path, under H_NAMES_LOCK: a live entry with the same strings, else a free one.
   * Any thread; may sleep on the names lock.
   */
  internNames(driver: string, timeline: string): number {
    const i32 = this.kernelWords('fence names intern');
    const key = `${driver}\u0000${timeline}`;
    const cached = this.nameKeys.get(key);
    if (cached !== undefined && this.tryGetNames(cached.id, cached.gen)) return cached.id;
    const want = this.truncated(driver, timeline);
    let id = -1;
    try {
      this.lockNames();
    } catch (e) {
      if (!(e instanceof LockTimeout)) throw e;
      const msg = `dmabuf-sim: fence names table: its lock is ${e.message} (a process holding or scribbling on it); giving up rather than stall`;
      process.stderr.write(`${msg}\n`);
      throw new FenceTableFullError(msg);
    }
    try {
      const n = Math.min(Atomics.load(i32, K_NAMES_COUNT), this.namesCap);
      for (let i = NAME_ID_FIRST_DYNAMIC; i < n && id < 0; i++) {
        const w = nameWord(i);
        if (Atomics.load(i32, w + NE_REF) <= 0) continue;
        const [d, t] = this.names(i);
        if (d === want[0] && t === want[1] && this.tryGetNames(i, Atomics.load(i32, w + NE_GEN))) id = i;
      }
      if (id < 0) {
        const head = i32[K_NAMES_FREE]!;
        if (head >= NAME_ID_FIRST_DYNAMIC && head < n) {
          id = head;
          i32[K_NAMES_FREE] = i32[nameWord(id) + NE_LINK]!;
        } else if (n < this.namesCap) {
          id = n;
          Atomics.store(i32, K_NAMES_COUNT, n + 1);
        } else {
          const msg =
            `dmabuf-sim: fence names table full: all ${this.namesCap} driver/timeline pairs are in use by live ` +
            `fences. Fences are leaking, or raise it with Machine.boot({ fences: { names } }) ` +
            `(createFenceTable({ names }) for a table of your own).`;
          process.stderr.write(`${msg}\n`);
          throw new FenceTableFullError(msg);
        }
        this.writeNames(id, want[0], want[1]);
        Atomics.add(i32, K_NAMES_LIVE, 1);
        // Publishes the strings (seq-cst store after the plain writes above).
        Atomics.store(i32, nameWord(id) + NE_REF, 1);
      }
    } finally {
      this.unlockNames();
    }
    this.nameKeys.set(key, { id, gen: Atomics.load(i32, nameWord(id) + NE_GEN) });
    return id;
  }

  /**
   * get_unless_zero on names entry `id`, valid only while it still has generation `gen`. Fixed entries need no
   * reference. Returns false for a free, dying or reused entry (any reference taken on a reused one is put back).
   */
  private tryGetNames(id: number, gen: number): boolean {
    if (id < NAME_ID_FIRST_DYNAMIC) return id >= 0;
    if (id >= this.namesCap) return false;
    const i32 = this.kernelWords('fence names');
    const w = nameWord(id);
    for (;;) {
      const v = Atomics.load(i32, w + NE_REF);
      if (v <= 0) return false;
      if (Atomics.compareExchange(i32, w + NE_REF, v, v + 1) === v) break;
    }
    if (Atomics.load(i32, w + NE_GEN) === gen) return true;
    this.putNames(id);
    return false;
  }

  /**
   * Puts one reference of names entry `id` (a fence slot's, or an intern that made no fence); the last one frees
   * the entry for reuse: generation bumped first (every cached (id, gen) goes stale), then pushed on the free list
   * under the names lock. Nobody revives an entry at 0 (gets are get_unless_zero), so the putter that reached 0
   * owns it. The id comes from a shared slot word: one outside the table or of a free entry is a WARN, never a
   * corruption of the table.
   */
  putNames(id: number): void {
    if (id >= 0 && id < NAME_ID_FIRST_DYNAMIC) return;
    if (!(id >= 0 && id < this.namesCap) || !Number.isInteger(id)) {
      warn(`fence names: put of names id ${id}, outside the table (a corrupted fence slot?)`);
      return;
    }
    const i32 = this.kernelWords('fence names put');
    const w = nameWord(id);
    for (;;) {
      const v = Atomics.load(i32, w + NE_REF);
      if (v <= 0) {
        warn(`fence names: put of names entry ${id} with ${v} references (a corrupted fence slot?)`);
        return;
      }
      if (Atomics.compareExchange(i32, w + NE_REF, v, v - 1) === v) {
        if (v > 1) return;
        break;
      }
    }
    Atomics.add(i32, w + NE_GEN, 1);
    try {
      this.lockNames();
    } catch (e) {
      if (!(e instanceof LockTimeout)) throw e;
      // Left at refcount 0, on no list: lost for the table's life, never handed out twice.
      warn(`fence names table: could not take its lock to free entry ${id} (${e.message}); the entry is lost`);
      return;
    }
    try {
      i32[w + NE_LINK] = i32[K_NAMES_FREE]!;
      i32[K_NAMES_FREE] = id;
      Atomics.store(i32, w + NE_REF, -1);
      Atomics.sub(i32, K_NAMES_LIVE, 1);
    } finally {
      this.unlockNames();
    }
  }

  /** The current generation of names entry `id` (ops caches validate against it); −1 outside the table. */
  namesGen(id: number): number {
    if (!(id >= 0 && id < this.namesCap) || !this.k) return -1;
    return Atomics.load(this.k, nameWord(id) + NE_GEN);
  }

  /** Names entries in use (the fixed ones included) and the capacity. */
  namesUsage(): { live: number; capacity: number } {
    return { live: Atomics.load(this.kernelWords('fence names usage'), K_NAMES_LIVE), capacity: this.namesCap };
  }

  private truncated(driver: string, timeline: string): [string, string] {
    const cut = (s: string): string => {
      const b = encoder.encode(s);
      return b.length > NAME_MAX ? decoder.decode(b.subarray(0, NAME_MAX)) : s;
    };
    return [cut(driver), cut(timeline)];
  }

  /**
   * Takes the names lock (a robust mutex, see robustLock). A holder that died under it left at worst one entry
   * neither live nor on the free list (popped or counted, not yet published): lost for the table's life, never
   * handed out twice — so the taker reports it and carries on.
   */
  private lockNames(): void {
    if (robustLock(this.k!, K_NAMES_LOCK, this.owner, this.alive, this.namesLockTimeoutMs ?? Infinity)) {
      warn('fence names table lock: its owner died holding it; taken over (EOWNERDEAD), at most one names entry lost');
    }
  }

  private unlockNames(): void {
    robustUnlock(this.k!, K_NAMES_LOCK);
  }

  /**
   * [driver, timeline] of names entry `id` (['?', '?'] for an id outside the table or a free entry: the id comes
   * from a shared slot word and is never trusted). Cached per worker with the entry's generation.
   */
  names(id: number): [string, string] {
    const k = this.k;
    if (!k || !(id >= 0 && id < this.namesCap) || !Number.isInteger(id)) return ['?', '?'];
    const w = nameWord(id);
    const gen = Atomics.load(k, w + NE_GEN);
    const c = this.nameCache[id];
    if (c && c.gen === gen) return c.pair;
    if (Atomics.load(k, w + NE_REF) <= 0) return ['?', '?'];
    const at = K_NAMES_BYTE + id * NAME_ENTRY_BYTES + NAME_WORDS_BYTES;
    const pair: [string, string] = [this.readStr(at), this.readStr(at + NAME_STR_BYTES)];
    this.nameCache[id] = { gen, pair };
    return pair;
  }

  // ---- reports -----------------------------------------------------------------------------------------------

  /** Every live fence (referenced, or a zombie waiting for callbacks), except the global stub. */
  liveFences(): FenceInfo[] {
    const out: FenceInfo[] = [];
    const i32 = this.i32;
    for (let i = 1; i < this.nslots; i++) {
      const b = this.base(i);
      const flags = Atomics.load(i32, b + S_FLAGS);
      const kind = (flags >> KIND_SHIFT) & KIND_MASK;
      if (kind === KIND_FREE || kind === KIND_EXT) continue;
      const refcount = Atomics.load(i32, b + S_REFCOUNT);
      // A zombie: released (refcount 0) while callbacks were queued; it lives until the last one ran or was removed.
      const zombie = refcount === 0 && Atomics.load(i32, b + S_CB_PENDING) > 0;
      if (refcount <= 0 && !zombie) continue;
      const [driver, timeline] = this.names(this.slotNameId(i));
      const b64 = b >> 1;
      out.push({
        index: i,
        gen: Atomics.load(i32, b + S_GEN),
        kind: KIND_NAMES[kind]!,
        context: Number(this.u64[b64 + S64_CONTEXT]),
        seqno: this.u64[b64 + S64_SEQNO]!,
        refcount,
        cbPending: Atomics.load(i32, b + S_CB_PENDING),
        signaled: Atomics.load(i32, b + S_SIGNAL) !== 0,
        error: Atomics.load(i32, b + S_ERROR),
        driver,
        timeline,
        creator: Atomics.load(i32, b + S_CREATOR),
        serial: Atomics.load(i32, b + S_SERIAL),
        zombie,
      });
    }
    return out;
  }
}

/** An owner id for a thread that has no alive-table token (never presumed dead). */
export function untrackedOwner(): number {
  return (1 << 29) | ((threadId + 1) & ((1 << 29) - 1));
}

/**
 * A robust mutex on word `w` of `i32`, the way a robust futex works: the word holds the holder's owner token
 * (src/shm/alive.ts) | LOCK_WAITERS, 0 when free. Takes it for `owner`; returns true when the previous holder was
 * found dead and the lock was taken over from it (EOWNERDEAD: the caller reports it and repairs what the lock
 * protects), false on a normal acquisition.
 *
 * Bounded and recoverable: a waiter sets LOCK_WAITERS and sleeps only while the word still holds exactly that
 * value (so an unlock — a store of 0 then a notify — between its compareExchange and its sleep makes the sleep
 * return at once), and never longer than LOCK_SLICE_MS: after each slice it re-reads the word and asks the alive
 * table about the holder, so a dead holder (or a lost notify) costs at most one slice. The takeover is a
 * compareExchange from the dead holder's exact value, so two waiters cannot both take over, and a holder that
 * unlocks meanwhile makes it fail harmlessly. With `timeoutMs`, throws LockTimeout once that long has passed
 * without the lock (the slices shrink to end on the deadline).
 */
export function robustLock(i32: Int32Array, w: number, owner: number, alive: AliveTable | null, timeoutMs = Infinity): boolean {
  const mine = owner & TOKEN_MASK;
  const deadline = timeoutMs === Infinity ? Infinity : performance.now() + timeoutMs;
  let v = Atomics.compareExchange(i32, w, 0, mine);
  if (v === 0) return false;
  for (;;) {
    if (v === 0) {
      // Free: take it, keeping the waiters bit (other sleepers may exist; the unlock then wakes one).
      v = Atomics.compareExchange(i32, w, 0, mine | LOCK_WAITERS);
      if (v === 0) return false;
      continue;
    }
    const holder = v & TOKEN_MASK;
    if (alive && !alive.isAlive(holder)) {
      if (Atomics.compareExchange(i32, w, v, mine | LOCK_WAITERS) === v) return true;
      v = Atomics.load(i32, w);
      continue;
    }
    if ((v & LOCK_WAITERS) === 0) {
      const seen = Atomics.compareExchange(i32, w, v, v | LOCK_WAITERS);
      if (seen !== v) {
        v = seen;
        continue;
      }
      v |= LOCK_WAITERS;
    }
    if (performance.now() >= deadline) throw new LockTimeout(`held by owner ${holder} for over ${timeoutMs} ms`);
    Atomics.wait(i32, w, v, Math.min(LOCK_SLICE_MS, Math.max(1, deadline - performance.now())));
    v = Atomics.load(i32, w);
  }
}

/**
 * robustLock with a timeout gave up: the holder is alive (or looks alive) and kept the lock. Only callers that must
 * not wait on another worker's lock for long (the broker, on a lock a process can write) pass a timeout.
 */
export class LockTimeout extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LockTimeout';
  }
}

/** Releases a robust lock taken with robustLock; wakes one sleeper when the waiters bit was set. */
export function robustUnlock(i32: Int32Array, w: number): void {
  if (Atomics.exchange(i32, w, 0) & LOCK_WAITERS) Atomics.notify(i32, w, 1);
}

/** Leak report lines for live fences (empty string when there are none). */
export function formatFenceLeaks(fences: readonly FenceInfo[]): string {
  if (fences.length === 0) return '';
  let s = `${fences.length} live fence(s):\n`;
  for (const f of fences) {
    s +=
      `  slot ${f.index}.${f.gen} ${f.kind} ${f.driver}:${f.timeline} ctx ${f.context} seq ${f.seqno} ` +
      `${f.signaled ? 'signaled' : 'unsignaled'}${f.error < 0 ? ` error ${f.error}` : ''} refcount ${f.refcount}` +
      `${f.cbPending ? ` callbacks ${f.cbPending}` : ''}${f.zombie ? ' (released, callbacks pending)' : ''}` +
      ` created by attach#${f.creator} serial ${f.serial}\n`;
  }
  return s;
}
