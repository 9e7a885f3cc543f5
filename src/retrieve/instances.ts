/**
 * Retrieving whole instances (PS3.18 §10.4.1.1.1-3, WADO-URI §9): as stored, transcoded by the archive or decoded
 * in-process (transcode.ts), one by
 * one as parts, or as a ZIP archive. No HTTP here: WADO-RS, WADO-URI and jobs call it alike.
 */
import type { Readable } from 'node:stream';
import { ZipFile } from 'yazl';
import { isDecodableSyntax, type CodecPool } from '../codecs';
import { isUncompressedTransferSyntax, TransferSyntax } from '../dicom/transfer-syntax';
import { UnrecoverableInputError } from '../errors';
import type { RetrievableInstance } from '../index-db/wado';
import type { Archive, ArchiveStream } from '../orthanc/archive';
import { openAhead, type RetrievedPart } from './parts';
import { type DecodableInstance, openDecodedInstance } from './transcode';

/** Stands for "each instance in the transfer syntax it is stored in" (`transfer-syntax=*`). */
export const AS_STORED = '*';
const ELE = TransferSyntax.explicitVrLittleEndian;

/**
 * True when an instance stored compressed is sent as ELE by decoding its frames in-process rather than by the
 * archive's transcoder: always when the codecs know the syntax, so that an instance and its Retrieve Frames answer
 * hold the same decoded pixels (and JPEG 2000 and HTJ2K, which the archive cannot decode, work at all).
 */
function decodesInProcess(transferSyntax: string): boolean {
  return !isUncompressedTransferSyntax(transferSyntax) && isDecodableSyntax(transferSyntax);
}

/**
 * Transfer syntaxes a set of instances can be sent in: as stored, the one they share, and ELE when each can be
 * decoded (by the archive, or in-process).
 */
export function instanceSyntaxes(archive: Archive, instances: readonly RetrievableInstance[]): string[] {
  const decodable = archive.capabilities().decodable;
  const stored = [...new Set(instances.map((i) => i.transfer_syntax))];
  const list = [AS_STORED];
  if (stored.length === 1) list.push(stored[0]);
  const toEle = (ts: string) => decodable.has(ts) || decodesInProcess(ts);
  if (!list.includes(ELE) && instances.every((i) => toEle(i.transfer_syntax))) list.push(ELE);
  return list;
}

/**
 * Opens one instance in the wanted transfer syntax (AS_STORED: as stored), transcoded by the archive when needed or,
 * given the codec pool, decoded in-process from a compressed syntax to ELE (see decodesInProcess). A syntax the
 * codecs list but cannot decode for this object (12-bit colour DCT, say) falls back to the archive when the archive
 * decodes it.
 */
export async function openInstanceAs(
  archive: Archive,
  inst: DecodableInstance,
  transferSyntax: string,
  signal?: AbortSignal,
  codecs?: CodecPool,
): Promise<ArchiveStream & { transferSyntax: string }> {
  const asStored = transferSyntax === AS_STORED || transferSyntax === inst.transfer_syntax;
  if (!asStored && codecs && transferSyntax === ELE && decodesInProcess(inst.transfer_syntax)) {
    try {
      return await openDecodedInstance(archive, codecs, inst, signal);
    } catch (err) {
      if (
        !(err instanceof UnrecoverableInputError) ||
        !archive.capabilities().decodable.has(inst.transfer_syntax)
      )
        throw err;
    }
  }
  const file = await archive.openInstance(inst.orthanc_id, {
    transferSyntax: asStored ? undefined : transferSyntax,
    signal,
  });
  return { ...file, transferSyntax: asStored ? inst.transfer_syntax : transferSyntax };
}

/** The instances as parts in the wanted transfer syntax, opened a few ahead. `partType(ts)` names each part. */
export function instanceParts(
  archive: Archive,
  instances: readonly RetrievableInstance[],
  transferSyntax: string,
  partType: (transferSyntax: string) => string,
  signal?: AbortSignal,
  codecs?: CodecPool,
): AsyncGenerator<RetrievedPart> {
  return openAhead(instances, async (inst): Promise<RetrievedPart> => {
    const file = await openInstanceAs(archive, inst, transferSyntax, signal, codecs);
    return {
      contentType: partType(file.transferSyntax),
      headers:
        file.contentLength !== undefined ? { 'Content-Length': String(file.contentLength) } : undefined,
      body: file.body,
    };
  });
}

/**
 * A ZIP archive with one entry per instance, named `{study}/{series}/{sop}.dcm`, stored rather than deflated (pixel
 * data rarely deflates well, and storing keeps the archive streaming at full speed). Each instance is requested
 * from the archive only when its turn comes, so memory and archive connections stay flat whatever the study size.
 * The first instance is opened before this resolves, so that an archive failure can still become a status.
 * yazl rather than archiver: archiver 8 is an ES module, which Jest's CommonJS runtime cannot load.
 */
export async function zipOfInstances(
  archive: Archive,
  instances: readonly RetrievableInstance[],
  signal?: AbortSignal,
): Promise<Readable> {
  const first = await archive.openInstance(instances[0].orthanc_id, { signal });
  const zip = new ZipFile();
  const output = zip.outputStream as Readable;
  let current: Readable | undefined = first.body;
  instances.forEach((inst, k) => {
    const name = `${inst.study_uid}/${inst.series_uid}/${inst.sop_instance_uid}.dcm`;
    zip.addReadStreamLazy(name, { compress: false }, (cb) => {
      const opened = k === 0 ? Promise.resolve(first) : archive.openInstance(inst.orthanc_id, { signal });
      opened.then(
        (file) => {
          current = file.body;
          cb(null, file.body);
        },
        (err: unknown) => cb(err, undefined as unknown as NodeJS.ReadableStream),
      );
    });
  });
  zip.on('error', (err: Error) => output.destroy(err));
  // Client gone (or a failure): the entry being read must not keep its archive request open.
  output.once('close', () => current?.destroy());
  zip.end();
  return output;
}
