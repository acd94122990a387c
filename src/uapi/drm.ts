/**
 * include/uapi/drm/drm.h, drm_mode.h and vgem_drm.h: the DRM core and vgem ioctl numbers, struct layouts (byte
 * offsets, little-endian, x86-64 sizes), caps and flags a process passes to /dev/dri/card0.
 *
 * User pointers inside DRM structs (`drm_version.name/date/desc`) follow the model's rule of
 * src/uapi/sync-file.ts: a byte offset into the ioctl's own argument buffer, 0 = NULL, out of range = EFAULT.
 */
import { _IOW, _IOWR } from './ioctl.js';
import { O_CLOEXEC, O_RDWR } from './posix.js';

export const DRM_IOCTL_BASE = 'd';
/** Driver-private ioctl numbers are DRM_COMMAND_BASE ≤ nr < DRM_COMMAND_END; the core's are outside. */
export const DRM_COMMAND_BASE = 0x40;
export const DRM_COMMAND_END = 0xa0;

/** The DRM interface version SET_VERSION negotiates (DRM_IF_MAJOR/MINOR). */
export const DRM_IF_MAJOR = 1;
export const DRM_IF_MINOR = 4;

/** drm_prime_handle.flags: the only two HANDLE_TO_FD accepts. */
export const DRM_RDWR = O_RDWR;
export const DRM_CLOEXEC = O_CLOEXEC;

// DRM_IOCTL_GET_CAP capabilities
export const DRM_CAP_DUMB_BUFFER = 0x1;
export const DRM_CAP_VBLANK_HIGH_CRTC = 0x2;
export const DRM_CAP_DUMB_PREFERRED_DEPTH = 0x3;
export const DRM_CAP_DUMB_PREFER_SHADOW = 0x4;
export const DRM_CAP_PRIME = 0x5;
export const DRM_PRIME_CAP_IMPORT = 0x1;
export const DRM_PRIME_CAP_EXPORT = 0x2;
export const DRM_CAP_TIMESTAMP_MONOTONIC = 0x6;
export const DRM_CAP_ASYNC_PAGE_FLIP = 0x7;
export const DRM_CAP_CURSOR_WIDTH = 0x8;
export const DRM_CAP_CURSOR_HEIGHT = 0x9;
export const DRM_CAP_ADDFB2_MODIFIERS = 0x10;
export const DRM_CAP_PAGE_FLIP_TARGET = 0x11;
export const DRM_CAP_CRTC_IN_VBLANK_EVENT = 0x12;
export const DRM_CAP_SYNCOBJ = 0x13;
export const DRM_CAP_SYNCOBJ_TIMELINE = 0x14;
export const DRM_CAP_ATOMIC_ASYNC_PAGE_FLIP = 0x15;

// DRM_IOCTL_SET_CLIENT_CAP capabilities
export const DRM_CLIENT_CAP_STEREO_3D = 1;
export const DRM_CLIENT_CAP_UNIVERSAL_PLANES = 2;
export const DRM_CLIENT_CAP_ATOMIC = 3;
export const DRM_CLIENT_CAP_ASPECT_RATIO = 4;
export const DRM_CLIENT_CAP_WRITEBACK_CONNECTORS = 5;
export const DRM_CLIENT_CAP_CURSOR_PLANE_HOTSPOT = 6;

/**
 * struct drm_version { int version_major, version_minor, version_patchlevel; size_t name_len; char *name;
 * size_t date_len; char *date; size_t desc_len; char *desc; } — the pointers are offsets (see the DOC block).
 */
export const drm_version = {
  SIZE: 64,
  version_major: 0,
  version_minor: 4,
  version_patchlevel: 8,
  name_len: 16,
  name: 24,
  date_len: 32,
  date: 40,
  desc_len: 48,
  desc: 56,
} as const;
/** struct drm_set_version { int drm_di_major, drm_di_minor, drm_dd_major, drm_dd_minor; } */
export const drm_set_version = { SIZE: 16, drm_di_major: 0, drm_di_minor: 4, drm_dd_major: 8, drm_dd_minor: 12 } as const;
/** struct drm_gem_close { __u32 handle; __u32 pad; } */
export const drm_gem_close = { SIZE: 8, handle: 0, pad: 4 } as const;
/** struct drm_gem_flink { __u32 handle; __u32 name; } */
export const drm_gem_flink = { SIZE: 8, handle: 0, name: 4 } as const;
/** struct drm_gem_open { __u32 name; __u32 handle; __u64 size; } */
export const drm_gem_open = { SIZE: 16, name: 0, handle: 4, size: 8 } as const;
/** struct drm_get_cap { __u64 capability; __u64 value; } */
export const drm_get_cap = { SIZE: 16, capability: 0, value: 8 } as const;
/** struct drm_set_client_cap { __u64 capability; __u64 value; } */
export const drm_set_client_cap = { SIZE: 16, capability: 0, value: 8 } as const;
/** struct drm_prime_handle { __u32 handle; __u32 flags; __s32 fd; } */
export const drm_prime_handle = { SIZE: 12, handle: 0, flags: 4, fd: 8 } as const;
/** struct drm_mode_create_dumb { __u32 height, width, bpp, flags; __u32 handle, pitch; __u64 size; } (out: handle, pitch, size) */
export const drm_mode_create_dumb = { SIZE: 32, height: 0, width: 4, bpp: 8, flags: 12, handle: 16, pitch: 20, size: 24 } as const;
/** struct drm_mode_map_dumb { __u32 handle; __u32 pad; __u64 offset; } (out: the fake mmap offset) */
export const drm_mode_map_dumb = { SIZE: 16, handle: 0, pad: 4, offset: 8 } as const;
/** struct drm_mode_destroy_dumb { __u32 handle; } */
export const drm_mode_destroy_dumb = { SIZE: 4, handle: 0 } as const;
/**
 * struct drm_mode_card_res (64): fb/crtc/connector/encoder id pointers, their counts, min/max width/height — only
 * its size matters on vgem, whose KMS ioctls all fail with EOPNOTSUPP.
 */
