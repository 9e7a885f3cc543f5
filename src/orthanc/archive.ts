/**
 * The archive in DICOM verbs. The rest of the gateway (retrieval, ingest, jobs, CLI) speaks only this interface;
 * `OrthancArchive` below is its one implementation and the only code that knows Orthanc's REST paths.
 *
 * Identifiers: an `archiveId` is the archive's own key of a stored instance (Orthanc's instance id, kept in the
 * index as `orthanc_id`). Frame numbers are 1-based as in PS3.18; the implementation translates to Orthanc's
 * 0-based frame index. Errors: NotFoundError when the archive does not hold the resource, UpstreamError (502/504)
 * or DependencyUnavailableError (503) for an archive that fails or is down, never a raw network error.
 */
import type { Readable } from 'node:stream';
import { TransferSyntax } from '../dicom/transfer-syntax';
import { NotFoundError, UnrecoverableInputError } from '../errors';
import type { StoredFileReader } from './storage-files';
import { OrthancHttpError, type ArchiveStream, type OrthancChange, type PacsClient } from './client';

export type { ArchiveStream } from './client';

/** What storing an instance did. */
export interface StoreOutcome {
  /** `alreadyStored`: the archive kept the copy it had (same patient/study/series/instance keys). */
  status: 'stored' | 'alreadyStored';
  archiveId: string;
}

/** One event of the archive's change log. */
export interface ArchiveChange {
  seq: number;
  /** e.g. NewInstance, StableSeries, Deleted (Orthanc's change types, kept as they are). */
  kind: string;
  level: 'Patient' | 'Study' | 'Series' | 'Instance' | string;
  /** archive id of the resource at `level` (a series id for StableSeries). */
  archiveId: string;
}

/** One page of the change log. */
export interface ChangesPage {
  changes: ArchiveChange[];
  /** True when the page reached the end of the log. */
  done: boolean;
  /** Sequence number of the last change in the log (or in the page when not done). */
  last: number;
}

/** How an instance reached the archive (the association's AE titles and peer, or the REST API). */
export interface ArrivalOrigin {
  calledAet?: string;
  callingAet?: string;
  remoteIp?: string;
  /** `DicomProtocol` for C-STORE, `RestApi` for the gateway's own stores, others as the archive names them. */
  origin?: string;
}

/** The UIDs the archive's own database holds for an instance (answered without parsing the file). */
export interface ArchivedIdentity {
  sopInstanceUid?: string;
  seriesUid?: string;
  studyUid?: string;
}

/** What the archive can do with transfer syntaxes. */
export interface ArchiveCapabilities {
  /** Stored syntaxes the archive can decode, hence transcode to a native syntax and decode frames of. */
  decodable: ReadonlySet<string>;
  /** Syntaxes the archive can transcode into (from a decodable one). */
  transcodeTargets: ReadonlySet<string>;
}

