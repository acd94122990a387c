/**
 * drm_ioctl (drm_ioctl.c) and the core ioctls a render/GEM driver serves: the dispatch rules (type, core or driver
 * nr, the copy in and out by the two commands' directions with zero-extension and truncation, permissions), VERSION,
 * SET_VERSION, GET_CAP, SET_CLIENT_CAP, GEM_CLOSE/FLINK/OPEN, PRIME, dumb buffers, and the KMS and syncobj ioctls
 * a driver without DRIVER_MODESET / DRIVER_SYNCOBJ refuses with EOPNOTSUPP.
 */
import { KernelError, E } from '../../driver/index.js';
import { IOC_IN, IOC_OUT, _IOC_NR, _IOC_SIZE, _IOC_TYPE, _IOW, _IOWR } from '../../uapi/ioctl.js';
import {
  DRM_CAP_PRIME,
  DRM_CAP_SYNCOBJ,
  DRM_CAP_SYNCOBJ_TIMELINE,
  DRM_CAP_TIMESTAMP_MONOTONIC,
  DRM_COMMAND_BASE,
  DRM_COMMAND_END,
  DRM_IF_MAJOR,
  DRM_IF_MINOR,
  DRM_IOCTL_BASE,
  DRM_IOCTL_GEM_CLOSE,
  DRM_IOCTL_GEM_FLINK,
  DRM_IOCTL_GEM_OPEN,
  DRM_IOCTL_GET_CAP,
  DRM_IOCTL_MODE_CREATE_DUMB,
  DRM_IOCTL_MODE_DESTROY_DUMB,
  DRM_IOCTL_MODE_MAP_DUMB,
  DRM_IOCTL_PRIME_FD_TO_HANDLE,
  DRM_IOCTL_PRIME_HANDLE_TO_FD,
  DRM_IOCTL_SET_CLIENT_CAP,
  DRM_IOCTL_SET_VERSION,
  DRM_IOCTL_VERSION,
  DRM_PRIME_CAP_EXPORT,
  DRM_PRIME_CAP_IMPORT,
  drm_gem_close,
  drm_gem_flink,
  drm_gem_open,
  drm_get_cap,
  drm_mode_create_dumb,
  drm_mode_destroy_dumb,
  drm_mode_map_dumb,
  drm_prime_handle,
  drm_set_version,
  drm_version,
} from '../../uapi/drm.js';
import { PAGE_SIZE } from '../../uapi/posix.js';
import {
  DRM_AUTH,
  DRM_MASTER,
  DRM_RENDER_ALLOW,
  DRM_ROOT_ONLY,
  type DrmDevice,
  type DrmFile,
  type DrmIoctlDesc,
  type DrmIoctlFunc,
  DrmUserMemory,
  drmGemHandleCreate,
  drmGemHandleDelete,
  drmGemMmapOffset,
  drmGemObjectLookup,
  drmGemObjectPut,
  drmGemObjectGet,
} from './drm-gem.js';
import { drmPrimeFdToHandle, drmPrimeHandleToFd } from './drm-prime.js';

const U32_MAX = 0xffff_ffff;
const d = (name: string, cmd: number, func: DrmIoctlFunc | null, flags: number): DrmIoctlDesc => ({ cmd, func, flags, name });

/** drm_copy_field: min(len, strlen) bytes at the user pointer (no NUL), *len = strlen. */
function copyField(data: DataView, user: DrmUserMemory, lenOff: number, ptrOff: number, value: string): void {
  const bytes = Buffer.from(value, 'latin1');
  const want = data.getBigUint64(lenOff, true);
  const len = want < BigInt(bytes.length) ? Number(want) : bytes.length;
  data.setBigUint64(lenOff, BigInt(bytes.length), true);
  const ptr = data.getBigUint64(ptrOff, true);
  if (len > 0 && ptr !== 0n) {
    if (ptr > BigInt(Number.MAX_SAFE_INTEGER)) throw new KernelError(E.EFAULT);
    user.copyToUser(Number(ptr), bytes.subarray(0, len));
  }
}

