/**
 * The "who is alive" table: a small shared array in which every worker that can own something another worker
 * waits for (a lock word, a spin slot, a half-finished signal) registers an owner token, and which is cleared when
 * that worker dies — so a waiter that finds an owner token in a lock word can tell a slow owner from a dead one.
 *
 * It lives in the fence table's kernel state (src/fence/table.ts, words K_ALIVE..): handed only to kernel-side
 * workers (the broker, the main thread, processes spawned with { kernelFences: true }), never to a plain process —
 * one that could write it could forge another's death (take over its locks, reclaim its spin slots).
 *
 * ## Layout (Int32 words from `base`, all accessed with Atomics)
 *
 *   base + 0             ALIVE_GEN   generation counter, bumped by every registration (tokens are never reused)
 *   base + 1 + i         entry i     0 = free (nobody / dead), else the token of the worker registered there
 *                                    (i = 0 .. ALIVE_ENTRIES − 1)
 *
 * A token is `(gen << ALIVE_INDEX_BITS) | i`, with gen in 1 .. 2^ALIVE_GEN_BITS − 1, so a token is > 0 and
 * below 2^29 (bit 29 is TOKEN_UNTRACKED, bit 30 is lock words' waiters bit): it names its entry, and a later
 * registrant of the same entry gets a different token. isAlive(token) is a single load: the entry still holds
 * exactly this token.
 *
 * ## Who registers and who clears
 * - Machine processes: the broker registers one at createProcess and clears it in reap (after the worker's
 *   'exit', which the main thread sees for every process worker — kill, crash or exit alike).
 * - The broker registers itself at boot; the main thread clears it on the broker worker's 'exit'.
 * - Any other kernel-side worker that attaches a fence table with its kernel state self-registers (FenceRuntime;
 *   a wait-only worker cannot, and is untracked: never presumed dead); whoever created that worker
 *   clears its token when it ends (aliveClear), or it counts as alive forever (waiters then wait, in bounded
 *   slices, exactly as before).
 *
 * Registration and clearing are compareExchanges, so they never conflict with each other.
 */

export const ALIVE_INDEX_BITS = 10;
export const ALIVE_ENTRIES = 1 << ALIVE_INDEX_BITS;
export const ALIVE_GEN_BITS = 19;
export const ALIVE_WORDS = 1 + ALIVE_ENTRIES;
const ALIVE_GEN = 0;
const INDEX_MASK = ALIVE_ENTRIES - 1;
const GEN_MASK = (1 << ALIVE_GEN_BITS) - 1;

/**
 * An owner id that is not in any alive table (a thread that never attached one): bit 29 plus its thread id + 1.
 * Such an owner is never presumed dead.
 */
export const TOKEN_UNTRACKED = 1 << 29;
/** The largest token value; lock words may use bit 30 as a waiters flag. */
export const TOKEN_MASK = (1 << 30) - 1;

/** A view of one alive table: `i32` is the whole SharedArrayBuffer's Int32 view, `base` its first word. */
export class AliveTable {
  constructor(
    readonly i32: Int32Array,
    readonly base: number,
  ) {}

  /** Registers a new live owner; returns its token. Throws when every entry is taken. */
  register(): number {
    const i32 = this.i32;
    const first = this.base + 1;
    for (let i = 0; i < ALIVE_ENTRIES; i++) {
      if (Atomics.load(i32, first + i) !== 0) continue;
      let gen = (Atomics.add(i32, this.base + ALIVE_GEN, 1) + 1) & GEN_MASK;
      if (gen === 0) gen = 1;
      const token = (gen << ALIVE_INDEX_BITS) | i;
      if (Atomics.compareExchange(i32, first + i, 0, token) === 0) return token;
    }
    throw new Error(`dmabuf-sim: the alive table is full (${ALIVE_ENTRIES} live owners): dead workers are not being cleared`);
  }

  /** Marks `token`'s owner dead (idempotent; a token that was already cleared or replaced is left alone). */
  clear(token: number): void {
    if (!isTrackedToken(token)) return;
    Atomics.compareExchange(this.i32, this.base + 1 + (token & INDEX_MASK), token, 0);
  }

  /** True while the owner of `token` is registered. Untracked owners (and 0) count as alive: never presumed dead. */
  isAlive(token: number): boolean {
    if (!isTrackedToken(token)) return true;
    return Atomics.load(this.i32, this.base + 1 + (token & INDEX_MASK)) === token;
  }

  /** Live owners (diagnostics). */
  count(): number {
    let n = 0;
    for (let i = 0; i < ALIVE_ENTRIES; i++) if (Atomics.load(this.i32, this.base + 1 + i) !== 0) n++;
    return n;
  }
}

/** A token an alive table can vouch for (not 0, not untracked). */
export function isTrackedToken(token: number): boolean {
  return token > 0 && token < TOKEN_UNTRACKED;
}
