/**
 * The one message a process worker posts on its own, outside comlink: whether it imported its module, sent once
 * before it serves any call, so Machine.spawn() can reject a missing module or export at once instead of a peer
 * failing later (EPIPE on a socket nobody will ever read).
 */

/** The key of the message (comlink ignores messages without its own `id`). */
export const LOADED = 'dmabuf-sim:loaded';

/**
 * A driver worker's word that its module imported and its probe() starts now (Machine.loadDriver bounds the
 * probe from here: module loading on a busy machine is not the driver's fault).
 */
export const PROBING = 'dmabuf-sim:probing';

export type LoadReport =
  | { readonly ok: true }
  /** The module imported but lacks `missing` (its `main`, when args were given). */
  | { readonly ok: false; readonly missing: string; readonly message?: undefined; readonly code?: undefined }
  /** The import failed: the error's message and Node's code (ERR_MODULE_NOT_FOUND...). */
  | { readonly ok: false; readonly missing?: undefined; readonly message: string; readonly code?: string };

/**
 * The module import both worker entries start with (workers/process.ts, workers/driver.ts): the module's
 * namespace, or null after `report` was told why the import failed (its message and Node's error code).
 */
export async function importReported(url: string, report: (r: LoadReport) => void): Promise<Record<string, unknown> | null> {
  try {
    return (await import(url)) as Record<string, unknown>;
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    const code = (err as { code?: unknown }).code;
    report({ ok: false, message: err.message, ...(typeof code === 'string' ? { code } : {}) });
    return null;
  }
}
