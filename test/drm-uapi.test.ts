/**
 * The DRM and vgem uAPI numbers and struct sizes of src/uapi/drm.ts against the values the kernel headers give
 * (drm.h, drm_mode.h, vgem_drm.h on x86-64; the table of ../shared/spec/drivers-uapi.md §1).
 */
import test from 'ava';
import { uapi } from '../src/index.js';
import { ioctlName } from '../src/uapi/names.js';

test('DRM core and vgem ioctl numbers are the kernel headers\' values', (t) => {
  const expect: [string, number][] = [
    ['DRM_IOCTL_VERSION', 0xc0406400],
    ['DRM_IOCTL_SET_VERSION', 0xc0106407],
    ['DRM_IOCTL_GEM_CLOSE', 0x40086409],
    ['DRM_IOCTL_GEM_FLINK', 0xc008640a],
    ['DRM_IOCTL_GEM_OPEN', 0xc010640b],
    ['DRM_IOCTL_GET_CAP', 0xc010640c],
    ['DRM_IOCTL_SET_CLIENT_CAP', 0x4010640d],
    ['DRM_IOCTL_PRIME_HANDLE_TO_FD', 0xc00c642d],
    ['DRM_IOCTL_PRIME_FD_TO_HANDLE', 0xc00c642e],
    ['DRM_IOCTL_MODE_GETRESOURCES', 0xc04064a0],
    ['DRM_IOCTL_MODE_CREATE_DUMB', 0xc02064b2],
    ['DRM_IOCTL_MODE_MAP_DUMB', 0xc01064b3],
    ['DRM_IOCTL_MODE_DESTROY_DUMB', 0xc00464b4],
    ['DRM_IOCTL_VGEM_FENCE_ATTACH', 0xc0106441],
    ['DRM_IOCTL_VGEM_FENCE_SIGNAL', 0x40086442],
  ];
  const u = uapi as unknown as Record<string, number>;
  for (const [name, value] of expect) t.is(u[name], value, `${name} = 0x${value.toString(16)}`);
  t.is(ioctlName(0xc00c642e), 'DRM_IOCTL_PRIME_FD_TO_HANDLE', 'diagnostics name DRM requests');
});

test('DRM struct layouts: sizes and the offsets of their last fields', (t) => {
  t.like(uapi.drm_version, { SIZE: 64, name_len: 16, name: 24, date_len: 32, date: 40, desc_len: 48, desc: 56 });
  t.like(uapi.drm_mode_create_dumb, { SIZE: 32, handle: 16, pitch: 20, size: 24 });
  t.like(uapi.drm_mode_map_dumb, { SIZE: 16, offset: 8 });
  t.like(uapi.drm_prime_handle, { SIZE: 12, flags: 4, fd: 8 });
  t.like(uapi.drm_vgem_fence_attach, { SIZE: 16, out_fence: 8, pad: 12 });
  t.like(uapi.drm_vgem_fence_signal, { SIZE: 8, flags: 4 });
  t.is(uapi.DRM_RDWR | uapi.DRM_CLOEXEC, 0o2000002, 'DRM_RDWR = O_RDWR, DRM_CLOEXEC = O_CLOEXEC');
  t.is(uapi.DRM_FILE_PAGE_OFFSET_START * uapi.PAGE_SIZE, 2 ** 32, 'fake offsets start at 4 GiB');
});
