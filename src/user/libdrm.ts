/**
 * A small libdrm (xf86drm.h, xf86drmMode.h) and IGT igt_vgem subset for processes: open a DRM node, VERSION,
 * caps, PRIME handle/fd conversion, GEM_CLOSE, dumb buffers and vgem fences. Each builds the real uAPI struct and
 * calls ioctl() with the real request number; failures throw SyscallError as the C calls set errno.
 */
import {
  DRM_DEV_NAME,
  DRM_IOCTL_GEM_CLOSE,
  DRM_IOCTL_GET_CAP,
  DRM_IOCTL_MODE_CREATE_DUMB,
  DRM_IOCTL_MODE_DESTROY_DUMB,
  DRM_IOCTL_MODE_MAP_DUMB,
  DRM_IOCTL_PRIME_FD_TO_HANDLE,
  DRM_IOCTL_PRIME_HANDLE_TO_FD,
  DRM_IOCTL_SET_CLIENT_CAP,
  DRM_IOCTL_VERSION,
  DRM_IOCTL_VGEM_FENCE_ATTACH,
  DRM_IOCTL_VGEM_FENCE_SIGNAL,
  drm_gem_close,
  drm_get_cap,
  drm_mode_create_dumb,
  drm_mode_destroy_dumb,
  drm_mode_map_dumb,
  drm_prime_handle,
  drm_set_client_cap,
  drm_version,
  drm_vgem_fence_attach,
  drm_vgem_fence_signal,
} from '../uapi/drm.js';
import { O_CLOEXEC, O_RDWR } from '../uapi/posix.js';
import { ioctl, open } from './syscalls.js';
import { validateFd, validateFlags, validateInteger, validateU64 } from '../validate.js';

/**
 * A __u32 struct field (handle, flags, width...): either view of its 32 bits, as C converts an int to it — so
 * `~VGEM_FENCE_WRITE` or a handle of -1 reach the kernel (EINVAL / ENOENT there); NaN, 3.5 or a string cannot.
 */
const u32 = (v: unknown, name: string): number => validateFlags(v, name) >>> 0;

/** drmOpen-style: opens /dev/dri/card<minor> read/write and close-on-exec. Returns the DRM fd. */
export function drmOpenCard(minor = 0, flags = O_RDWR | O_CLOEXEC): number {
  return open(`${DRM_DEV_NAME}${validateInteger(minor, 'minor', 0, 63)}`, validateFlags(flags, 'flags'));
}

/** drmIoctl: ioctl() on a DRM fd (libdrm restarts on EINTR/EAGAIN; the model's ioctls are not interrupted). */
export function drmIoctl(fd: number, request: number, arg: ArrayBufferView): number {
  return ioctl(fd, request, arg);
}

/** drmVersion, decoded. */
export interface DrmVersion {
  readonly major: number;
  readonly minor: number;
  readonly patchlevel: number;
  readonly name: string;
  readonly date: string;
  readonly desc: string;
}

/**
 * drmGetVersion: asks for the three lengths first (NULL pointers), then again with room for the strings after the
 * struct in the same argument buffer (the model's user pointers are offsets into it).
 */
export function drmGetVersion(fd: number): DrmVersion {
  validateFd(fd);
  const v = drm_version;
  const probe = new DataView(new ArrayBuffer(v.SIZE));
  ioctl(fd, DRM_IOCTL_VERSION, probe);
  const lens = [v.name_len, v.date_len, v.desc_len].map((o) => Number(probe.getBigUint64(o, true)));
  const total = v.SIZE + lens.reduce((a, b) => a + b, 0);
  const buf = new DataView(new ArrayBuffer(total));
  let at = v.SIZE;
  const ptrs: number[] = [];
  for (const [i, [lenOff, ptrOff]] of ([[v.name_len, v.name], [v.date_len, v.date], [v.desc_len, v.desc]] as const).entries()) {
    buf.setBigUint64(lenOff, BigInt(lens[i]!), true);
    buf.setBigUint64(ptrOff, BigInt(lens[i]! > 0 ? at : 0), true);
    ptrs.push(at);
    at += lens[i]!;
  }
  ioctl(fd, DRM_IOCTL_VERSION, buf);
  const bytes = new Uint8Array(buf.buffer);
  const str = (i: number): string => Buffer.from(bytes.subarray(ptrs[i]!, ptrs[i]! + lens[i]!)).toString('latin1');
  return {
    major: buf.getInt32(v.version_major, true),
    minor: buf.getInt32(v.version_minor, true),
    patchlevel: buf.getInt32(v.version_patchlevel, true),
    name: str(0),
    date: str(1),
    desc: str(2),
  };
}

/** drmGetCap: the capability's value (a u64). */
export function drmGetCap(fd: number, capability: number | bigint): bigint {
  validateFd(fd);
  const a = new DataView(new ArrayBuffer(drm_get_cap.SIZE));
  a.setBigUint64(drm_get_cap.capability, validateU64(capability, 'capability'), true);
  ioctl(fd, DRM_IOCTL_GET_CAP, a);
  return a.getBigUint64(drm_get_cap.value, true);
}

/** drmSetClientCap. */
export function drmSetClientCap(fd: number, capability: number | bigint, value: number | bigint): number {
  validateFd(fd);
  const a = new DataView(new ArrayBuffer(drm_set_client_cap.SIZE));
  a.setBigUint64(drm_set_client_cap.capability, validateU64(capability, 'capability'), true);
  a.setBigUint64(drm_set_client_cap.value, validateU64(value, 'value'), true);
  return ioctl(fd, DRM_IOCTL_SET_CLIENT_CAP, a);
}

