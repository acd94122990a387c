/** Shared pieces of the driver-lane tests (test/driver-lanes.test.ts, test/hostile-lanes.test.ts): the test driver, calls into lane-user fixtures. */
import type { Machine, Proc } from '../../src/index.js';

export const exporter = new URL('../fixtures/drv-exporter.js', import.meta.url);

/** Who served an ioctl (test/fixtures/lane-user.ts). */
export interface Who {
  readonly pid: number;
  readonly name: string;
  readonly file: number;
}
export type Stats = { done: number; slow: number; takenBack: number };
export const who = (p: Proc, fd: number, n = 0): Promise<Who | { err: string }> => p.call('who', fd, n);
export const stats = (p: Proc): Promise<Stats> => p.call<Stats>('laneStats');
export const open = (p: Proc, path: string): Promise<number> => p.call<number>('openPath', path);
export const run = <T = unknown>(p: Proc, path: string, req: Record<string, unknown>): Promise<T> => p.call<T>('run', path, req);

/** Two instances of the test driver: /dev/testdrv and /dev/testimp. */
export async function twoDrivers(m: Machine): Promise<void> {
  await m.loadDriver(exporter, { name: 'testdrv' });
  await m.loadDriver(exporter, { name: 'testimp' });
}