export const drm_mode_card_res = {
  SIZE: 64,
  fb_id_ptr: 0,
  crtc_id_ptr: 8,
  connector_id_ptr: 16,
  encoder_id_ptr: 24,
  count_fbs: 32,
  count_crtcs: 36,
  count_connectors: 40,
  count_encoders: 44,
  min_width: 48,
  max_width: 52,
  min_height: 56,
  max_height: 60,
} as const;

export const DRM_IOCTL_VERSION = _IOWR(DRM_IOCTL_BASE, 0x00, drm_version.SIZE); // 0xC0406400
export const DRM_IOCTL_SET_VERSION = _IOWR(DRM_IOCTL_BASE, 0x07, drm_set_version.SIZE); // 0xC0106407
export const DRM_IOCTL_GEM_CLOSE = _IOW(DRM_IOCTL_BASE, 0x09, drm_gem_close.SIZE); // 0x40086409
export const DRM_IOCTL_GEM_FLINK = _IOWR(DRM_IOCTL_BASE, 0x0a, drm_gem_flink.SIZE); // 0xC008640A
export const DRM_IOCTL_GEM_OPEN = _IOWR(DRM_IOCTL_BASE, 0x0b, drm_gem_open.SIZE); // 0xC010640B
export const DRM_IOCTL_GET_CAP = _IOWR(DRM_IOCTL_BASE, 0x0c, drm_get_cap.SIZE); // 0xC010640C
export const DRM_IOCTL_SET_CLIENT_CAP = _IOW(DRM_IOCTL_BASE, 0x0d, drm_set_client_cap.SIZE); // 0x4010640D
export const DRM_IOCTL_PRIME_HANDLE_TO_FD = _IOWR(DRM_IOCTL_BASE, 0x2d, drm_prime_handle.SIZE); // 0xC00C642D
export const DRM_IOCTL_PRIME_FD_TO_HANDLE = _IOWR(DRM_IOCTL_BASE, 0x2e, drm_prime_handle.SIZE); // 0xC00C642E
export const DRM_IOCTL_MODE_GETRESOURCES = _IOWR(DRM_IOCTL_BASE, 0xa0, drm_mode_card_res.SIZE); // 0xC04064A0
export const DRM_IOCTL_MODE_CREATE_DUMB = _IOWR(DRM_IOCTL_BASE, 0xb2, drm_mode_create_dumb.SIZE); // 0xC02064B2
export const DRM_IOCTL_MODE_MAP_DUMB = _IOWR(DRM_IOCTL_BASE, 0xb3, drm_mode_map_dumb.SIZE); // 0xC01064B3
export const DRM_IOCTL_MODE_DESTROY_DUMB = _IOWR(DRM_IOCTL_BASE, 0xb4, drm_mode_destroy_dumb.SIZE); // 0xC00464B4

/**
 * The fake mmap offsets of GEM objects start at DRM_FILE_PAGE_OFFSET_START pages (drm_gem.c, 64-bit): 4 GiB, so
 * they never collide with a real file offset; the space is DRM_FILE_PAGE_OFFSET_SIZE pages long.
 */
export const DRM_FILE_PAGE_OFFSET_START = 0x100000; // pages: (0xFFFFFFFF >> PAGE_SHIFT) + 1
export const DRM_FILE_PAGE_OFFSET_SIZE = 0xfffff * 256; // pages: (0xFFFFFFFF >> PAGE_SHIFT) * 256

// ---- vgem (include/uapi/drm/vgem_drm.h) ----------------------------------------------------------------------------

export const DRM_VGEM_FENCE_ATTACH = 0x1;
export const DRM_VGEM_FENCE_SIGNAL = 0x2;
/** drm_vgem_fence_attach.flags: the fence is a writer's (WRITE usage; else READ). The only valid flag. */
export const VGEM_FENCE_WRITE = 0x1;
/** struct drm_vgem_fence_attach { __u32 handle; __u32 flags; __u32 out_fence; __u32 pad; } */
export const drm_vgem_fence_attach = { SIZE: 16, handle: 0, flags: 4, out_fence: 8, pad: 12 } as const;
/** struct drm_vgem_fence_signal { __u32 fence; __u32 flags; } */
export const drm_vgem_fence_signal = { SIZE: 8, fence: 0, flags: 4 } as const;
export const DRM_IOCTL_VGEM_FENCE_ATTACH = _IOWR(DRM_IOCTL_BASE, DRM_COMMAND_BASE + DRM_VGEM_FENCE_ATTACH, drm_vgem_fence_attach.SIZE); // 0xC0106441
export const DRM_IOCTL_VGEM_FENCE_SIGNAL = _IOW(DRM_IOCTL_BASE, DRM_COMMAND_BASE + DRM_VGEM_FENCE_SIGNAL, drm_vgem_fence_signal.SIZE); // 0x40086442

/** Device nodes: DRM minors of the first card (primary and render). vgem is card 0. */
export const DRM_DIR_NAME = '/dev/dri';
export const DRM_DEV_NAME = `${DRM_DIR_NAME}/card`;
export const DRM_RENDER_DEV_NAME = `${DRM_DIR_NAME}/renderD`;
/** Render minors start at 128. */
export const DRM_RENDER_MINOR_BASE = 128;
