/**
 * copy_from_user / copy_to_user for the model: an ioctl's arg is the bytes the process passed (copied into its
 * channel). Reading past them is EFAULT, as touching an unmapped user page is on Linux; a numeric (non-pointer)
 * arg has no bytes at all.
 */
import { KernelError } from '../errors.js';
import { E } from '../uapi/errno.js';

export class UserPtr {
  private readonly dv: DataView | null;
  constructor(
    /** The user buffer, or null when the caller passed a plain integer. */
    readonly bytes: Uint8Array | null,
    /** The raw integer arg (0 when a buffer was passed). */
    readonly value: number,
  ) {
    this.dv = bytes ? new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength) : null;
  }

  get length(): number {
    return this.bytes ? this.bytes.length : 0;
  }

  private check(off: number, len: number): DataView {
    if (!this.dv || off < 0 || off + len > this.dv.byteLength) throw new KernelError(E.EFAULT, 'user buffer too short');
    return this.dv;
  }

  /** copy_from_user of `len` bytes: a private copy the caller may keep. */
  copyFrom(len: number): Uint8Array {
    this.check(0, len);
    return this.bytes!.slice(0, len);
  }
  /** copy_to_user: writes `src` at the start of the user buffer. */
  copyTo(src: Uint8Array): void {
    this.check(0, src.length);
    this.bytes!.set(src);
  }

  u32(off: number): number {
    return this.check(off, 4).getUint32(off, true);
  }
  i32(off: number): number {
    return this.check(off, 4).getInt32(off, true);
  }
  /** A u64 as a JS number; values beyond 2^53 lose precision but keep their magnitude (for range checks). */
  u64(off: number): number {
    return Number(this.check(off, 8).getBigUint64(off, true));
  }
  u64big(off: number): bigint {
    return this.check(off, 8).getBigUint64(off, true);
  }
  setU32(off: number, v: number): void {
    this.check(off, 4).setUint32(off, v >>> 0, true);
  }
  setI32(off: number, v: number): void {
    this.check(off, 4).setInt32(off, v | 0, true);
  }
  setU64(off: number, v: number | bigint): void {
    this.check(off, 8).setBigUint64(off, BigInt(v), true);
  }

  /** A fixed char[n] field: bytes up to the first NUL (or n). */
  cstring(off: number, n: number): string {
    this.check(off, n);
    const raw = this.bytes!.subarray(off, off + n);
    const end = raw.indexOf(0);
    return Buffer.from(raw.subarray(0, end < 0 ? n : end)).toString('latin1');
  }
  /** Writes a char[n] field: truncated to n-1 chars and NUL padded (strscpy_pad). */
  setCstring(off: number, n: number, s: string): void {
    this.check(off, n);
    const field = this.bytes!.subarray(off, off + n);
    field.fill(0);
    field.set(Buffer.from(s.slice(0, n - 1), 'latin1'));
  }

  /**
   * strndup_user(arg, n): the NUL-terminated string the arg points at. EFAULT when there is no user buffer or the
   * string runs off its end; EINVAL when no NUL is found within n bytes.
   */
  strndup(n: number): string {
    if (!this.bytes) throw new KernelError(E.EFAULT);
    const limit = Math.min(n, this.bytes.length);
    const nul = this.bytes.subarray(0, limit).indexOf(0);
    if (nul < 0) {
      if (this.bytes.length < n) throw new KernelError(E.EFAULT);
      throw new KernelError(E.EINVAL, 'string too long');
    }
    return Buffer.from(this.bytes.subarray(0, nul)).toString('latin1');
  }
}