/** DRM_IOCTL_VERSION. */
const drmVersion: DrmIoctlFunc = (dev, data, _file, user) => {
  const v = drm_version;
  const drv = dev.driver;
  data.setInt32(v.version_major, drv.major, true);
  data.setInt32(v.version_minor, drv.minor, true);
  data.setInt32(v.version_patchlevel, drv.patchlevel, true);
  copyField(data, user, v.name_len, v.name, drv.name);
  copyField(data, user, v.date_len, v.date, drv.date);
  copyField(data, user, v.desc_len, v.desc, drv.desc);
  return 0;
};

/** DRM_IOCTL_SET_VERSION (master only): checks the asked interface/driver versions, always reports the real ones. */
const drmSetVersion: DrmIoctlFunc = (dev, data) => {
  const s = drm_set_version;
  const diMajor = data.getInt32(s.drm_di_major, true);
  const diMinor = data.getInt32(s.drm_di_minor, true);
  const ddMajor = data.getInt32(s.drm_dd_major, true);
  const ddMinor = data.getInt32(s.drm_dd_minor, true);
  let ret = 0;
  if (diMajor !== -1) {
    if (diMajor !== DRM_IF_MAJOR || diMinor < 0 || diMinor > DRM_IF_MINOR) ret = -E.EINVAL;
    else dev.ifVersion = Math.max((diMajor << 16) | diMinor, dev.ifVersion);
  }
  if (ret === 0 && ddMajor !== -1) {
    if (ddMajor !== dev.driver.major || ddMinor < 0 || ddMinor > dev.driver.minor) ret = -E.EINVAL;
  }
  data.setInt32(s.drm_di_major, DRM_IF_MAJOR, true);
  data.setInt32(s.drm_di_minor, DRM_IF_MINOR, true);
  data.setInt32(s.drm_dd_major, dev.driver.major, true);
  data.setInt32(s.drm_dd_minor, dev.driver.minor, true);
  if (ret) throw new KernelError(-ret);
  return 0;
};

/** DRM_IOCTL_GET_CAP: the render-node caps for every driver; the rest only with DRIVER_MODESET (else EOPNOTSUPP). */
const drmGetCap: DrmIoctlFunc = (dev, data) => {
  const cap = data.getBigUint64(drm_get_cap.capability, true);
  data.setBigUint64(drm_get_cap.value, 0n, true);
  const set = (v: number): number => (data.setBigUint64(drm_get_cap.value, BigInt(v), true), 0);
  switch (cap) {
    case BigInt(DRM_CAP_TIMESTAMP_MONOTONIC):
      return set(1);
    case BigInt(DRM_CAP_PRIME):
      return set(DRM_PRIME_CAP_IMPORT | DRM_PRIME_CAP_EXPORT);
    case BigInt(DRM_CAP_SYNCOBJ):
    case BigInt(DRM_CAP_SYNCOBJ_TIMELINE):
      return set(dev.driver.features.syncobj ? 1 : 0);
  }
  if (!dev.driver.features.modeset) throw new KernelError(E.EOPNOTSUPP);
  throw new KernelError(E.EINVAL); // (no KMS driver in this core yet)
};

/** DRM_IOCTL_SET_CLIENT_CAP: every client cap is a KMS one; without DRIVER_MODESET, EOPNOTSUPP. */
const drmSetClientCap: DrmIoctlFunc = (dev) => {
  if (!dev.driver.features.modeset) throw new KernelError(E.EOPNOTSUPP);
  throw new KernelError(E.EINVAL);
};

/** DRM_IOCTL_GEM_CLOSE: drops the file's handle (EINVAL for an unknown one). */
const drmGemCloseIoctl: DrmIoctlFunc = (_dev, data, file) => {
  drmGemHandleDelete(file, data.getUint32(drm_gem_close.handle, true));
  return 0;
};

