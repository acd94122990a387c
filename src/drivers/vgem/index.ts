/**
 * vgem (drivers/gpu/drm/vgem): a virtual GEM provider at /dev/dri/card0 (+ renderD128) — dumb buffers of ordinary
 * memory, PRIME export and import, and fences a process attaches and signals itself. The example to copy when
 * writing a driver: it uses only the driver API (dmabuf-sim/driver) through the DRM core in ../drm.
 *
 * What a driver module provides is `probe(drv)`: it registers its device nodes (here through drmDevRegister,
 * whose file operations then run in this worker, in the calling process's context) and returns.
 */
import type { Driver } from '../../driver/index.js';
import { DRM_COMMAND_BASE, DRM_IOCTL_VGEM_FENCE_ATTACH, DRM_IOCTL_VGEM_FENCE_SIGNAL, DRM_VGEM_FENCE_ATTACH, DRM_VGEM_FENCE_SIGNAL } from '../../uapi/drm.js';
import {
  DRM_AUTH,
  DRM_RENDER_ALLOW,
  type DrmDevice,
  type DrmDriverDesc,
  type DrmIoctlDesc,
  drmDevRegister,
  drmGemShmemDumbCreate,
  drmGemShmemPrimeImportSgTable,
} from '../drm/index.js';
import { vgemFenceAttachIoctl, vgemFenceClose, vgemFenceOpen, vgemFenceSignalIoctl } from './vgem-fence.js';

export { VGEM_FENCE_TIMEOUT_MS } from './vgem-fence.js';

/** vgem_ioctls[]: index = nr − DRM_COMMAND_BASE. */
const ioctls: DrmIoctlDesc[] = [];
ioctls[DRM_VGEM_FENCE_ATTACH] = { cmd: DRM_IOCTL_VGEM_FENCE_ATTACH, func: vgemFenceAttachIoctl, flags: DRM_AUTH | DRM_RENDER_ALLOW, name: 'VGEM_FENCE_ATTACH' };
ioctls[DRM_VGEM_FENCE_SIGNAL] = { cmd: DRM_IOCTL_VGEM_FENCE_SIGNAL, func: vgemFenceSignalIoctl, flags: DRM_AUTH | DRM_RENDER_ALLOW, name: 'VGEM_FENCE_SIGNAL' };
// The table is indexed from DRM_COMMAND_BASE: slot 0 (nr 0x40) has no ioctl.
const vgemIoctls: readonly DrmIoctlDesc[] = Array.from({ length: ioctls.length }, (_, i) => ioctls[i] ?? { cmd: 0, func: null, flags: 0, name: `nr 0x${(DRM_COMMAND_BASE + i).toString(16)}` });

/** struct drm_driver vgem_driver (6.12: DRIVER_GEM | DRIVER_RENDER, the shmem helpers). */
export const vgemDriver: DrmDriverDesc = {
  name: 'vgem',
  desc: 'Virtual GEM provider',
  date: '20120112',
  major: 1,
  minor: 0,
  patchlevel: 0,
  features: { render: true, modeset: false, syncobj: false },
  ioctls: vgemIoctls,
  open: (_dev, file) => vgemFenceOpen(file),
  postclose: (_dev, file) => vgemFenceClose(file),
  dumbCreate: drmGemShmemDumbCreate,
  importSgTable: drmGemShmemPrimeImportSgTable,
};

/** The vgem device of this worker (for tests of the driver itself). */
export let vgemDevice: DrmDevice | null = null;

/** vgem_init: card 0, attached to importers' buffers as device "vgem" (its platform device). */
export function probe(drv: Driver): void {
  vgemDevice = drmDevRegister(drv, vgemDriver, 0, 'vgem');
}
