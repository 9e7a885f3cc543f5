/**
 * Retrieving whole instances (PS3.18 §10.4.1.1.1-3, WADO-URI §9): as stored or transcoded by the archive, one by
 * one as parts, or as a ZIP archive. No HTTP here: WADO-RS, WADO-URI and jobs call it alike.
 */
import type { Readable } from 'node:stream';
import { ZipFile } from 'yazl';
import { TransferSyntax } from '../dicom/transfer-syntax';
import type { RetrievableInstance } from '../index-db/wado';
import type { Archive, ArchiveStream } from '../orthanc/archive';
import { openAhead, type RetrievedPart } from './parts';

/** Stands for "each instance in the transfer syntax it is stored in" (`transfer-syntax=*`). */
export const AS_STORED = '*';
const ELE = TransferSyntax.explicitVrLittleEndian;

/** Transfer syntaxes a set of instances can be sent in: as stored, the one they share, and ELE when decodable. */
export function instanceSyntaxes(archive: Archive, instances: readonly RetrievableInstance[]): string[] {
  const decodable = archive.capabilities().decodable;
  const stored = [...new Set(instances.map((i) => i.transfer_syntax))];
  const list = [AS_STORED];
  if (stored.length === 1) list.push(stored[0]);
  if (!list.includes(ELE) && instances.every((i) => decodable.has(i.transfer_syntax))) list.push(ELE);
  return list;
}

/** Opens one instance in the wanted transfer syntax (AS_STORED: as stored), transcoded by the archive when needed. */
export async function openInstanceAs(
  archive: Archive,
  inst: Pick<RetrievableInstance, 'orthanc_id' | 'transfer_syntax'>,
  transferSyntax: string,
  signal?: AbortSignal,
): Promise<ArchiveStream & { transferSyntax: string }> {
  const asStored = transferSyntax === AS_STORED || transferSyntax === inst.transfer_syntax;
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
): AsyncGenerator<RetrievedPart> {
  return openAhead(instances, async (inst): Promise<RetrievedPart> => {
    const file = await openInstanceAs(archive, inst, transferSyntax, signal);
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
