/**
 * The run's way in and out: the gateway's own DICOMweb, with the run token, like any outside client. Inputs come by
 * WADO-RS (PS3.18 §10.4, a series as multipart/related, streamed part by part to files, never held whole), results
 * go back by STOW-RS (PS3.18 §10.5, one request streamed from the files). The worker never opens the archive.
 */
import { createReadStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import { multipartRelatedStream, openPartBody, parseMultipartRelated } from '../dicomweb/multipart';
import { isUid } from '../dicom/uid';

/** A failure talking to the gateway; `status` 0 when it could not be reached. */
export class GatewayCallError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** Where to talk to and as whom. */
export interface GatewayTarget {
  baseUrl: string;
  projectId: string;
  token: string;
  timeoutMs: number;
}

function root(t: GatewayTarget): string {
  return `${t.baseUrl.replace(/\/+$/, '')}/projects/${encodeURIComponent(t.projectId)}/dicom-web`;
}

/** Another endpoint and credentials for the same call (the benchmark points it at Orthanc's DICOMweb plugin). */
export interface EndpointOverride {
  url: string;
  authorization: string;
}

async function call(
  t: GatewayTarget,
  url: string,
  init: RequestInit,
  override?: EndpointOverride,
): Promise<Response> {
  try {
    return await fetch(override?.url ?? url, {
      ...init,
      headers: {
        ...(init.headers as Record<string, string>),
        authorization: override?.authorization ?? `Bearer ${t.token}`,
      },
      signal: AbortSignal.timeout(t.timeoutMs),
    });
  } catch (err) {
    throw new GatewayCallError(`gateway unreachable: ${(err as Error).message}`, 0);
  }
}

/**
 * Writes every instance of a series under `dir` (`0001.dcm`, ...), in the archive's stored transfer syntax.
 * Returns the number written. 404 means the token does not grant the series (or it is gone).
 */
export async function fetchSeries(
  t: GatewayTarget,
  series: { studyUid: string; seriesUid: string },
  dir: string,
  limits: { maxInstances: number; maxPartBytes: number },
  onInstance?: () => void,
  override?: EndpointOverride,
): Promise<number> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const url = `${root(t)}/studies/${series.studyUid}/series/${series.seriesUid}`;
  const res = await call(
    t,
    url,
    { headers: { accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' } },
    override,
  );
  if (res.status !== 200 || !res.body) {
    await res.body?.cancel();
    throw new GatewayCallError(`WADO-RS of series ${series.seriesUid} answered ${res.status}`, res.status);
  }
  let n = 0;
  const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream);
  for await (const part of parseMultipartRelated(body, res.headers.get('content-type') ?? '', {
    maxParts: limits.maxInstances,
    maxPartBytes: limits.maxPartBytes,
    maxTotalBytes: Number.MAX_SAFE_INTEGER,
    spillThresholdBytes: 8 * 1024 * 1024,
    tmpDir: dir,
  })) {
    n += 1;
    await pipeline(openPartBody(part), createWriteStream(join(dir, `${String(n).padStart(5, '0')}.dcm`)));
    onInstance?.();
  }
  return n;
}

/** What STOW-RS answered for the stored results. */
export interface StoreOutcome {
  stored: number;
  failed: number;
  seriesUids: string[];
}

/**
 * Stores the files by one STOW-RS request into the run's project. Any failed instance fails the whole store
 * (status 202/409): the caller then fails the run rather than leave a part-result unnoticed.
 */
export async function storeFiles(
  t: GatewayTarget,
  files: readonly string[],
  override?: EndpointOverride,
): Promise<StoreOutcome> {
  async function* parts() {
    for (const f of files) yield { contentType: 'application/dicom', body: createReadStream(f) };
  }
  const mp = multipartRelatedStream(parts());
  const res = await call(
    t,
    `${root(t)}/studies`,
    {
      method: 'POST',
      headers: {
        'content-type': mp.contentType('application/dicom'),
        accept: 'application/dicom+json',
      },
      body: Readable.toWeb(mp.stream) as unknown as RequestInit['body'],
      duplex: 'half',
    } as RequestInit,
    override,
  );
  const text = await res.text();
  let json: Record<string, { Value?: Array<Record<string, { Value?: string[] }>> }> = {};
  try {
    json = text ? (JSON.parse(text) as typeof json) : {};
  } catch {
    // a non-JSON answer is reported by status below
  }
  const refs = json['00081199']?.Value ?? [];
  const failedRefs = json['00081198']?.Value ?? [];
  const series = new Set<string>();
  for (const r of refs) {
    const url = r['00081190']?.Value?.[0];
    const m = url ? /\/series\/([^/]+)/.exec(url) : null;
    if (m && isUid(m[1])) series.add(m[1]);
  }
  if (res.status !== 200) {
    throw new GatewayCallError(
      `STOW-RS of the results answered ${res.status} (${refs.length} stored, ${failedRefs.length} failed)`,
      res.status,
    );
  }
  return { stored: refs.length, failed: failedRefs.length, seriesUids: [...series] };
}