/** DRM_IOCTL_GEM_FLINK: a global name for the object (lowest free ≥ 1, kept until its last handle goes). */
const drmGemFlinkIoctl: DrmIoctlFunc = (dev, data, file) => {
  const obj = drmGemObjectLookup(file, data.getUint32(drm_gem_flink.handle, true));
  if (!obj) throw new KernelError(E.ENOENT);
  try {
    if (obj.handleCount === 0) throw new KernelError(E.ENOENT);
    if (!obj.name) obj.name = dev.names.alloc(obj);
    data.setUint32(drm_gem_flink.name, obj.name, true);
    return 0;
  } finally {
    drmGemObjectPut(obj);
  }
};

/** DRM_IOCTL_GEM_OPEN: a new handle (every call) for a flink name; ENOENT for an unknown name. */
const drmGemOpenIoctl: DrmIoctlFunc = (dev, data, file) => {
  const obj = dev.names.find(data.getUint32(drm_gem_open.name, true));
  if (!obj) throw new KernelError(E.ENOENT);
  drmGemObjectGet(obj);
  const handle = drmGemHandleCreate(file, obj);
  drmGemObjectPut(obj);
  data.setUint32(drm_gem_open.handle, handle, true);
  data.setBigUint64(drm_gem_open.size, BigInt(obj.size), true);
  return 0;
};

const drmPrimeHandleToFdIoctl: DrmIoctlFunc = (_dev, data, file) => {
  const p = drm_prime_handle;
  const fd = drmPrimeHandleToFd(file, data.getUint32(p.handle, true), data.getUint32(p.flags, true));
  data.setInt32(p.fd, fd, true);
  return 0;
};

const drmPrimeFdToHandleIoctl: DrmIoctlFunc = (dev, data, file) => {
  const p = drm_prime_handle;
  data.setUint32(p.handle, drmPrimeFdToHandle(dev, file, data.getInt32(p.fd, true)), true);
  return 0;
};

/**
 * DRM_IOCTL_MODE_CREATE_DUMB (drm_mode_create_dumb): width, height or bpp 0, or a 32-bit overflow of the size →
 * EINVAL; the outputs are zeroed before the driver fills them (and on any failure).
 */
const drmModeCreateDumbIoctl: DrmIoctlFunc = (dev, data, file) => {
  const c = drm_mode_create_dumb;
  const zero = (): void => {
    data.setUint32(c.handle, 0, true);
    data.setUint32(c.pitch, 0, true);
    data.setBigUint64(c.size, 0n, true);
  };
  try {
    if (!dev.driver.dumbCreate) throw new KernelError(E.ENOSYS);
    const width = data.getUint32(c.width, true);
    const height = data.getUint32(c.height, true);
    const bpp = data.getUint32(c.bpp, true);
    if (!width || !height || !bpp) throw new KernelError(E.EINVAL);
    if (bpp > U32_MAX - 8) throw new KernelError(E.EINVAL);
    const cpp = Math.ceil(bpp / 8);
    if (cpp > Math.floor(U32_MAX / width)) throw new KernelError(E.EINVAL);
    const stride = cpp * width;
    if (height > Math.floor(U32_MAX / stride)) throw new KernelError(E.EINVAL);
    const size = height * stride;
    if (((size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)) >>> 0 === 0) throw new KernelError(E.EINVAL); // PAGE_ALIGN wraps (u32)
    const args = { width, height, bpp, handle: 0, pitch: 0, size: 0 };
    zero();
    dev.driver.dumbCreate(file, dev, args);
    data.setUint32(c.handle, args.handle, true);
    data.setUint32(c.pitch, args.pitch, true);
    data.setBigUint64(c.size, BigInt(args.size), true);
    return 0;
  } catch (e) {
    zero();
    throw e;
  }
};

/** DRM_IOCTL_MODE_MAP_DUMB (drm_gem_dumb_map_offset): the fake offset; ENOENT unknown handle, EINVAL an import. */
const drmModeMapDumbIoctl: DrmIoctlFunc = (_dev, data, file) => {
  const m = drm_mode_map_dumb;
  try {
    const obj = drmGemObjectLookup(file, data.getUint32(m.handle, true));
    if (!obj) throw new KernelError(E.ENOENT);
    try {
      if (obj.importAttach) throw new KernelError(E.EINVAL); // Don't allow imported objects to be mapped
      data.setBigUint64(m.offset, BigInt(drmGemMmapOffset(obj)), true);
      return 0;
    } finally {
      drmGemObjectPut(obj);
    }
  } catch (e) {
    data.setBigUint64(m.offset, 0n, true);
    throw e;
  }
};

