/** Where the storage sync's settings point (shared by the sync command and the gateway that reports on it). */
import { resolve } from 'node:path';
import type { Config } from '../config';
import { defaultStateDir } from './storage-sync';

/** The sync's state folder (status.json): STORAGE_SYNC_STATE_DIR, or `<ORTHANC_STORAGE_DIR>-sync`. */
export function storageSyncStateDir(
  config: Pick<Config, 'STORAGE_SYNC_STATE_DIR' | 'ORTHANC_STORAGE_DIR'>,
): string {
  return resolve(config.STORAGE_SYNC_STATE_DIR || defaultStateDir(resolve(config.ORTHANC_STORAGE_DIR)));
}

/** This site's Orthanc index: STORAGE_SYNC_INDEX_URL, or database `orthanc` on DATABASE_URL's server. */
export function storageSyncIndexUrl(config: Pick<Config, 'STORAGE_SYNC_INDEX_URL' | 'DATABASE_URL'>): string {
  if (config.STORAGE_SYNC_INDEX_URL) return config.STORAGE_SYNC_INDEX_URL;
  const u = new URL(config.DATABASE_URL);
  u.pathname = '/orthanc';
  return u.toString();
}
