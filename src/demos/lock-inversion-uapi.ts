/** The lock-inversion demo driver's one ioctl, shared by the driver and the processes that call it. */

/** A job request: JSON in the argument, the JSON answer written back in its place. */
export const LOCKINV_IOC_RUN = 0x4c01;
/** Size of the argument buffer (request and answer). */
export const LOCKINV_ARG_BYTES = 1024;