/** DRM_IOCTL_MODE_DESTROY_DUMB: GEM_CLOSE by another name. */
const drmModeDestroyDumbIoctl: DrmIoctlFunc = (_dev, data, file) => {
  drmGemHandleDelete(file, data.getUint32(drm_mode_destroy_dumb.handle, true));
  return 0;
};

/** A KMS ioctl on a driver without DRIVER_MODESET (every drm_mode_* handler's first check). */
const notModeset: DrmIoctlFunc = (dev) => {
  if (!dev.driver.features.modeset) throw new KernelError(E.EOPNOTSUPP);
  throw new KernelError(E.EINVAL);
};
/** A syncobj ioctl on a driver without DRIVER_SYNCOBJ. */
const notSyncobj: DrmIoctlFunc = (dev) => {
  if (!dev.driver.features.syncobj) throw new KernelError(E.EOPNOTSUPP);
  throw new KernelError(E.EINVAL);
};
/** drm_noop / drm_invalid_op: deprecated ioctls kept for old userspace. */
const drmNoop: DrmIoctlFunc = () => 0;
const drmInvalidOp: DrmIoctlFunc = () => {
  throw new KernelError(E.EINVAL);
};

const B = DRM_IOCTL_BASE;
/** KMS and syncobj ioctls of 6.12 (nr, direction, struct size, flags), served only by KMS / syncobj drivers. */
const KMS: [string, number, number, number][] = [
  ['MODE_GETRESOURCES', 0xa0, 64, 0],
  ['MODE_GETCRTC', 0xa1, 104, 0],
  ['MODE_SETCRTC', 0xa2, 104, DRM_MASTER],
  ['MODE_CURSOR', 0xa3, 28, DRM_MASTER],
  ['MODE_GETGAMMA', 0xa4, 32, 0],
  ['MODE_SETGAMMA', 0xa5, 32, DRM_MASTER],
  ['MODE_GETENCODER', 0xa6, 20, 0],
  ['MODE_GETCONNECTOR', 0xa7, 80, 0],
  ['MODE_ATTACHMODE', 0xa8, 72, DRM_MASTER],
  ['MODE_DETACHMODE', 0xa9, 72, DRM_MASTER],
  ['MODE_GETPROPERTY', 0xaa, 64, 0],
  ['MODE_SETPROPERTY', 0xab, 16, DRM_MASTER],
  ['MODE_GETPROPBLOB', 0xac, 16, 0],
  ['MODE_GETFB', 0xad, 28, 0],
  ['MODE_ADDFB', 0xae, 28, 0],
  ['MODE_RMFB', 0xaf, 4, 0],
  ['MODE_PAGE_FLIP', 0xb0, 24, DRM_MASTER],
  ['MODE_DIRTYFB', 0xb1, 24, DRM_MASTER],
  ['MODE_GETPLANERESOURCES', 0xb5, 16, 0],
  ['MODE_GETPLANE', 0xb6, 32, 0],
  ['MODE_SETPLANE', 0xb7, 48, DRM_MASTER],
  ['MODE_ADDFB2', 0xb8, 104, 0],
  ['MODE_OBJ_GETPROPERTIES', 0xb9, 32, 0],
  ['MODE_OBJ_SETPROPERTY', 0xba, 24, DRM_MASTER],
  ['MODE_CURSOR2', 0xbb, 36, DRM_MASTER],
  ['MODE_ATOMIC', 0xbc, 56, DRM_MASTER],
  ['MODE_CREATEPROPBLOB', 0xbd, 16, 0],
  ['MODE_DESTROYPROPBLOB', 0xbe, 4, 0],
  ['MODE_CREATE_LEASE', 0xc6, 24, DRM_MASTER],
  ['MODE_LIST_LESSEES', 0xc7, 16, DRM_MASTER],
  ['MODE_GET_LEASE', 0xc8, 16, DRM_MASTER],
  ['MODE_REVOKE_LEASE', 0xc9, 4, DRM_MASTER],
  ['MODE_GETFB2', 0xce, 104, 0],
  ['MODE_CLOSEFB', 0xd0, 8, 0],
];
const SYNCOBJ: [string, number, number][] = [
  ['SYNCOBJ_CREATE', 0xbf, 8],
  ['SYNCOBJ_DESTROY', 0xc0, 8],
  ['SYNCOBJ_HANDLE_TO_FD', 0xc1, 16],
  ['SYNCOBJ_FD_TO_HANDLE', 0xc2, 16],
  ['SYNCOBJ_WAIT', 0xc3, 40],
  ['SYNCOBJ_RESET', 0xc4, 16],
  ['SYNCOBJ_SIGNAL', 0xc5, 16],
  ['SYNCOBJ_TIMELINE_WAIT', 0xca, 40],
  ['SYNCOBJ_QUERY', 0xcb, 24],
  ['SYNCOBJ_TRANSFER', 0xcc, 32],
  ['SYNCOBJ_TIMELINE_SIGNAL', 0xcd, 24],
  ['SYNCOBJ_EVENTFD', 0xcf, 24],
];