/**
 * drmPrimeHandleToFD: a dma-buf fd for a GEM handle. `flags` ⊆ DRM_CLOEXEC | DRM_RDWR (the first export of an
 * object decides whether its dma-buf is writable through mmap).
 */
export function drmPrimeHandleToFD(fd: number, handle: number, flags: number = O_CLOEXEC): number {
  validateFd(fd);
  const p = drm_prime_handle;
  const a = new DataView(new ArrayBuffer(p.SIZE));
  a.setUint32(p.handle, u32(handle, 'handle'), true);
  a.setUint32(p.flags, validateFlags(flags, 'flags') >>> 0, true);
  a.setInt32(p.fd, -1, true);
  ioctl(fd, DRM_IOCTL_PRIME_HANDLE_TO_FD, a);
  return a.getInt32(p.fd, true);
}

/** drmPrimeFDToHandle: the GEM handle (in this DRM file) of a dma-buf — the same handle for the same dma-buf. */
export function drmPrimeFDToHandle(fd: number, primeFd: number): number {
  validateFd(fd);
  const p = drm_prime_handle;
  const a = new DataView(new ArrayBuffer(p.SIZE));
  a.setInt32(p.fd, validateFd(primeFd, 'primeFd'), true);
  ioctl(fd, DRM_IOCTL_PRIME_FD_TO_HANDLE, a);
  return a.getUint32(p.handle, true);
}

/** drmCloseBufferHandle (DRM_IOCTL_GEM_CLOSE): drops this file's handle. */
export function drmCloseBufferHandle(fd: number, handle: number): number {
  validateFd(fd);
  const a = new DataView(new ArrayBuffer(drm_gem_close.SIZE));
  a.setUint32(drm_gem_close.handle, u32(handle, 'handle'), true);
  return ioctl(fd, DRM_IOCTL_GEM_CLOSE, a);
}

/** A dumb buffer as MODE_CREATE_DUMB returns it. */
export interface DumbBuffer {
  readonly handle: number;
  readonly pitch: number;
  /** Bytes (page-aligned); a number: dumb buffers are at most 4 GiB. */
  readonly size: number;
}

/** drmModeCreateDumbBuffer. */
export function drmModeCreateDumbBuffer(fd: number, width: number, height: number, bpp: number, flags = 0): DumbBuffer {
  validateFd(fd);
  const d = drm_mode_create_dumb;
  const a = new DataView(new ArrayBuffer(d.SIZE));
  a.setUint32(d.width, u32(width, 'width'), true);
  a.setUint32(d.height, u32(height, 'height'), true);
  a.setUint32(d.bpp, u32(bpp, 'bpp'), true);
  a.setUint32(d.flags, u32(flags, 'flags'), true);
  ioctl(fd, DRM_IOCTL_MODE_CREATE_DUMB, a);
  return { handle: a.getUint32(d.handle, true), pitch: a.getUint32(d.pitch, true), size: Number(a.getBigUint64(d.size, true)) };
}

/** drmModeMapDumbBuffer: the fake offset to mmap the card fd at. */
export function drmModeMapDumbBuffer(fd: number, handle: number): number {
  validateFd(fd);
  const d = drm_mode_map_dumb;
  const a = new DataView(new ArrayBuffer(d.SIZE));
  a.setUint32(d.handle, u32(handle, 'handle'), true);
  ioctl(fd, DRM_IOCTL_MODE_MAP_DUMB, a);
  return Number(a.getBigUint64(d.offset, true));
}

/** drmModeDestroyDumbBuffer: GEM_CLOSE by another name (EINVAL for an unknown handle, as GEM_CLOSE). */
export function drmModeDestroyDumbBuffer(fd: number, handle: number): number {
  validateFd(fd);
  const a = new DataView(new ArrayBuffer(drm_mode_destroy_dumb.SIZE));
  a.setUint32(drm_mode_destroy_dumb.handle, u32(handle, 'handle'), true);
  return ioctl(fd, DRM_IOCTL_MODE_DESTROY_DUMB, a);
}

/**
 * vgem_fence_attach (IGT lib/igt_vgem.c): a new fence on the object's reservation, as a writer with
 * VGEM_FENCE_WRITE, else a reader; returns its per-file id for vgemFenceSignal. EBUSY when it conflicts.
 */
export function vgemFenceAttach(fd: number, handle: number, flags = 0): number {
  validateFd(fd);
  const d = drm_vgem_fence_attach;
  const a = new DataView(new ArrayBuffer(d.SIZE));
  a.setUint32(d.handle, u32(handle, 'handle'), true);
  a.setUint32(d.flags, u32(flags, 'flags'), true);
  ioctl(fd, DRM_IOCTL_VGEM_FENCE_ATTACH, a);
  return a.getUint32(d.out_fence, true);
}

/** vgem_fence_signal: signals the fence `fence` of this file (ETIMEDOUT if its 10 s timer had already fired). */
export function vgemFenceSignal(fd: number, fence: number): number {
  validateFd(fd);
  const d = drm_vgem_fence_signal;
  const a = new DataView(new ArrayBuffer(d.SIZE));
  a.setUint32(d.fence, u32(fence, 'fence'), true);
  return ioctl(fd, DRM_IOCTL_VGEM_FENCE_SIGNAL, a);
}