/** The archive. */
export interface Archive {
  /** Stores one Part 10 object. OrthancHttpError with a 4xx upstreamStatus when the archive refuses the object. */
  storeInstance(bytes: Buffer | Readable, length?: number): Promise<StoreOutcome>;
  /** archive id of the instance with this SOP Instance UID, or null. */
  findInstance(sopInstanceUid: string): Promise<string | null>;
  /** Whether the archive still holds this instance. */
  hasInstance(archiveId: string): Promise<boolean>;
  /** MD5 (hex) of the stored file as the archive recorded it, or null when it has none. */
  storedFileMd5(archiveId: string): Promise<string | null>;
  /** The stored file, whole in memory, refusing more than `maxBytes` (UnrecoverableInputError). */
  readInstanceFile(archiveId: string, maxBytes: number, signal?: AbortSignal): Promise<Buffer>;
  /**
   * Streams the instance as a Part 10 file: as stored when `transferSyntax` is omitted or equals `storedSyntax`,
   * else transcoded by the archive (see `transcode`).
   */
  openInstance(
    archiveId: string,
    opts?: { transferSyntax?: string; storedSyntax?: string; signal?: AbortSignal },
  ): Promise<ArchiveStream>;
  /** Streams the instance re-encoded in `transferSyntax`, same SOP Instance UID, nothing stored. */
  transcode(archiveId: string, transferSyntax: string, signal?: AbortSignal): Promise<ArchiveStream>;
  /**
   * One frame's stored bytes (1-based): a compressed frame as encoded, a native frame in little endian whatever
   * the stored byte order. The one frame fetch of the gateway (WADO-RS frames, rendering, thumbnails).
   */
  openFrame(archiveId: string, frameNumber: number, signal?: AbortSignal): Promise<ArchiveStream>;
  /** The stored bytes of several frames, in the order asked, each opened one ahead of the consumer. */
  openFrames(
    archiveId: string,
    frames: readonly number[],
    signal?: AbortSignal,
  ): AsyncGenerator<{ frame: number; stream: ArchiveStream }>;
  /**
   * The raw value of one element, addressed as a relative BulkDataURI (`00281201`, `00400275/0/00081150`: tags and
   * item indexes). `pixelData`: native Pixel Data as one little-endian value.
   */
  openBulkData(
    archiveId: string,
    bulkPath: string,
    opts?: { pixelData?: boolean; signal?: AbortSignal },
  ): Promise<ArchiveStream>;
  /** The change log after `since`, at most `limit` events. */
  changes(since: number, limit: number): Promise<ChangesPage>;
  /** archive ids of stored instances in arrival order, paged. */
  listInstances(since: number, limit: number): Promise<string[]>;
  /** Number of stored instances. */
  countInstances(signal?: AbortSignal): Promise<number>;
  /** Deletes an instance; one already gone is not an error. */
  deleteInstance(archiveId: string): Promise<void>;
  /** The instance's main DICOM tags as the archive indexed them (keyword -> string value). */
  instanceTags(archiveId: string): Promise<Record<string, string>>;
  /** The instance's UIDs and those of its series and study, from the archive's database. */
  instanceIdentity(archiveId: string): Promise<ArchivedIdentity>;
  /** Series Instance UID of an archived series (a StableSeries change names the series by archive id). */
  seriesInstanceUid(seriesArchiveId: string): Promise<string | undefined>;
  /** How the instance arrived (AE titles, peer, REST or DIMSE). */
  arrivalOrigin(archiveId: string): Promise<ArrivalOrigin>;
  /** What the archive can decode and transcode. */
  capabilities(): ArchiveCapabilities;
  /**
   * Tells the archive where to hand C-STORE arrivals of objects it already holds (orthanc-config/aperture-arrivals.py),
   * for `ttlSeconds`: the caller renews it while it serves that URL.
   */
  registerArrivalHook(url: string, token: string, ttlSeconds: number): Promise<void>;
  /** Resolves when the archive answers; throws when it does not (readiness). */
  ping(signal?: AbortSignal): Promise<void>;
}

/** True when the archive refused an object itself (it could not parse or accept it), as opposed to failing. */
export function isRefusedByArchive(err: unknown): boolean {
  return err instanceof OrthancHttpError && err.upstreamStatus >= 400 && err.upstreamStatus < 500;
}

const TS = TransferSyntax;

/**
 * Orthanc 1.10 with DCMTK and without the GDCM plugin: JPEG 2000, HTJ2K, JPEG XL and video are served as stored
 * only. Its transcoder writes the native syntaxes and the DCMTK encoders it links.
 */