/**
 * The core table (drm_ioctls[]), indexed by nr. Legacy ioctls of kernels without CONFIG_DRM_LEGACY are
 * drm_invalid_op; nrs with no entry are EINVAL (no function). Not modelled (EINVAL, as a missing entry):
 * GET_UNIQUE, GET_MAGIC, AUTH_MAGIC, GET_CLIENT, GET_STATS, SET_MASTER, DROP_MASTER, WAIT_VBLANK, the CRTC sequence
 * ioctls.
 */
const CORE = new Map<number, DrmIoctlDesc>();
for (const e of [
  d('VERSION', DRM_IOCTL_VERSION, drmVersion, DRM_RENDER_ALLOW),
  d('SET_VERSION', DRM_IOCTL_SET_VERSION, drmSetVersion, DRM_MASTER),
  d('GEM_CLOSE', DRM_IOCTL_GEM_CLOSE, drmGemCloseIoctl, DRM_RENDER_ALLOW),
  d('GEM_FLINK', DRM_IOCTL_GEM_FLINK, drmGemFlinkIoctl, DRM_AUTH),
  d('GEM_OPEN', DRM_IOCTL_GEM_OPEN, drmGemOpenIoctl, DRM_AUTH),
  d('GET_CAP', DRM_IOCTL_GET_CAP, drmGetCap, DRM_RENDER_ALLOW),
  d('SET_CLIENT_CAP', DRM_IOCTL_SET_CLIENT_CAP, drmSetClientCap, 0),
  d('SET_UNIQUE', _IOW(B, 0x10, 16), drmInvalidOp, DRM_AUTH | DRM_MASTER | DRM_ROOT_ONLY),
  d('BLOCK', _IOWR(B, 0x12, 4), drmNoop, DRM_AUTH | DRM_MASTER | DRM_ROOT_ONLY),
  d('UNBLOCK', _IOWR(B, 0x13, 4), drmNoop, DRM_AUTH | DRM_MASTER | DRM_ROOT_ONLY),
  d('ADD_DRAW', _IOWR(B, 0x27, 4), drmNoop, DRM_AUTH | DRM_MASTER | DRM_ROOT_ONLY),
  d('RM_DRAW', _IOWR(B, 0x28, 4), drmNoop, DRM_AUTH | DRM_MASTER | DRM_ROOT_ONLY),
  d('FINISH', _IOW(B, 0x2c, 8), drmNoop, DRM_AUTH),
  d('UPDATE_DRAW', _IOW(B, 0x3f, 24), drmNoop, DRM_AUTH | DRM_MASTER | DRM_ROOT_ONLY),
  d('PRIME_HANDLE_TO_FD', DRM_IOCTL_PRIME_HANDLE_TO_FD, drmPrimeHandleToFdIoctl, DRM_RENDER_ALLOW),
  d('PRIME_FD_TO_HANDLE', DRM_IOCTL_PRIME_FD_TO_HANDLE, drmPrimeFdToHandleIoctl, DRM_RENDER_ALLOW),
  d('MODE_CREATE_DUMB', DRM_IOCTL_MODE_CREATE_DUMB, drmModeCreateDumbIoctl, DRM_RENDER_ALLOW),
  d('MODE_MAP_DUMB', DRM_IOCTL_MODE_MAP_DUMB, drmModeMapDumbIoctl, DRM_RENDER_ALLOW),
  d('MODE_DESTROY_DUMB', DRM_IOCTL_MODE_DESTROY_DUMB, drmModeDestroyDumbIoctl, DRM_RENDER_ALLOW),
  ...KMS.map(([n, nr, size, flags]) => d(n, _IOWR(B, nr, size), notModeset, flags)),
  ...SYNCOBJ.map(([n, nr, size]) => d(n, _IOWR(B, nr, size), notSyncobj, DRM_RENDER_ALLOW)),
]) {
  CORE.set(_IOC_NR(e.cmd), e);
}

