/** include/uapi/linux/sync_file.h and the sw_sync debug interface (drivers/dma-buf/sw_sync.c). */
import { _IOW, _IOWR } from './ioctl.js';

export const SYNC_IOC_MAGIC = '>';

/** struct sync_merge_data { char name[32]; __s32 fd2; __s32 fence; __u32 flags; __u32 pad; } */
export const sync_merge_data = { SIZE: 48, name: 0, fd2: 32, fence: 36, flags: 40, pad: 44 } as const;
/** struct sync_fence_info { char obj_name[32]; char driver_name[32]; __s32 status; __u32 flags; __u64 timestamp_ns; } */
export const sync_fence_info = { SIZE: 80, obj_name: 0, driver_name: 32, status: 64, flags: 68, timestamp_ns: 72 } as const;
/** struct sync_file_info { char name[32]; __s32 status; __u32 flags; __u32 num_fences; __u32 pad; __u64 sync_fence_info; } */
export const sync_file_info = { SIZE: 56, name: 0, status: 32, flags: 36, num_fences: 40, pad: 44, sync_fence_info: 48 } as const;
/** struct sync_set_deadline { __u64 deadline_ns; __u64 pad; } */
export const sync_set_deadline = { SIZE: 16, deadline_ns: 0, pad: 8 } as const;

export const SYNC_IOC_MERGE = _IOWR(SYNC_IOC_MAGIC, 3, sync_merge_data.SIZE); // 0xC0303E03
export const SYNC_IOC_FILE_INFO = _IOWR(SYNC_IOC_MAGIC, 4, sync_file_info.SIZE); // 0xC0383E04
export const SYNC_IOC_SET_DEADLINE = _IOW(SYNC_IOC_MAGIC, 5, sync_set_deadline.SIZE); // 0x40103E05

export const SW_SYNC_IOC_MAGIC = 'W';
/** struct sw_sync_create_fence_data { __u32 value; char name[32]; __s32 fence; } */
export const sw_sync_create_fence_data = { SIZE: 40, value: 0, name: 4, fence: 36 } as const;
export const SW_SYNC_IOC_CREATE_FENCE = _IOWR(SW_SYNC_IOC_MAGIC, 0, sw_sync_create_fence_data.SIZE); // 0xC0285700
export const SW_SYNC_IOC_INC = _IOW(SW_SYNC_IOC_MAGIC, 1, 4); // 0x40045701
