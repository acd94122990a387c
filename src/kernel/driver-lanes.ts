/**
 * DOC: The broker's half of driver lanes (layouts in src/shm/driver-lane.ts): per driver, the directory it writes
 * — which task owns each lane, which (task, file) pairs may take the lane — and every lane's SharedArrayBuffer.
 *
 * Threading: broker thread only. Grants are written when a task's ioctl on a driver file went through the broker
 * (the slow path), and revoked synchronously inside the call that changes what the task may reach: an fd of the
 * file removed from the fd table the task uses (`revokeFile` for the tasks of that table, from the file's flush),
 * the task gone (`dropTask`, an exit hook), the file released (`revokeFile` for all). A revoked grant sends the task's next lane request back to the slow path, which resolves the fd
 * afresh — so a grant never outlives the fd it was made for, though a task may hold it in a cache.
 *
 * Allocation is deterministic: the lowest free lane slot, grant indices from a counter and a free list.
 */
import type { MessagePort } from 'node:worker_threads';
import {
  createBell,
  createDirectory,
  createLane,
  D_GEN,
  D_LANES,
  G_FILE,
  G_LANE,
  G_SERIAL,
  grantWord,
  L_GONE,
  L_STATE,
  LG_DEAD,
  MAX_GRANTS,
  MAX_LANES,
} from '../shm/driver-lane.js';

/** A lane: one task's way into one driver. */
interface Lane {
  readonly slot: number;
  readonly pid: number;
  readonly sab: SharedArrayBuffer;
  readonly i32: Int32Array;
  /** Grant indices this lane holds, by file id. */
  readonly grants: Map<number, number>;
}

/** Serials of grants: from a counter, 31 bits (a wrap needs two billion grants of one driver). */
const SERIAL_MASK = 0x7fffffff;

/**
 * What a grant hands the task: its token (grant index + 1; 0 = none: lanes or grants all taken) and serial, and
 * the lane's memory when the task has not been sent it yet.
 */
export interface LaneGrant {
  readonly token: number;
  readonly serial: number;
  readonly lane: SharedArrayBuffer;
  readonly newLane: boolean;
}

/** The message a driver worker receives on its port for a new lane (before D_GEN is bumped). */
export interface LaneMessage {
  readonly lane: number;
  readonly pid: number;
  readonly sab: SharedArrayBuffer;
}

export class LaneDirectory {
  /** The directory (broker + driver). */
  readonly sab = createDirectory();
  readonly dir = new Int32Array(this.sab);
  /** The driver's bell (its doorbell; processes with a lane ring it). */
  readonly bell = createBell();
  private readonly byPid = new Map<number, Lane>();
  private readonly slots: (Lane | undefined)[] = new Array<Lane | undefined>(MAX_LANES);
  /** file id → pid → grant index. */
  private readonly byFile = new Map<number, Map<number, number>>();
  private readonly freeGrants: number[] = [];
  private nextGrant = 0;
  private nextSerial = 1;
  private dead = false;

  constructor(private readonly port: MessagePort) {}

  /**
   * The grant for task `pid` to take its lane into this driver for file `fileId`: an existing one, or a new one
   * (with a new lane when the task has none). Null when the driver is dead or its lanes or grants are all taken:
   * the task then keeps using the slow path.
   */
  grant(fileId: number, pid: number): LaneGrant | null {
    if (this.dead || fileId <= 0) return null;
    let lane = this.byPid.get(pid);
    let newLane = false;
    if (!lane) {
      const slot = this.slots.findIndex((l) => l === undefined);
      const free = slot >= 0 ? slot : this.slots.length < MAX_LANES ? this.slots.length : -1;
      if (free < 0) return null;
      const sab = createLane();
      lane = { slot: free, pid, sab, i32: new Int32Array(sab, 0, 16), grants: new Map() };
      // The driver drains its port when D_GEN moves: the message must be queued before the bump.
      this.port.postMessage({ lane: free, pid, sab } satisfies LaneMessage);
      this.slots[free] = lane;
      this.byPid.set(pid, lane);
      Atomics.store(this.dir, D_LANES + free, pid);
      Atomics.add(this.dir, D_GEN, 1);
      newLane = true;
    }
    let g = lane.grants.get(fileId);
    if (g === undefined) {
      const ng = this.freeGrants.pop() ?? (this.nextGrant < MAX_GRANTS ? this.nextGrant++ : -1);
      if (ng < 0) return newLane ? { token: 0, serial: 0, lane: lane.sab, newLane } : null;
      g = ng;
      const serial = this.nextSerial;
      this.nextSerial = (this.nextSerial + 1) & SERIAL_MASK || 1;
      Atomics.store(this.dir, grantWord(g, G_SERIAL), serial);
      lane.grants.set(fileId, g);
      let users = this.byFile.get(fileId);
      if (!users) this.byFile.set(fileId, (users = new Map()));
      users.set(pid, g);
      Atomics.store(this.dir, grantWord(g, G_LANE), lane.slot + 1);
      Atomics.store(this.dir, grantWord(g, G_FILE), fileId);
    }
    return { token: g + 1, serial: Atomics.load(this.dir, grantWord(g, G_SERIAL)), lane: lane.sab, newLane };
  }

  /**
   * The grants of file `fileId`: every one (it is released), or those of the tasks `affected` says (an fd of it left
   * the fd table they use: only their fd → file bindings may have changed).
   */
  revokeFile(fileId: number, affected?: (pid: number) => boolean): void {
    const users = this.byFile.get(fileId);
    if (!users) return;
    for (const [pid, g] of users) {
      if (affected && !affected(pid)) continue;
      users.delete(pid);
      this.byPid.get(pid)?.grants.delete(fileId);
      this.freeGrant(g);
    }
    if (users.size === 0) this.byFile.delete(fileId);
  }

  /** Whether file `fileId` has grants (the cheap test before working out whose to revoke). */
  hasGrants(fileId: number): boolean {
    return this.byFile.has(fileId);
  }

  /** Task `pid` is gone: its grants are revoked and its lane slot freed (the driver forgets it at its next sync). */
  dropTask(pid: number): void {
    const lane = this.byPid.get(pid);
    if (!lane) return;
    this.byPid.delete(pid);
    for (const [fileId, g] of lane.grants) {
      this.byFile.get(fileId)?.delete(pid);
      this.freeGrant(g);
    }
    lane.grants.clear();
    this.slots[lane.slot] = undefined;
    Atomics.store(this.dir, D_LANES + lane.slot, 0);
    Atomics.add(this.dir, D_GEN, 1);
  }

  /**
   * The driver is dead: every lane is marked gone and its waiter woken (a task waiting for a reply gets ENODEV);
   * no grant is made any more.
   */
  markDead(): void {
    this.dead = true;
    for (const lane of this.byPid.values()) {
      Atomics.store(lane.i32, L_GONE, LG_DEAD);
      Atomics.notify(lane.i32, L_STATE);
    }
  }

  /** Lanes in use (diagnostics, tests). */
  get lanes(): number {
    return this.byPid.size;
  }

  /** Grants in use (diagnostics, tests). */
  get grants(): number {
    let n = 0;
    for (const l of this.byPid.values()) n += l.grants.size;
    return n;
  }

  private freeGrant(g: number): void {
    // G_FILE first: a driver checking the grant sees it revoked before the lane word changes.
    Atomics.store(this.dir, grantWord(g, G_FILE), 0);
    Atomics.store(this.dir, grantWord(g, G_LANE), 0);
    this.freeGrants.push(g);
  }
}
