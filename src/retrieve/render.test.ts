import { Readable } from 'node:stream';
import type { DicomJson } from '../dicom/json';
import { NotFoundError, UnrecoverableInputError } from '../errors';
import { CodecPool, encodeRle } from '../codecs';
import { type Archive, OrthancArchive } from '../orthanc/archive';
import { OrthancHttpError, type PacsClient } from '../orthanc/client';
import { type RenderLimits, type RenderSource, renderArchivedFrame } from './render';

/** An archive stand-in that answers GETs from a table and records the paths asked for. */
function fakeArchive(answers: Record<string, Buffer | Error>): { pacs: Archive; asked: string[] } {
  const asked: string[] = [];
  const pacs = {
    async getStream(path: string) {
      asked.push(path);
      const key = Object.keys(answers).find((k) => path.includes(k));
      const answer = key ? answers[key] : new Error(`unexpected path ${path}`);
      if (answer instanceof Error) throw answer;
      return {
        body: Readable.from([answer]),
        contentType: 'application/octet-stream',
        contentLength: answer.length,
      };
    },
  } as unknown as PacsClient;
  return { pacs: new OrthancArchive(pacs), asked };
}

function source(ts: string, over: Partial<Record<string, number | string>> = {}): RenderSource {
  const v = (tag: string, vr: string, value: number | string) => ({
    [tag]: { vr, Value: [over[tag] ?? value] },
  });
  const ds: DicomJson = {
    ...v('00280010', 'US', 4),
    ...v('00280011', 'US', 4),
    ...v('00280100', 'US', 8),
    ...v('00280101', 'US', 8),
    ...v('00280002', 'US', 1),
    ...v('00280004', 'CS', 'MONOCHROME2'),
    ...v('00280008', 'IS', 2),
    '7FE00010': { vr: 'OB', BulkDataURI: '7FE00010' },
  };
  return { sopInstanceUid: '1.2.3', orthancId: 'abc', transferSyntax: ts, dicomJson: ds };
}

let codecs: CodecPool;
let limits: RenderLimits;
beforeAll(() => {
  codecs = new CodecPool({ threads: 1, queue: 4, maxFrameBytes: 1 << 20 });
  limits = { maxPixels: 1000, maxOutputPixels: 1000, codecs };
});
afterAll(() => codecs.close());
const png = { frameNumber: 2, encode: { mediaType: 'image/png' as const } };

describe('rendering an archived frame', () => {
  it('reads native frames as raw bytes, frame numbers counted from 0 by the archive', async () => {
    const { pacs, asked } = fakeArchive({ '/frames/1/raw': Buffer.alloc(16, 9) });
    const out = await renderArchivedFrame(pacs, source('1.2.840.10008.1.2.1'), png, limits);
    expect(out.subarray(1, 4).toString()).toBe('PNG');
    expect(asked).toEqual(['/instances/abc/frames/1/raw']);
  });

  it('fetches compressed frames as stored bytes and decodes them in-process, never asking the archive to', async () => {
    const px = { rows: 4, columns: 4, samplesPerPixel: 1, bitsAllocated: 8 };
    const pixels = Uint8Array.from({ length: 16 }, (_, i) => i * 16);
    const { pacs, asked } = fakeArchive({ '/frames/1/raw': Buffer.from(encodeRle(pixels, px)) });
    const out = await renderArchivedFrame(pacs, source('1.2.840.10008.1.2.5'), png, limits);
    expect(out.subarray(1, 4).toString()).toBe('PNG');
    expect(asked).toEqual(['/instances/abc/frames/1/raw']);
  });

  it('answers 422 naming the problem for a codestream the decoder refuses', async () => {
    const { pacs } = fakeArchive({ '/frames/1/raw': Buffer.from('not a JPEG 2000 codestream') });
    const err = await renderArchivedFrame(pacs, source('1.2.840.10008.1.2.4.91'), png, limits).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(UnrecoverableInputError);
    expect((err as Error).message).toMatch(/JPEG 2000/);
  });

  it('keeps other archive failures retryable (not unrecoverable)', async () => {
    const { pacs } = fakeArchive({ '/raw': new OrthancHttpError(503, 'resource', '') });
    const err = await renderArchivedFrame(pacs, source('1.2.840.10008.1.2.4.50'), png, limits).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(OrthancHttpError);
  });

  it('refuses an image larger than the limit before fetching anything', async () => {
    const { pacs, asked } = fakeArchive({});
    const big = source('1.2.840.10008.1.2.1', { '00280010': 100, '00280011': 100 });
    await expect(renderArchivedFrame(pacs, big, png, limits)).rejects.toThrow(UnrecoverableInputError);
    expect(asked).toEqual([]);
  });

  it('answers 404 for a frame number beyond Number of Frames', async () => {
    const { pacs, asked } = fakeArchive({});
    await expect(
      renderArchivedFrame(pacs, source('1.2.840.10008.1.2.1'), { ...png, frameNumber: 3 }, limits),
    ).rejects.toThrow(NotFoundError);
    expect(asked).toEqual([]);
  });

  it('stops reading an answer longer than the frame can be', async () => {
    const { pacs } = fakeArchive({ '/raw': Buffer.alloc(16 + 1000) });
    await expect(renderArchivedFrame(pacs, source('1.2.840.10008.1.2'), png, limits)).rejects.toThrow(
      /more frame data than the image declares/,
    );
  });
});