export const ORTHANC_CAPABILITIES: ArchiveCapabilities = {
  decodable: new Set([
    TS.implicitVrLittleEndian,
    TS.explicitVrLittleEndian,
    TS.deflatedExplicitVrLittleEndian,
    TS.explicitVrBigEndian,
    TS.jpegBaseline,
    TS.jpegExtended,
    TS.jpegLosslessP14,
    TS.jpegLosslessSv1,
    TS.jpegLsLossless,
    TS.jpegLsNearLossless,
    TS.rleLossless,
  ]),
  transcodeTargets: new Set([TS.implicitVrLittleEndian, TS.explicitVrLittleEndian, TS.explicitVrBigEndian]),
};

/** Orthanc's error code for "not implemented", as its JSON error bodies report it. */
const ORTHANC_NOT_IMPLEMENTED = 2;

function orthancErrorStatus(err: OrthancHttpError): number | undefined {
  try {
    return (JSON.parse(err.upstreamBody) as { OrthancStatus?: number }).OrthancStatus;
  } catch {
    return undefined;
  }
}

/** Reads a stream into memory, refusing more than `max` bytes with a 422 that says `tooMuch`. */
export async function readCapped(
  stream: Readable,
  max: number,
  tooMuch = `the archive answered more than ${max} bytes for the object`,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    total += (chunk as Buffer).length;
    if (total > max) {
      stream.destroy();
      throw new UnrecoverableInputError(tooMuch);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, total);
}

const id = encodeURIComponent;

/** Attempts at storing one object when Orthanc's index reports a serialisation conflict. */
const STORE_CONFLICT_ATTEMPTS = 4;

/** Orthanc's ErrorCode_DatabaseCannotSerialize, as its REST API answers it (any 5xx carrying that message). */
export function isSerializationConflict(err: unknown): boolean {
  return (
    err instanceof OrthancHttpError &&
    err.upstreamStatus >= 500 &&
    /could not serialize access/i.test(err.upstreamBody)
  );
}

/** The archive on Orthanc's REST API, through PacsClient (its retries, timeouts and error mapping). */
export class OrthancArchive implements Archive {
  /** `files`: read whole stored files from Orthanc's StorageDirectory where the gateway sees it (ARCHIVE_FILE_READS). */
  constructor(
    private readonly pacs: PacsClient,
    private readonly files?: StoredFileReader,
  ) {}

  /** The stored file: from disk when the reader can, else through REST. */
  private async storedFile(archiveId: string, signal?: AbortSignal): Promise<ArchiveStream> {
    return (await this.files?.open(archiveId, signal)) ?? this.pacs.instanceFile(archiveId, signal);
  }

