/**
 * WADO-URI (PS3.18 §9 "URI Service", Chapter 6.2 in editions before 2019) for legacy viewers:
 * `/wado?requestType=WADO&studyUID=...&seriesUID=...&objectUID=...&contentType=application/dicom`, also under
 * `/projects/{project}/wado`. It answers the object as application/dicom, with the same access rules as WADO-RS.
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import { BadRequestError, NotAcceptableError, NotFoundError } from '../errors';
import { setDownloadName } from '../http/security-headers';
import { listRetrievableInstances } from '../index-db/wado';
import type { AuditDetail, Services } from '../services';
import { noteAudit, requestReadScopes } from './context';
import { MediaType, TransferSyntax, formatMediaType, parseAccept } from './media-types';
import {
  AS_STORED,
  DECODABLE_SYNTAXES,
  clientSignal,
  openInstance,
  requireUid,
  respondWithStream,
} from './wado-rs';

/** The WADO-URI router, mounted at `/wado` and `/projects/{project}/wado`. */
export function wadoUriRouter(services: Services): Router {
  const router = new Router();
  router.get('/', (ctx) => handleWadoUriRetrieve(ctx, services));
  return router;
}

function param(ctx: Context, name: string): string | undefined {
  const v = ctx.query[name];
  const s = Array.isArray(v) ? v[0] : v;
  return s === undefined || s === '' ? undefined : s;
}

/**
 * PS3.18 §9.1 Retrieve DICOM object. Only `application/dicom` is produced here: other content types (rendered
 * JPEG/PNG/GIF, HTML, text) answer 406 with what is available.
 */
export async function handleWadoUriRetrieve(ctx: Context, services: Services): Promise<void> {
  if (param(ctx, 'requestType') !== 'WADO') throw new BadRequestError('requestType must be WADO');
  const studyUid = requireUid(param(ctx, 'studyUID'), 'studyUID');
  const seriesUid = requireUid(param(ctx, 'seriesUID'), 'seriesUID');
  const sopInstanceUid = requireUid(param(ctx, 'objectUID'), 'objectUID');
  // Ignoring this would hand out identifying data to a caller who asked for it removed.
  if (param(ctx, 'anonymize') === 'yes') throw new BadRequestError('anonymize=yes is not supported');

  // contentType lists acceptable media types (PS3.18 §9.1.2.1.1); absent, the DICOM object is what this serves.
  const contentType = param(ctx, 'contentType');
  if (contentType !== undefined) {
    const wanted = parseAccept(contentType).filter((e) => e.q > 0);
    const ok = wanted.some(
      (e) => e.type === MediaType.dicom || e.type === 'application/*' || e.type === '*/*',
    );
    if (!ok) throw new NotAcceptableError(`contentType not available; available: ${MediaType.dicom}`);
  }

  const scopes = await requestReadScopes(ctx, services);
  const [inst] = await listRetrievableInstances(services.db, scopes, { studyUid, seriesUid, sopInstanceUid });
  if (!inst) throw new NotFoundError('object not found');

  const wantedTs = param(ctx, 'transferSyntax');
  let ts = AS_STORED;
  if (wantedTs !== undefined && wantedTs !== inst.transfer_syntax) {
    if (wantedTs !== TransferSyntax.explicitVrLittleEndian || !DECODABLE_SYNTAXES.has(inst.transfer_syntax)) {
      const available = [inst.transfer_syntax];
      if (DECODABLE_SYNTAXES.has(inst.transfer_syntax)) available.push(TransferSyntax.explicitVrLittleEndian);
      throw new NotAcceptableError(
        `transferSyntax not available; available: ${[...new Set(available)].join(', ')}`,
      );
    }
    ts = wantedTs;
  }

  noteAudit(ctx, {
    action: 'wado.uri',
    projectId: ctx.params.project,
    studyUid,
    seriesUid,
    sopInstanceUid,
    bytes: 0,
  });
  const audit = ctx.state.audit as AuditDetail;
  const file = await openInstance(services.pacs, inst, ts, clientSignal(ctx));
  // Never inline: a browser must save the object, not render a polyglot preamble (CVE-2019-11687).
  setDownloadName(ctx, `${sopInstanceUid}.dcm`);
  respondWithStream(
    ctx,
    services,
    file.body,
    formatMediaType(MediaType.dicom, { 'transfer-syntax': file.transferSyntax }),
    {
      length: file.contentLength,
      audit,
    },
  );
}
