/**
 * Per-module kernel state: each subsystem keeps its globals (db_list, the heap list, the af_unix socket set...)
 * in its own typed slot on the Kernel instead of a string-keyed map read back with a cast, so only the module
 * that owns a state can reach it and its type is checked where it is defined.
 */
import { BUG } from '../bug.js';
import type { Kernel } from './kernel.js';

/** One module's state, one value per Kernel (a machine). Broker thread only. */
export class ModuleState<T> {
  readonly #byKernel = new WeakMap<Kernel, T>();

  /** `name` is for the BUG message when a caller runs before the module's init. */
  constructor(readonly name: string) {}

  /** Sets this kernel's state (the module's init); BUG if it was already set. */
  init(k: Kernel, value: T): T {
    if (this.#byKernel.has(k)) BUG(`${this.name} initialised twice`);
    this.#byKernel.set(k, value);
    return value;
  }

  /** This kernel's state; BUG if the module's init has not run (an initcall order bug). */
  of(k: Kernel): T {
    const s = this.#byKernel.get(k);
    if (s === undefined) BUG(`${this.name} used before its init`);
    return s;
  }

  /** This kernel's state, created with `make` on first use (state with no init of its own). */
  ofOrInit(k: Kernel, make: () => T): T {
    let s = this.#byKernel.get(k);
    if (s === undefined) this.#byKernel.set(k, (s = make()));
    return s;
  }
}
