/** include/uapi/linux/sync_file.h and the sw_sync debug interface (drivers/dma-buf/sw_sync.c). */
import { _IOW, _IOWR } from './ioctl.js';

export const SYNC_IOC_MAGIC = '>';

/** struct sync_merge_data { char name[32]; __s32 fd2; __s32 fence; __u32 flags; __u32 pad; } */
export const sync_merge_data = { SIZE: 48, name: 0, fd2: 32, fence: 36, flags: 40, pad: 44 } as const;
/** struct sync_fence_info { char obj_name[32]; char driver_name[32]; __s32 status; __u32 flags; __u64 timestamp_ns; } */
export const sync_fence_info = { SIZE: 80, obj_name: 0, driver_name: 32, status: 64, flags: 68, timestamp_ns: 72 } as const;
/**
 * struct sync_file_info { char name[32]; __s32 status; __u32 flags; __u32 num_fences; __u32 pad; __u64 sync_fence_info; }
 *
 * The model's user pointer for `sync_fence_info`: a process has no address space the kernel could write into, so
 * the ioctl's argument buffer *is* the user memory the call may touch. `sync_fence_info` is a byte offset into
 * that same buffer — conventionally SYNC_FILE_INFO_ARRAY_OFFSET, i.e. the struct followed by room for
 * `num_fences` × sync_fence_info. Offset 0 plays NULL, and an array that does not fit in the buffer is EFAULT,
 * exactly where the C copy_to_user would fault. See syncFileInfo() in src/user/libsync.ts.
 */
export const sync_file_info = { SIZE: 56, name: 0, status: 32, flags: 36, num_fences: 40, pad: 44, sync_fence_info: 48 } as const;
/** Where libsync puts the sync_fence_info array in a SYNC_IOC_FILE_INFO argument buffer: right after the struct. */
export const SYNC_FILE_INFO_ARRAY_OFFSET = sync_file_info.SIZE;
/** struct sync_set_deadline { __u64 deadline_ns; __u64 pad; } */
export const sync_set_deadline = { SIZE: 16, deadline_ns: 0, pad: 8 } as const;

export const SYNC_IOC_MERGE = _IOWR(SYNC_IOC_MAGIC, 3, sync_merge_data.SIZE); // 0xC0303E03
export const SYNC_IOC_FILE_INFO = _IOWR(SYNC_IOC_MAGIC, 4, sync_file_info.SIZE); // 0xC0383E04
export const SYNC_IOC_SET_DEADLINE = _IOW(SYNC_IOC_MAGIC, 5, sync_set_deadline.SIZE); // 0x40103E05

/** sync_fence_info.status / sync_file_info.status: 0 active, 1 signaled, < 0 an error (−errno). */
export const FENCE_STATUS_ERROR = -1; // the selftests' sync.h value; the kernel reports −errno, see libsync
export const FENCE_STATUS_ACTIVE = 0;
export const FENCE_STATUS_SIGNALED = 1;

/** The name fields' size (char name[32]): 31 characters and a NUL. */
export const SYNC_NAME_LEN = 32;

export const SW_SYNC_IOC_MAGIC = 'W';
/** struct sw_sync_create_fence_data { __u32 value; char name[32]; __s32 fence; } */
export const sw_sync_create_fence_data = { SIZE: 40, value: 0, name: 4, fence: 36 } as const;
/** struct sw_sync_get_deadline { __u64 deadline_ns; __u32 pad; __s32 fence_fd; } (Linux ≥ 6.5) */
export const sw_sync_get_deadline = { SIZE: 16, deadline_ns: 0, pad: 8, fence_fd: 12 } as const;
export const SW_SYNC_IOC_CREATE_FENCE = _IOWR(SW_SYNC_IOC_MAGIC, 0, sw_sync_create_fence_data.SIZE); // 0xC0285700
export const SW_SYNC_IOC_INC = _IOW(SW_SYNC_IOC_MAGIC, 1, 4); // 0x40045701
export const SW_SYNC_GET_DEADLINE = _IOWR(SW_SYNC_IOC_MAGIC, 2, sw_sync_get_deadline.SIZE); // 0xC0105702

/** Where the sw_sync timeline device lives: debugfs (mainline) and the Android-style /dev node. */
export const SW_SYNC_DEBUGFS_PATH = '/sys/kernel/debug/sync/sw_sync';
export const SW_SYNC_DEV_PATH = '/dev/sw_sync';

/** struct sync_fence_info, decoded. */
export interface SyncFenceInfo {
  /** obj_name: the fence's timeline name. */
  readonly objName: string;
  readonly driverName: string;
  /** 0 active, 1 signaled, −errno signaled with an error. */
  readonly status: number;
  readonly flags: number;
  /** Signal time in ns (machine clock); 0n while active. */
  readonly timestampNs: bigint;
}

function cField(view: DataView, off: number, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) {
    const c = view.getUint8(off + i);
    if (c === 0) break;
    s += String.fromCharCode(c);
  }
  return s;
}

/** Decodes the sync_fence_info at byte `off` of `view`. */
export function readSyncFenceInfo(view: DataView, off: number): SyncFenceInfo {
  const i = sync_fence_info;
  return {
    objName: cField(view, off + i.obj_name, SYNC_NAME_LEN),
    driverName: cField(view, off + i.driver_name, SYNC_NAME_LEN),
    status: view.getInt32(off + i.status, true),
    flags: view.getUint32(off + i.flags, true),
    timestampNs: view.getBigUint64(off + i.timestamp_ns, true),
  };
}

/** Decodes the name field of a sync_file_info / sync_merge_data at byte `off` (up to the NUL). */
export function readSyncName(view: DataView, off: number): string {
  return cField(view, off, SYNC_NAME_LEN);
}
