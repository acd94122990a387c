/**
 * struct iosys_map for every worker: a kernel mapping that is either system memory (a plain byte view) or I/O
 * memory (accessors only — memcpy_toio / memcpy_fromio / readb..readq / writeb..writeq — so a plain load on I/O
 * memory is impossible by construction). Both wrap a range of a SharedArrayBuffer, so the broker and any driver
 * worker build the same kind of map over the same pages.
 */
import { BUG } from '../bug.js';

/**
 * I/O memory behind an iosys_map with is_iomem set: reachable only through these accessors, never through a
 * typed array — the bytes are a private field, so nothing can cheat.
 */
export class IoMem {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  get size(): number {
    return this.#bytes.length;
  }
  private check(offset: number, len: number): void {
    if (!Number.isInteger(offset) || offset < 0 || len < 0 || offset + len > this.#bytes.length) {
      BUG(`I/O memory access [${offset}, +${len}) outside ${this.#bytes.length} bytes`);
    }
  }
  memcpyToIo(offset: number, src: Uint8Array): void {
    this.check(offset, src.length);
    this.#bytes.set(src, offset);
  }
  memcpyFromIo(offset: number, len: number): Uint8Array {
    this.check(offset, len);
    return this.#bytes.slice(offset, offset + len);
  }
  memsetIo(offset: number, value: number, len: number): void {
    this.check(offset, len);
    this.#bytes.fill(value, offset, offset + len);
  }
  readb(o: number): number {
    this.check(o, 1);
    return this.#view.getUint8(o);
  }
  readw(o: number): number {
    this.check(o, 2);
    return this.#view.getUint16(o, true);
  }
  readl(o: number): number {
    this.check(o, 4);
    return this.#view.getUint32(o, true);
  }
  readq(o: number): bigint {
    this.check(o, 8);
    return this.#view.getBigUint64(o, true);
  }
  writeb(o: number, v: number): void {
    this.check(o, 1);
    this.#view.setUint8(o, v);
  }
  writew(o: number, v: number): void {
    this.check(o, 2);
    this.#view.setUint16(o, v, true);
  }
  writel(o: number, v: number): void {
    this.check(o, 4);
    this.#view.setUint32(o, v >>> 0, true);
  }
  writeq(o: number, v: bigint): void {
    this.check(o, 8);
    this.#view.setBigUint64(o, BigInt.asUintN(64, v), true);
  }
}

/**
 * struct iosys_map: system memory (`vaddr`, plain loads and stores) or I/O memory (`vaddrIomem`, accessors only).
 * Equality is pointer equality, as iosys_map_is_equal.
 */
export class IosysMap {
  static readonly NULL = new IosysMap(null, null);
  private constructor(
    readonly vaddr: Uint8Array | null,
    readonly vaddrIomem: IoMem | null,
  ) {}
  static fromVaddr(vaddr: Uint8Array): IosysMap {
    return new IosysMap(vaddr, null);
  }
  static fromIomem(io: IoMem): IosysMap {
    return new IosysMap(null, io);
  }
  get isIomem(): boolean {
    return this.vaddrIomem !== null;
  }
  get isNull(): boolean {
    return this.vaddr === null && this.vaddrIomem === null;
  }
  isEqual(o: IosysMap): boolean {
    return this.isIomem === o.isIomem && this.vaddr === o.vaddr && this.vaddrIomem === o.vaddrIomem;
  }
  /** iosys_map_memcpy_to: works on either kind. */
  memcpyTo(offset: number, src: Uint8Array): void {
    if (this.vaddrIomem) this.vaddrIomem.memcpyToIo(offset, src);
    else if (this.vaddr) this.vaddr.set(src, offset);
    else BUG('iosys_map_memcpy_to on a NULL map');
  }
  /** iosys_map_memcpy_from: works on either kind. */
  memcpyFrom(offset: number, len: number): Uint8Array {
    if (this.vaddrIomem) return this.vaddrIomem.memcpyFromIo(offset, len);
    if (this.vaddr) return this.vaddr.slice(offset, offset + len);
    BUG('iosys_map_memcpy_from on a NULL map');
  }
}
