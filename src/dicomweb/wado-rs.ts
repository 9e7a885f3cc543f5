/**
 * WADO-RS (PS3.18 §10.4): studies, series and instances as DICOM, their metadata, frames and bulk data, at both
 * roots (`/projects/{project}/dicom-web` and `/dicom-web`).
 *
 * Bytes stream from the archive to the client part by part (one instance, frame or value in flight, plus the next
 * one being opened); metadata is served from the index without touching the archive. Every archive request is tied
 * to the client: when the client goes away, the archive request is aborted at once.
 */
import type { Context } from 'koa';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { absoluteBulkDataUrisInText, parseBulkDataPath, parseFrameList, sliceStream } from '../dicom/bulk';
import type { DicomJson } from '../dicom/json';
import { setDownloadName } from '../http/security-headers';
import { requireUid } from '../dicom/uid';
import { codecPoolFor, isDecodableSyntax } from '../codecs';
import { dicomJsonToXml } from '../dicom/xml';
import { AppError, BadRequestError, NotAcceptableError, NotFoundError } from '../errors';
import {
  findBulkElement,
  listRetrievableInstances,
  METADATA_PAGE_SIZE,
  metadataFingerprint,
  type MetadataRow,
  streamInstanceMetadata,
  type InstanceSelector,
  type RetrievableInstance,
} from '../index-db/wado';
import { abortOnClose, respondWithStream } from '../http/stream';
import { type FramePlan, frameParts, openBulkValue } from '../retrieve/frames';
import {
  AS_STORED,
  instanceParts,
  instanceSyntaxes,
  openInstanceAs,
  zipOfInstances,
} from '../retrieve/instances';
import { primed } from '../retrieve/parts';
import type { AuditDetail, Services } from '../services';
import { dicomwebRoot, noteAudit, requestReadScopes } from '../http/context';
import {
  MediaType,
  TransferSyntax,
  formatMediaType,
  frameMediaTypeForTransferSyntax,
  isNativeTransferSyntax,
  negotiateMediaType,
  type MediaTypeOffer,
  type NegotiatedMediaType,
} from './media-types';
import { metadataCacheFor } from './metadata-cache';
import { multipartRelatedStream, type OutgoingPart } from './multipart';

export { AS_STORED, requireUid, respondWithStream };

const ELE = TransferSyntax.explicitVrLittleEndian;

/** Bumped whenever the metadata representation changes, so that cached ETags stop matching. */
const METADATA_FORMAT_VERSION = 'm1';

type Level = 'study' | 'series' | 'instance';

/** PS3.18 §10.4.1 Retrieve Study: every instance of the study the caller can see, as DICOM or a ZIP archive. */
export async function handleRetrieveStudy(ctx: Context, services: Services): Promise<void> {
  await retrieve(ctx, services, 'study');
}
/** PS3.18 §10.4.1 Retrieve Series. */
export async function handleRetrieveSeries(ctx: Context, services: Services): Promise<void> {
  await retrieve(ctx, services, 'series');
}
/** PS3.18 §10.4.1 Retrieve Instance. */
export async function handleRetrieveInstance(ctx: Context, services: Services): Promise<void> {
  await retrieve(ctx, services, 'instance');
}

// ---------------------------------------------------------------------------------------------------------------
// Request plumbing shared by the handlers (and WADO-URI)

function selectorOf(ctx: Context, level: Level): InstanceSelector {
  const sel: InstanceSelector = { studyUid: requireUid(ctx.params.study, 'Study Instance UID') };
  if (level !== 'study') sel.seriesUid = requireUid(ctx.params.series, 'Series Instance UID');
  if (level === 'instance') sel.sopInstanceUid = requireUid(ctx.params.instance, 'SOP Instance UID');
  return sel;
}

/** Records what the request touched; the byte count grows while the body streams (see respondWithStream). */
function auditRetrieve(ctx: Context, action: string, sel: InstanceSelector): AuditDetail {
  noteAudit(ctx, {
    action,
    projectId: ctx.params.project,
    studyUid: sel.studyUid,
    seriesUid: sel.seriesUid,
    sopInstanceUid: sel.sopInstanceUid,
    bytes: 0,
  });
  return ctx.state.audit as AuditDetail;
}