  async storeInstance(bytes: Buffer | Readable, length?: number): Promise<StoreOutcome> {
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await this.pacs.store(bytes, length);
        return { status: res.Status === 'AlreadyStored' ? 'alreadyStored' : 'stored', archiveId: res.ID };
      } catch (err) {
        // Orthanc on PostgreSQL serialises writers and retries a conflicting transaction itself, ten times; under
        // heavy concurrent ingest it can still give up. Storing the same bytes again is safe (at worst
        // AlreadyStored), so a conflict is retried here a few times before it reaches a client as "retry later".
        if (!Buffer.isBuffer(bytes) || attempt >= STORE_CONFLICT_ATTEMPTS || !isSerializationConflict(err))
          throw err;
        await new Promise((r) => setTimeout(r, 50 * attempt + Math.random() * 150));
      }
    }
  }

  async findInstance(sopInstanceUid: string): Promise<string | null> {
    const found = await this.pacs.lookup(sopInstanceUid);
    return found.find((r) => r.Type === 'Instance')?.ID ?? null;
  }

  async hasInstance(archiveId: string): Promise<boolean> {
    try {
      await this.pacs.getJson(`/instances/${id(archiveId)}`);
      return true;
    } catch (err) {
      if (err instanceof NotFoundError) return false;
      throw err;
    }
  }

  storedFileMd5(archiveId: string): Promise<string | null> {
    return this.pacs.attachmentMd5(archiveId);
  }

  async readInstanceFile(archiveId: string, maxBytes: number, signal?: AbortSignal): Promise<Buffer> {
    const file = await this.storedFile(archiveId, signal);
    if (file.contentLength !== undefined && file.contentLength > maxBytes) {
      file.body.destroy();
      throw new UnrecoverableInputError(`the archived object is larger than ${maxBytes} bytes`);
    }
    return readCapped(
      file.body,
      maxBytes,
      `the archive answered more than ${maxBytes} bytes for the archived object`,
    );
  }

  openInstance(
    archiveId: string,
    opts: { transferSyntax?: string; storedSyntax?: string; signal?: AbortSignal } = {},
  ): Promise<ArchiveStream> {
    const { transferSyntax, storedSyntax, signal } = opts;
    if (transferSyntax === undefined || transferSyntax === storedSyntax) {
      return this.storedFile(archiveId, signal);
    }
    return this.transcode(archiveId, transferSyntax, signal);
  }

  transcode(archiveId: string, transferSyntax: string, signal?: AbortSignal): Promise<ArchiveStream> {
    // Orthanc 1.10 has no /file?transcode=; /modify with Transcode answers the transcoded file without storing it.
    // Keeping the SOP Instance UID (which needs Force) makes it the same instance in another encoding.
    return this.pacs.postStream(
      `/instances/${id(archiveId)}/modify`,
      { Transcode: transferSyntax, Force: true, Keep: ['SOPInstanceUID'] },
      signal,
    );
  }

  openFrame(archiveId: string, frameNumber: number, signal?: AbortSignal): Promise<ArchiveStream> {
    return this.pacs.getStream(`/instances/${id(archiveId)}/frames/${frameNumber - 1}/raw`, signal);
  }

  async *openFrames(
    archiveId: string,
    frames: readonly number[],
    signal?: AbortSignal,
  ): AsyncGenerator<{ frame: number; stream: ArchiveStream }> {
    // One frame in flight to the consumer and the next one opening: latency hidden, memory bounded.
    let next: Promise<ArchiveStream> | undefined =
      frames.length > 0 ? this.openFrame(archiveId, frames[0], signal) : undefined;
    try {
      for (let k = 0; k < frames.length; k++) {
        const stream = await next!;
        next = k + 1 < frames.length ? this.openFrame(archiveId, frames[k + 1], signal) : undefined;
        // An opened-ahead frame that fails while the current one is consumed must not be an unhandled rejection.
        next?.catch(() => undefined);
        yield { frame: frames[k], stream };
      }
    } finally {
      if (next) void next.then((s) => s.body.destroy()).catch(() => undefined);
    }
  }

  openBulkData(
    archiveId: string,
    bulkPath: string,
    opts: { pixelData?: boolean; signal?: AbortSignal } = {},
  ): Promise<ArchiveStream> {
    // Orthanc's content path spells tags `gggg-eeee`: 00400275/0/00081150 → 0040-0275/0/0008-1150.
    const contentPath = bulkPath
      .split('/')
      .map((s, i) => (i % 2 === 0 ? `${s.slice(0, 4)}-${s.slice(4)}`.toLowerCase() : s))
      .join('/');
    const base = `/instances/${id(archiveId)}/content/${contentPath}`;
    // Orthanc lists Pixel Data as fragments; native Pixel Data is its "fragment" 0, whole and in little endian.
    return this.pacs.getStream(opts.pixelData ? `${base}/0` : base, opts.signal);
  }

  async changes(since: number, limit: number): Promise<ChangesPage> {
    const page = await this.pacs.changes(since, limit);
    return {
      changes: page.Changes.map((c: OrthancChange) => ({
        seq: c.Seq,
        kind: c.ChangeType,
        level: c.ResourceType,
        archiveId: c.ID,
      })),
      done: page.Done,
      last: page.Last,
    };
  }

  listInstances(since: number, limit: number): Promise<string[]> {
    return this.pacs.getJson<string[]>(`/instances?since=${since}&limit=${limit}`);
  }

  async countInstances(signal?: AbortSignal): Promise<number> {
    return (await this.pacs.getJson<{ CountInstances: number }>('/statistics', signal)).CountInstances;
  }

  deleteInstance(archiveId: string): Promise<void> {
    this.files?.forget(archiveId);
    return this.pacs.delete(`/instances/${id(archiveId)}`);
  }

  async instanceTags(archiveId: string): Promise<Record<string, string>> {
    const inst = await this.pacs.getJson<{ MainDicomTags?: Record<string, string> }>(
      `/instances/${id(archiveId)}`,
    );
    return inst.MainDicomTags ?? {};
  }

  async instanceIdentity(archiveId: string): Promise<ArchivedIdentity> {
    type Resource = { MainDicomTags?: Record<string, string>; ParentSeries?: string; ParentStudy?: string };
    const inst = await this.pacs.getJson<Resource>(`/instances/${id(archiveId)}`);
    const out: ArchivedIdentity = { sopInstanceUid: inst.MainDicomTags?.SOPInstanceUID };
    if (!inst.ParentSeries) return out;
    const series = await this.pacs.getJson<Resource>(`/series/${id(inst.ParentSeries)}`);
    out.seriesUid = series.MainDicomTags?.SeriesInstanceUID;
    if (!series.ParentStudy) return out;
    const study = await this.pacs.getJson<Resource>(`/studies/${id(series.ParentStudy)}`);
    out.studyUid = study.MainDicomTags?.StudyInstanceUID;
    return out;
  }

  async seriesInstanceUid(seriesArchiveId: string): Promise<string | undefined> {
    const s = await this.pacs.getJson<{ MainDicomTags?: { SeriesInstanceUID?: string } }>(
      `/series/${id(seriesArchiveId)}`,
    );
    return s.MainDicomTags?.SeriesInstanceUID;
  }

  async arrivalOrigin(archiveId: string): Promise<ArrivalOrigin> {
    const meta = await this.pacs.getJson<{
      CalledAET?: string;
      RemoteAET?: string;
      RemoteIP?: string;
      Origin?: string;
    }>(`/instances/${id(archiveId)}/metadata?expand`);
    return {
      calledAet: meta.CalledAET,
      callingAet: meta.RemoteAET,
      remoteIp: meta.RemoteIP,
      origin: meta.Origin,
    };
  }

  capabilities(): ArchiveCapabilities {
    return ORTHANC_CAPABILITIES;
  }

  async registerArrivalHook(url: string, token: string, ttlSeconds: number): Promise<void> {
    await this.pacs.postJson('/aperture/arrival-hook', { url, token, ttlSeconds });
  }

  async ping(signal?: AbortSignal): Promise<void> {
    await this.pacs.getJson('/system', signal);
  }
}

/** Turns Orthanc's "cannot decode" answers into a clear 422 naming the transfer syntax; others pass through. */
export function decodeFailure(err: unknown, ts: string): unknown {
  if (err instanceof OrthancHttpError) {
    const notImplemented = err.upstreamStatus === 415 || orthancErrorStatus(err) === ORTHANC_NOT_IMPLEMENTED;
    if (notImplemented) return new UnrecoverableInputError(`the archive cannot decode transfer syntax ${ts}`);
    if (err.upstreamStatus === 400)
      return new UnrecoverableInputError('the archive could not decode this frame');
  }
  return err;
}

let archive: Archive | undefined;

/** Creates the shared archive over the shared archive client. */
export function initArchive(pacs: PacsClient, files?: StoredFileReader): Archive {
  archive ??= new OrthancArchive(pacs, files);
  return archive;
}
/** The shared archive. */
export function getArchive(): Archive {
  if (!archive) throw new Error('archive not initialised');
  return archive;
}
/** Forgets the shared archive (its client is closed by closePacs). */
export function closeArchive(): void {
  archive = undefined;
}
