/**
 * drm_dev_register + drm_fops (drm_drv.c, drm_file.c): puts a DRM device's nodes (/dev/dri/cardN and, for a
 * DRIVER_RENDER driver, /dev/dri/renderD(128+N)) in the machine with the core's file operations — open makes a
 * DrmFile (the first primary open while no master exists becomes master), ioctl goes through drmIoctl, mmap through
 * drmGemMmap, the last close releases the file's handles, its master role and then the driver's postclose.
 */
import { KernelError, E, type Driver, type DriverFile, type FileOps } from '../../driver/index.js';
import { DRM_DEV_NAME, DRM_RENDER_DEV_NAME, DRM_RENDER_MINOR_BASE } from '../../uapi/drm.js';
import { DrmDevice, DrmFile, drmGemMmap, drmGemRelease, type DrmDriverDesc, type DrmMinorType } from './drm-gem.js';
import { drmIoctl } from './drm-ioctl.js';

function drmFileOf(file: DriverFile): DrmFile {
  const f = file.privateData;
  if (!(f instanceof DrmFile)) throw new KernelError(E.ENODEV);
  return f;
}

/** drm_fops for one minor of `dev`. */
function drmFops(dev: DrmDevice, minor: DrmMinorType): FileOps {
  return {
    /** drm_open → drm_open_helper: a new DrmFile; the first primary client is master (drm_master_open). */
    open(file, ctx) {
      const f = new DrmFile(dev, minor, ctx.pid);
      if (minor === 'primary' && dev.master === null) dev.master = f;
      dev.files.add(f);
      file.privateData = f;
      try {
        dev.driver.open?.(dev, f);
      } catch (e) {
        if (dev.master === f) dev.master = null;
        dev.files.delete(f);
        throw e;
      }
    },
    /** drm_release → drm_file_free: handles, master role, the driver's postclose. */
    release(file) {
      const f = file.privateData;
      if (!(f instanceof DrmFile)) return;
      drmGemRelease(f);
      if (dev.master === f) dev.master = null;
      dev.driver.postclose?.(dev, f);
      dev.files.delete(f);
      file.privateData = null;
    },
    ioctl(file, cmd, arg) {
      return drmIoctl(dev, drmFileOf(file), cmd, arg.bytes);
    },
    /**
     * drm_poll: EPOLLIN | EPOLLRDNORM while the file has pending DRM events. This core queues none (no vblank or
     * flip events on a GEM-only device), so a card fd is never ready: poll sleeps its whole timeout, as on vgem.
     */
    poll() {
      return 0;
    },
    mmap(file, vma) {
      return drmGemMmap(drmFileOf(file), vma);
    },
  };
}

/**
 * drm_dev_register: registers card `index` (and its render node) served by `desc`. `deviceName` is the device
 * importers attach as (dev->dev: vgem's platform device is "vgem"). Returns the device.
 */
export function drmDevRegister(drv: Driver, desc: DrmDriverDesc, index: number, deviceName: string): DrmDevice {
  const dev = new DrmDevice(desc, deviceName);
  drv.registerChrdev(`${DRM_DEV_NAME}${index}`, drmFops(dev, 'primary'));
  if (desc.features.render) drv.registerChrdev(`${DRM_RENDER_DEV_NAME}${DRM_RENDER_MINOR_BASE + index}`, drmFops(dev, 'render'));
  return dev;
}
