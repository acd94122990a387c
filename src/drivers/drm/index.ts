/** The DRM core for drivers of this machine: GEM objects and files, PRIME, drm_ioctl, device registration. */
export * from './drm-gem.js';
export * from './drm-prime.js';
export * from './drm-ioctl.js';
export * from './drm-drv.js';
export * from './drm-gem-shmem.js';