function notAcceptable(available: string[]): NotAcceptableError {
  return new NotAcceptableError(
    `none of the accepted media types can be produced for this resource; available: ${available.join(', ')}`,
  );
}

function negotiate(ctx: Context, offers: MediaTypeOffer[]): NegotiatedMediaType | null {
  const q = ctx.query.accept;
  return negotiateMediaType(
    offers,
    ctx.get('accept'),
    typeof q === 'string' || Array.isArray(q) ? q : undefined,
  );
}

/** What an offer list can produce, with "as stored" spelled out, for 406 bodies. */
function describe(offers: MediaTypeOffer[], stored: readonly string[]): string[] {
  const out: string[] = [];
  for (const o of offers) {
    const syntaxes = o.transferSyntaxes?.length ? o.transferSyntaxes : [undefined];
    const seen = new Set<string>();
    for (const ts of syntaxes) {
      for (const t of ts === AS_STORED ? stored : [ts]) {
        const line = formatMediaType(o.mediaType, { type: o.partType, 'transfer-syntax': t });
        if (!seen.has(line)) out.push(line);
        seen.add(line);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Retrieve study / series / instance (PS3.18 §10.4.1.1.1-3)

async function retrieve(ctx: Context, services: Services, level: Level): Promise<void> {
  const sel = selectorOf(ctx, level);
  const scopes = await requestReadScopes(ctx, services);
  const instances = await listRetrievableInstances(services.db, scopes, sel);
  if (instances.length === 0) throw new NotFoundError(`${level} not found`);

  const syntaxes = instanceSyntaxes(services.archive, instances);
  // PS3.18 §8.7.3: no transfer-syntax parameter means Explicit VR Little Endian, transcoded if need be; the stored
  // syntax only for `transfer-syntax=*` or by name. When ELE cannot be produced, the default is not offered at all.
  const offers: MediaTypeOffer[] = [
    {
      mediaType: MediaType.multipartRelated,
      partType: MediaType.dicom,
      transferSyntaxes: syntaxes,
      defaultTransferSyntax: ELE,
    },
  ];
  if (level === 'instance') {
    offers.push({ mediaType: MediaType.dicom, transferSyntaxes: syntaxes, defaultTransferSyntax: ELE });
  } else {
    offers.push({ mediaType: MediaType.zip });
  }
  const storedSyntaxes = [...new Set(instances.map((i) => i.transfer_syntax))];
  const chosen = negotiate(ctx, offers);
  // Without an Accept header the negotiator answers the default, which without a decoder cannot be sent.
  if (!chosen || (chosen.transferSyntax !== undefined && !syntaxes.includes(chosen.transferSyntax))) {
    throw notAcceptable(describe(offers, storedSyntaxes));
  }

  const audit = auditRetrieve(ctx, `wado.${level}`, sel);
  const signal = abortOnClose(ctx);
  const ts = chosen.transferSyntax ?? AS_STORED;

  if (chosen.mediaType === MediaType.zip) {
    const zip = await zipOfInstances(services.archive, instances, signal);
    setDownloadName(ctx, `${instances[0].study_uid}.zip`);
    respondWithStream(ctx, services, zip, MediaType.zip, { audit });
    return;
  }
  // Downloads are attachments named by UID only, so that a browser never renders them (CVE-2019-11687).
  const uid = sel.sopInstanceUid ?? sel.seriesUid ?? sel.studyUid;
  if (chosen.mediaType === MediaType.dicom) {
    const file = await openInstanceAs(
      services.archive,
      instances[0],
      ts,
      signal,
      codecPoolFor(services.config),
    );
    respondWithInstanceFile(ctx, services, file, uid, audit);
    return;
  }
  const parts = await primed(
    instanceParts(
      services.archive,
      instances,
      ts,
      (t) => formatMediaType(MediaType.dicom, { 'transfer-syntax': t }),
      signal,
      codecPoolFor(services.config),
    ),
  );
  const mp = multipartRelatedStream(parts);
  setDownloadName(ctx, `${uid}.multipart`);
  respondWithStream(ctx, services, mp.stream, mp.contentType(MediaType.dicom), { audit });
}

// ---------------------------------------------------------------------------------------------------------------
// Metadata (PS3.18 §10.4.1.1.4), from the index

/**
 * Sends one instance as a Part 10 file (application/dicom with its transfer syntax), WADO-RS and WADO-URI alike: an
 * attachment named by UID only, never inline, so that a browser saves the object rather than render a polyglot
 * preamble (CVE-2019-11687).
 */
export function respondWithInstanceFile(
  ctx: Context,
  services: Services,
  file: Awaited<ReturnType<typeof openInstanceAs>>,
  uid: string,
  audit: AuditDetail,
): void {
  setDownloadName(ctx, `${uid}.dcm`);
  respondWithStream(
    ctx,
    services,
    file.body,
    formatMediaType(MediaType.dicom, { 'transfer-syntax': file.transferSyntax }),
    { length: file.contentLength, audit },
  );
}

function instanceBase(
  root: string,
  row: { study_uid: string; series_uid: string; sop_instance_uid: string },
): string {
  return `${root}/studies/${row.study_uid}/series/${row.series_uid}/instances/${row.sop_instance_uid}`;
}

function etagMatches(ifNoneMatch: string, etag: string): boolean {
  if (!ifNoneMatch) return false;
  const bare = etag.replace(/^W\//, '');
  return ifNoneMatch.split(',').some((t) => {
    const v = t.trim();
    return v === '*' || v.replace(/^W\//, '') === bare;
  });
}

/** PS3.18 §10.4.1.1.4 Retrieve Metadata of a study, series or instance, streamed from the index. */
export async function handleRetrieveMetadata(ctx: Context, services: Services, level: Level): Promise<void> {
  const sel = selectorOf(ctx, level);
  const offers: MediaTypeOffer[] = [
    { mediaType: MediaType.dicomJson },
    { mediaType: MediaType.json },
    { mediaType: MediaType.multipartRelated, partType: MediaType.dicomXml },
  ];
  const chosen = negotiate(ctx, offers);
  const scopes = await requestReadScopes(ctx, services);
  const { count, fingerprint } = await metadataFingerprint(services.db, scopes, sel);
  if (count === 0) throw new NotFoundError(`${level} not found`);
  if (!chosen) throw notAcceptable(describe(offers, []));

  const root = dicomwebRoot(ctx, services.config);
  const xml = chosen.partType === MediaType.dicomXml;
  const gzip = ctx.acceptsEncodings('gzip', 'identity') === 'gzip';
  const etag =
    '"' +
    createHash('sha256')
      .update(
        [
          METADATA_FORMAT_VERSION,
          root,
          chosen.mediaType,
          xml ? 'xml' : 'json',
          gzip ? 'gzip' : '',
          fingerprint,
        ].join('\n'),
      )
      .digest('base64url')
      .slice(0, 32) +
    '"';
  ctx.vary('Accept');
  ctx.vary('Accept-Encoding');
  ctx.set('ETag', etag);
  // Patient data: no cache may keep it (shared workstations, proxies). The ETag still lets a client that kept its own
  // copy revalidate with If-None-Match and get a 304.
  ctx.set('Cache-Control', 'private, no-store');
  if (etagMatches(ctx.get('if-none-match'), etag)) {
    ctx.status = 304;
    return;
  }

  const audit = auditRetrieve(ctx, 'wado.metadata', sel);
  const cache = metadataCacheFor(services.config);
  const cacheKey = `${etag}\n${JSON.stringify(scopes)}`;
  /** A finished answer (kept, or built in one piece), already compressed when the client takes gzip. */
  const sendWhole = (body: Buffer, contentType: string): void => {
    if (gzip) ctx.set('Content-Encoding', 'gzip');
    respondWithStream(ctx, services, Readable.from([body]), contentType, { length: body.length, audit });
  };
  const hit = cache?.get(cacheKey);
  if (hit) {
    sendWhole(hit.body, hit.contentType);
    return;
  }
  const rows = streamInstanceMetadata(services.db, scopes, sel);
  const jsonType =
    chosen.mediaType === MediaType.json ? 'application/json; charset=utf-8' : MediaType.dicomJson;
  if (!xml && count <= METADATA_PAGE_SIZE) {
    // One page is the whole answer (a series, mostly): it is held in memory anyway, so it is assembled and compressed
    // in one piece, sent with its length, and a failure of the index still gets a status rather than a cut stream.
    // Against 64 KB pieces through a gzip stream, the p95 of uncached 100-instance answers fell from 23-27 ms to
    // 15-23 ms (bench/REPORT.md, "Cold metadata"). Larger answers stream page by page, as below.
    const parts: string[] = [];
    for await (const row of rows) parts.push(instanceJsonText(row, root));
    let answer = Buffer.from(`[${parts.join(',')}]`, 'utf8');
    if (gzip) {
      // Up to 1 MiB (about 200 instances, 1-3 ms) on this thread: handing it to libuv's pool and back added a 6-12 ms
      // tail of its own on two busy cores (bench/REPORT.md, "One-piece answers"). Larger ones go to the pool.
      answer =
        answer.length <= GZIP_INLINE_BYTES
          ? zlib.gzipSync(answer, METADATA_GZIP)
          : await gzipAsync(answer, METADATA_GZIP);
    }
    cache?.set(cacheKey, { body: answer, contentType: jsonType });
    sendWhole(answer, jsonType);
    return;
  }
  let body: Readable;
  let contentType: string;
  if (xml) {
    const mp = multipartRelatedStream(xmlParts(rows, root));
    body = mp.stream;
    contentType = mp.contentType(MediaType.dicomXml);
  } else {
    body = Readable.from(jsonArray(rows, root), { objectMode: false });
    contentType = jsonType;
  }
  if (gzip) {
    ctx.set('Content-Encoding', 'gzip');
    const z = zlib.createGzip(METADATA_GZIP);
    body.once('error', (err) => z.destroy(err));
    z.once('close', () => body.destroy());
    body = body.pipe(z);
  }
  if (cache) {
    const keep = cache.collector(cacheKey, contentType);
    body.on('data', (chunk: Buffer) => keep.push(chunk));
    body.once('end', () => keep.done());
  }
  respondWithStream(ctx, services, body, contentType, { audit });
}

const gzipAsync = promisify(zlib.gzip);
const GZIP_INLINE_BYTES = 1024 * 1024;
/** Level 4: on real samples level 1 was about 20 % faster and 22 % larger. */
const METADATA_GZIP: zlib.ZlibOptions = { level: 4 };

/** One instance's DICOM JSON text as answered: its BulkDataURIs made absolute under this root. */
function instanceJsonText(row: MetadataRow, root: string): string {
  return absoluteBulkDataUrisInText(row.json, `${instanceBase(root, row)}/bulk/`);
}

async function* jsonArray(rows: AsyncIterable<MetadataRow>, root: string) {
  let batch = '[';
  let first = true;
  for await (const row of rows) {
    batch += (first ? '' : ',') + instanceJsonText(row, root);
    first = false;
    if (batch.length >= 64 * 1024) {
      yield batch;
      batch = '';
    }
  }
  yield batch + ']';
}

async function* xmlParts(rows: AsyncIterable<MetadataRow>, root: string): AsyncGenerator<OutgoingPart> {
  for await (const row of rows) {
    const ds = JSON.parse(instanceJsonText(row, root)) as DicomJson;
    yield {
      contentType: `${MediaType.dicomXml}; charset=utf-8`,
      body: Buffer.from(dicomJsonToXml(ds), 'utf8'),
    };
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Frames (PS3.18 §10.4.1.1.6) and bulk data (§10.4.1.1.5)

/** A frame plan with the part's media type, which the multipart envelope names too. */
interface NegotiatedFramePlan extends FramePlan {
  partType: string;
}

function framePlan(partType: string, transferSyntax: string, decode: boolean): NegotiatedFramePlan {
  return { partType, contentType: formatMediaType(partType, { 'transfer-syntax': transferSyntax }), decode };
}

/**
 * What frames of an instance can be sent as (PS3.18 Tables 8.7.3-4/5): uncompressed octets by default (decoded by the
 * gateway's codecs when stored compressed and decodable), the stored bytes under the compressed media type, or the stored
 * bytes as application/octet-stream when the client accepts any transfer syntax (what OHIF asks for).
 */
function planFrames(ctx: Context, inst: RetrievableInstance): NegotiatedFramePlan {
  const stored = inst.transfer_syntax;
  const offers: MediaTypeOffer[] = [];
  if (isNativeTransferSyntax(stored)) {
    // The archive hands native frames out in little endian whatever the stored byte order, as ELE frames are.
    const syntaxes = stored === TransferSyntax.implicitVrLittleEndian ? [ELE, stored] : [ELE];
    offers.push({
      mediaType: MediaType.multipartRelated,
      partType: MediaType.octetStream,
      transferSyntaxes: syntaxes,
    });
  } else {
    // Frames decode in-process (src/codecs), so JPEG 2000 and HTJ2K frames are offered uncompressed too.
    const decodable = isDecodableSyntax(stored);
    const compressedType = frameMediaTypeForTransferSyntax(stored);
    const octet: MediaTypeOffer = {
      mediaType: MediaType.multipartRelated,
      partType: MediaType.octetStream,
      transferSyntaxes: decodable ? [stored, ELE] : [stored],
      defaultTransferSyntax: decodable ? ELE : stored,
    };
    const compressed: MediaTypeOffer | undefined = compressedType
      ? {
          mediaType: MediaType.multipartRelated,
          partType: compressedType,
          transferSyntaxes: [stored],
          defaultTransferSyntax: stored,
        }
      : undefined;
    if (decodable) offers.push(octet);
    if (compressed) offers.push(compressed);
    if (!decodable) {
      // Without a decoder, octet-stream only works for clients that accept any transfer syntax; one asking for the
      // default (uncompressed) syntax must not get compressed bytes.
      const withoutOctet = negotiate(ctx, offers);
      const withOctet = negotiate(ctx, [...offers, octet]);
      const pick =
        withOctet &&
        withOctet.partType === MediaType.octetStream &&
        withOctet.matched?.params['transfer-syntax'] !== undefined
          ? withOctet
          : withoutOctet;
      if (!pick) throw notAcceptable(describe([...offers, octet], [stored]));
      return framePlan(pick.partType!, stored, false);
    }
  }
  const chosen = negotiate(ctx, offers);
  if (!chosen) throw notAcceptable(describe(offers, [stored]));
  const ts = chosen.transferSyntax ?? stored;
  return framePlan(chosen.partType!, ts, !isNativeTransferSyntax(stored) && ts === ELE);
}

/** PS3.18 §10.4.1.1.6 Retrieve Frames: `.../frames/1,3,5` as multipart/related, one part per frame, in the order asked. */
export async function handleRetrieveFrames(ctx: Context, services: Services): Promise<void> {
  const sel = selectorOf(ctx, 'instance');
  const frames = boundedFrameList(String(ctx.params.frames ?? ''), services.config.WADO_MAX_FRAMES);
  const scopes = await requestReadScopes(ctx, services);
  const [inst] = await listRetrievableInstances(services.db, scopes, sel);
  if (!inst) throw new NotFoundError('instance not found');
  const count = inst.number_of_frames ?? 0;
  if (count === 0) throw new NotFoundError('instance has no frames');
  const beyond = frames.find((f) => f > count);
  if (beyond !== undefined)
    throw new NotFoundError(`frame ${beyond} does not exist (the instance has ${count})`);
  const plan = planFrames(ctx, inst);
  const audit = auditRetrieve(ctx, 'wado.frames', sel);
  const signal = abortOnClose(ctx);
  const framesUrl =
    `${dicomwebRoot(ctx, services.config)}/studies/${encodeURIComponent(sel.studyUid)}` +
    `/series/${encodeURIComponent(sel.seriesUid!)}/instances/${encodeURIComponent(sel.sopInstanceUid!)}/frames`;
  const parts = await primed(
    frameParts(
      services.archive,
      codecPoolFor(services.config),
      inst,
      frames,
      plan,
      signal,
      (f) => `${framesUrl}/${f}`,
    ),
  );
  const mp = multipartRelatedStream(parts);
  setDownloadName(ctx, `${sel.sopInstanceUid}.frames`);
  respondWithStream(ctx, services, mp.stream, mp.contentType(plan.partType), { audit });
}

/**
 * The frame numbers of a Retrieve Frames request, each once in the order first asked: a list repeating one frame
 * thousands of times must not make the gateway send that frame thousands of times. The list as written is bounded
 * too (before deduplication), so the work of reading it stays small.
 */
export function boundedFrameList(text: string, maxFrames: number): number[] {
  const count = text === '' ? 0 : text.split(',').length;
  if (count > maxFrames) {
    throw new BadRequestError(`the frame list may hold at most ${maxFrames} frame numbers (it has ${count})`);
  }
  const frames = parseFrameList(text);
  if (!frames)
    throw new BadRequestError('malformed frame list: expected comma-separated frame numbers from 1');
  return [...new Set(frames)];
}

/** A single byte range `bytes=a-b`, `bytes=a-` or `bytes=-n`; undefined when absent, multiple or malformed (ignored). */
export function parseRange(header: string): { start?: number; end?: number; suffix?: number } | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') return { suffix: Number(m[2]) };
  const start = Number(m[1]);
  const end = m[2] === '' ? undefined : Number(m[2]);
  if (end !== undefined && end < start) return undefined;
  return { start, end };
}

/** PS3.18 §10.4.1.1.5 Retrieve Bulkdata by the BulkDataURI the metadata gave, with HTTP Range support. */
export async function handleRetrieveBulkData(ctx: Context, services: Services): Promise<void> {
  const sel = selectorOf(ctx, 'instance') as Required<InstanceSelector>;
  const path = parseBulkDataPath(String(ctx.params.path ?? ''));
  if (!path) throw new BadRequestError('malformed bulk data path');
  const scopes = await requestReadScopes(ctx, services);
  const found = await findBulkElement(services.db, scopes, sel, path.jsonPath, path.relative);
  if (!found) throw new NotFoundError('bulk data not found');
  const { instance: inst } = found;
  const signal = abortOnClose(ctx);

  if (path.relative === '7FE00010' && !isNativeTransferSyntax(inst.transfer_syntax)) {
    // Encapsulated Pixel Data has no single value: it is its frames.
    const plan = planFrames(ctx, inst);
    const audit = auditRetrieve(ctx, 'wado.bulk', sel);
    const all = Array.from({ length: inst.number_of_frames ?? 1 }, (_, k) => k + 1);
    const parts = await primed(
      frameParts(services.archive, codecPoolFor(services.config), inst, all, plan, signal),
    );
    const mp = multipartRelatedStream(parts);
    setDownloadName(ctx, `${sel.sopInstanceUid}.bin`);
    respondWithStream(ctx, services, mp.stream, mp.contentType(plan.partType), { audit });
    return;
  }

  const offers: MediaTypeOffer[] = [
    { mediaType: MediaType.multipartRelated, partType: MediaType.octetStream },
    { mediaType: MediaType.octetStream },
  ];
  const chosen = negotiate(ctx, offers);
  if (!chosen) throw notAcceptable(describe(offers, []));
  const audit = auditRetrieve(ctx, 'wado.bulk', sel);
  const value = await openBulkValue(services.archive, inst, path, signal);
  const total = value.contentLength;
  const range = total !== undefined ? parseRange(ctx.get('range')) : undefined;
  let body: Readable = value.body;
  let partHeaders: Record<string, string> = {};
  let length = total;
  if (range && total !== undefined) {
    const start = range.suffix !== undefined ? Math.max(total - range.suffix, 0) : range.start!;
    const end = Math.min(range.end ?? total - 1, total - 1);
    if (start >= total || (range.suffix !== undefined && range.suffix === 0)) {
      value.body.destroy();
      throw new AppError(416, 'range_not_satisfiable', 'the requested range lies outside the bulk data', {
        'Content-Range': `bytes */${total}`,
      });
    }
    const contentRange = `bytes ${start}-${end}/${total}`;
    body = Readable.from(sliceStream(value.body, start, end), { objectMode: false });
    length = end - start + 1;
    ctx.status = 206;
    if (chosen.mediaType === MediaType.octetStream) ctx.set('Content-Range', contentRange);
    else partHeaders = { 'Content-Range': contentRange };
  }
  setDownloadName(ctx, `${sel.sopInstanceUid}.bin`);
  if (chosen.mediaType === MediaType.octetStream) {
    ctx.set('Accept-Ranges', 'bytes');
    respondWithStream(ctx, services, body, MediaType.octetStream, { length, audit });
    return;
  }
  const headers: Record<string, string> = { ...partHeaders };
  if (length !== undefined) headers['Content-Length'] = String(length);
  const mp = multipartRelatedStream(
    (async function* () {
      yield { contentType: MediaType.octetStream, headers, body };
    })(),
  );
  respondWithStream(ctx, services, mp.stream, mp.contentType(MediaType.octetStream), { audit });
}