/** drm_ioctl_permit: the caller's right to the ioctl (EACCES). Processes run as root: DRM_ROOT_ONLY passes. */
function permit(flags: number, file: DrmFile): void {
  if (flags & DRM_AUTH && !file.isRender && !file.authenticated) throw new KernelError(E.EACCES);
  if (flags & DRM_MASTER && !file.isMaster) throw new KernelError(E.EACCES);
  if (!(flags & DRM_RENDER_ALLOW) && file.isRender) throw new KernelError(E.EACCES);
}

/**
 * drm_ioctl: dispatches `cmd` for `file`. The type byte must be 'd' (ENOTTY — the spec's rule; Linux's drm_ioctl
 * does not look at it); an nr without a function is EINVAL. The kernel copy is max(the caller's size, the table's
 * size) bytes: the caller's in-size bytes are copied in (EFAULT past the buffer) and the rest zeroed — so an older,
 * shorter struct reads as zero-extended and a newer, longer one is truncated — and the caller's out-size bytes are
 * copied back after the handler, even when it failed. `user` is the caller's argument buffer (null: an integer
 * argument, i.e. no user memory at all); the handler's writes through user pointers land in it.
 *
 * Runs in the driver worker, in the calling process's context. Returns the handler's value; throws KernelError.
 */
export function drmIoctl(dev: DrmDevice, file: DrmFile, cmd: number, user: Uint8Array | null): number {
  cmd >>>= 0;
  if (_IOC_TYPE(cmd) !== B.charCodeAt(0)) throw new KernelError(E.ENOTTY);
  const nr = _IOC_NR(cmd);
  const desc = nr >= DRM_COMMAND_BASE && nr < DRM_COMMAND_END ? dev.driver.ioctls[nr - DRM_COMMAND_BASE] : CORE.get(nr);
  if (!desc?.func) throw new KernelError(E.EINVAL);
  const drvSize = _IOC_SIZE(desc.cmd);
  let inSize = _IOC_SIZE(cmd);
  let outSize = inSize;
  if (((cmd & desc.cmd & IOC_IN) >>> 0) === 0) inSize = 0;
  if (((cmd & desc.cmd & IOC_OUT) >>> 0) === 0) outSize = 0;
  const ksize = Math.max(inSize, outSize, drvSize);
  const mem = new DrmUserMemory(user);
  const kdata = new Uint8Array(ksize);
  if (inSize > 0) kdata.set(mem.copyFromUser(0, inSize));
  const data = new DataView(kdata.buffer);
  let err: unknown = null;
  let ret = 0;
  try {
    permit(desc.flags, file);
    ret = desc.func(dev, data, file, mem);
  } catch (e) {
    err = e;
  }
  if (outSize > 0) {
    try {
      mem.copyToUser(0, kdata.subarray(0, outSize));
    } catch (e) {
      err = e; // copy_to_user failed: EFAULT replaces the handler's result
    }
  }
  if (err) throw err;
  return ret;
}
