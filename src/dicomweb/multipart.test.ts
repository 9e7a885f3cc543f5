import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';

import { AppError } from '../errors';
import {
  MultipartFormatError,
  MultipartLimitError,
  MultipartParseOptions,
  MultipartPart,
  multipartRelatedStream,
  OutgoingPart,
  parseMultipartContentType,
  parseMultipartRelated,
  readPartBody,
} from './multipart';

const SAMPLES = process.env.DICOM_SAMPLES_DIR ?? path.resolve(__dirname, '../../../shared/dicom-samples');
const sample = (rel: string): Buffer => readFileSync(path.join(SAMPLES, rel));

const SMALL_INSTANCES = [
  'ct/CT_small.dcm',
  'ct/CT1_J2KI_jpeg2000.dcm',
  'mr/MR_small_RLE.dcm',
  'sc/SC_rgb_rle_2frame.dcm',
  'us/US-Philips-3EAF5680_jpeg-baseline.dcm',
];
const LARGE_INSTANCES = [
  'ct/eCT_Supplemental_enhanced-2frames.dcm',
  'mr/MR-MONO2-12-shoulder_jpeg-lossless-p14.dcm',
];

const LIMITS: MultipartParseOptions = {
  maxParts: 100,
  maxPartBytes: 4 * 1024 * 1024,
  maxTotalBytes: 64 * 1024 * 1024,
};
const STOW_TYPE = (boundary: string): string =>
  `multipart/related; type="application/dicom"; boundary=${boundary}`;

/** Deterministic PRNG so a failing chunking can be replayed from its seed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomChunks(buf: Buffer, seed: number, max = 64): Buffer[] {
  const rand = mulberry32(seed);
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length;) {
    const n = 1 + Math.floor(rand() * max);
    out.push(buf.subarray(i, i + n));
    i += n;
  }
  return out;
}

interface RawPart {
  headers?: string[];
  body: Buffer;
}

/** Builds a multipart body by hand (independently of the writer under test). */
function buildBody(
  parts: RawPart[],
  boundary: string,
  opts: {
    preamble?: string;
    epilogue?: string;
    padding?: string;
    leadingCrlf?: boolean;
    finalCrlf?: boolean;
  } = {},
): Buffer {
  const pieces: Buffer[] = [];
  if (opts.preamble !== undefined) pieces.push(Buffer.from(`${opts.preamble}\r\n`));
  else if (opts.leadingCrlf) pieces.push(Buffer.from('\r\n'));
  parts.forEach((part, i) => {
    const head = `${i === 0 ? '' : '\r\n'}--${boundary}${opts.padding ?? ''}\r\n${(part.headers ?? []).map((h) => `${h}\r\n`).join('')}\r\n`;
    pieces.push(Buffer.from(head, 'latin1'), part.body);
  });
  pieces.push(Buffer.from(`\r\n--${boundary}--${opts.padding ?? ''}`, 'latin1'));
  if (opts.finalCrlf !== false) pieces.push(Buffer.from('\r\n'));
  if (opts.epilogue !== undefined) pieces.push(Buffer.from(opts.epilogue));
  return Buffer.concat(pieces);
}

async function collect(
  chunks: Buffer[] | Readable,
  contentType: string,
  limits: MultipartParseOptions = LIMITS,
): Promise<Array<MultipartPart & { bytes: Buffer }>> {
  const source = Array.isArray(chunks) ? Readable.from(chunks) : chunks;
  const out: Array<MultipartPart & { bytes: Buffer }> = [];
  for await (const part of parseMultipartRelated(source, contentType, limits)) {
    out.push({ ...part, bytes: await readPartBody(part) });
  }
  return out;
}

async function expectRejection<T extends Error>(
  promise: Promise<unknown>,
  type: new (...args: never[]) => T,
): Promise<T> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(type);
  return err as T;
}

/** A source that produces `total` bytes lazily and records whether it was destroyed or read to the end. */
function lazySource(prefix: Buffer, total: number): Readable & { produced: () => number } {
  let produced = 0;
  const filler = Buffer.alloc(16 * 1024, 0x41);
  const stream = new Readable({
    read() {
      if (produced === 0) {
        produced += prefix.length;
        this.push(prefix);
        return;
      }
      if (produced >= total) {
        this.push(null);
        return;
      }
      const n = Math.min(filler.length, total - produced);
      produced += n;
      // Asynchronous like a socket, so timers still run while it is being drained.
      setImmediate(() => this.push(filler.subarray(0, n)));
    },
  });
  return Object.assign(stream, { produced: () => produced });
}

// Skipped only outside CI (a checkout without ../shared); in CI missing samples fail the run instead of hiding.
const samplesAvailable = existsSync(SAMPLES) || Boolean(process.env.CI);
const describeWithSamples = samplesAvailable ? describe : describe.skip;

describeWithSamples('parseMultipartRelated on STOW-RS bodies of real instances', () => {
  const instances = SMALL_INSTANCES.map(sample);
  const boundary = 'DICOMwebBoundary-3f9a2c71e4b8d05a';
  const body = buildBody(
    instances.map((b) => ({ headers: ['Content-Type: application/dicom'], body: b })),
    boundary,
  );

  it.each([1, 2, 3, 42, 1234])(
    'yields byte-identical instances when fed in 1..64-byte chunks (seed %i)',
    async (seed) => {
      const parts = await collect(randomChunks(body, seed), STOW_TYPE(boundary));
      expect(parts.map((p) => p.bytes.equals(instances[p.index]))).toEqual(instances.map(() => true));
      expect(parts.map((p) => p.mediaType)).toEqual(instances.map(() => 'application/dicom'));
      expect(parts.map((p) => p.size)).toEqual(instances.map((b) => b.length));
    },
  );

  it('yields byte-identical instances when the whole body arrives in one chunk', async () => {
    const large = LARGE_INSTANCES.map(sample);
    const all = [...instances, ...large];
    const oneChunk = buildBody(
      all.map((b) => ({ headers: ['Content-Type: application/dicom'], body: b })),
      boundary,
    );
    const parts = await collect([oneChunk], STOW_TYPE(boundary));
    expect(parts.map((p) => p.bytes.equals(all[p.index]))).toEqual(all.map(() => true));
  });

  it('accepts the framing dicomweb-client sends: leading CRLF, quoted boundary, no CRLF after the close', async () => {
    const quoted = `multipart/related; type="application/dicom"; boundary="${boundary}"`;
    const framed = buildBody(
      instances.map((b) => ({ headers: ['Content-Type: application/dicom'], body: b })),
      boundary,
      { leadingCrlf: true, finalCrlf: false },
    );
    const parts = await collect(randomChunks(framed, 7, 4096), quoted);
    expect(parts.map((p) => p.bytes.equals(instances[p.index]))).toEqual(instances.map(() => true));
  });

  it('spills parts above the threshold to a temporary file that is gone once the next part is asked for', async () => {
    const tmpDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'multipart-test-'));
    try {
      const seen: Array<{ path?: string; existedAfterNext?: boolean }> = [];
      const limits = { ...LIMITS, spillThresholdBytes: 20_000, tmpDir };
      for await (const part of parseMultipartRelated(
        Readable.from(randomChunks(body, 9, 8192)),
        STOW_TYPE(boundary),
        limits,
      )) {
        if (seen.length > 0 && seen[seen.length - 1].path) {
          seen[seen.length - 1].existedAfterNext = existsSync(seen[seen.length - 1].path!);
        }
        expect((await readPartBody(part)).equals(instances[part.index])).toBe(true);
        expect(part.path !== undefined).toBe(instances[part.index].length > 20_000);
        seen.push({ path: part.path });
      }
      expect(seen.filter((s) => s.path).length).toBe(instances.filter((b) => b.length > 20_000).length);
      expect(seen.every((s) => s.existedAfterNext !== true)).toBe(true);
      expect(await fsp.readdir(tmpDir)).toEqual([]);
    } finally {
      await fsp.rm(tmpDir, { recursive: true, force: true });
    }
  });
});

describe('parseMultipartRelated framing', () => {
  const boundary = 'b0undary';
  const ct = STOW_TYPE(boundary);

  it('finds a delimiter split across two chunks at every possible offset', async () => {
    const parts: RawPart[] = [
      { headers: ['Content-Type: application/dicom'], body: Buffer.from('first\r\n-body\r\n--b0und') },
      { headers: ['Content-Type: application/dicom'], body: Buffer.from('\r\r\n--b0undar\r') },
    ];
    const body = buildBody(parts, boundary, { preamble: 'ignore me', epilogue: 'and me' });
    for (let cut = 0; cut <= body.length; cut++) {
      const got = await collect([body.subarray(0, cut), body.subarray(cut)], ct);
      expect({ cut, bodies: got.map((p) => p.bytes.toString('latin1')) }).toEqual({
        cut,
        bodies: parts.map((p) => p.body.toString('latin1')),
      });
    }
  });

  it('keeps near-miss delimiters inside bodies intact under random chunking', async () => {
    const rand = mulberry32(2024);
    const alphabet = ['\r', '\n', '-', 'b', '0', 'u', 'n', 'd', 'a', 'r', 'y', 'x'];
    for (let round = 0; round < 200; round++) {
      const parts: RawPart[] = [];
      const count = 1 + Math.floor(rand() * 4);
      for (let i = 0; i < count; i++) {
        let text = '';
        const len = Math.floor(rand() * 80);
        for (let j = 0; j < len; j++) text += alphabet[Math.floor(rand() * alphabet.length)];
        // A body may not contain the real delimiter; anything short of it must survive.
        text = text.split(`\r\n--${boundary}`).join('\r\n--b0undar');
        if (text.endsWith('\r\n--b0undar') || text.endsWith('\r')) text += 'x';
        parts.push({
          headers: rand() < 0.5 ? ['Content-Type: application/dicom'] : [],
          body: Buffer.from(text, 'latin1'),
        });
      }
      const body = buildBody(parts, boundary);
      const got = await collect(randomChunks(body, round, 1 + Math.floor(rand() * 16)), ct);
      expect(got.map((p) => p.bytes.toString('latin1'))).toEqual(parts.map((p) => p.body.toString('latin1')));
    }
  });

  it('ignores the preamble and the epilogue, and tolerates transport padding after the boundary', async () => {
    const body = buildBody(
      [{ headers: ['Content-Type: application/dicom'], body: Buffer.from('DICM') }],
      boundary,
      {
        preamble: 'This is a preamble.\r\n--notTheBoundary',
        epilogue: '\r\nThis is an epilogue with --b0undary in it.\r\n',
        padding: ' \t ',
      },
    );
    const parts = await collect(randomChunks(body, 5, 3), ct);
    expect(parts.map((p) => p.bytes.toString())).toEqual(['DICM']);
  });

  it('unquotes a quoted boundary that contains characters only allowed inside quotes', async () => {
    const odd = "a'b(c)+_,-./:=? d";
    const body = buildBody([{ body: Buffer.from('x') }, { body: Buffer.from('y') }], odd);
    const parts = await collect([body], `multipart/related; type="application/dicom"; boundary="${odd}"`);
    expect(parts.map((p) => p.bytes.toString())).toEqual(['x', 'y']);
  });

  it('gives header-less parts the multipart type parameter, else text/plain, and lower-cases header names', async () => {
    const body = buildBody(
      [
        { body: Buffer.from('no headers') },
        {
          headers: [
            'Content-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1',
            'Content-Location: a',
            'X-Dup: 1',
            'x-dup: 2',
          ],
          body: Buffer.from(''),
        },
      ],
      boundary,
    );
    const withType = await collect([body], ct);
    expect(withType[0]).toMatchObject({
      headers: {},
      contentType: 'application/dicom',
      mediaType: 'application/dicom',
    });
    expect(withType[1]).toMatchObject({
      headers: { 'content-location': 'a', 'x-dup': '1, 2' },
      contentType: 'application/dicom; transfer-syntax=1.2.840.10008.1.2.1',
      mediaType: 'application/dicom',
      size: 0,
    });
    const withoutType = await collect([body], `multipart/related; boundary=${boundary}`);
    expect(withoutType[0].contentType).toBe('text/plain');
  });

  it('reads folded header lines as one value', async () => {
    const body = buildBody(
      [
        {
          headers: ['Content-Type: application/dicom;', '  transfer-syntax=1.2.840.10008.1.2.1'],
          body: Buffer.from('z'),
        },
      ],
      boundary,
    );
    const [part] = await collect([body], ct);
    expect(part.contentType).toBe('application/dicom; transfer-syntax=1.2.840.10008.1.2.1');
  });
});

describe('parseMultipartRelated limits', () => {
  const boundary = 'limits';
  const ct = STOW_TYPE(boundary);
  const threeParts = buildBody(
    [1, 2, 3].map((n) => ({ headers: ['Content-Type: application/dicom'], body: Buffer.alloc(1000, n) })),
    boundary,
  );

  it('stops after maxParts parts and says which limit was hit', async () => {
    const yielded: number[] = [];
    const err = await expectRejection(
      (async () => {
        for await (const part of parseMultipartRelated(Readable.from(randomChunks(threeParts, 1)), ct, {
          ...LIMITS,
          maxParts: 2,
        })) {
          yielded.push(part.index);
        }
      })(),
      MultipartLimitError,
    );
    expect(err).toMatchObject({ limit: 'maxParts', max: 2, status: 413 });
    expect(err).toBeInstanceOf(AppError);
    expect(yielded).toEqual([0, 1]);
  });

  it('rejects a part larger than maxPartBytes', async () => {
    const err = await expectRejection(
      collect([threeParts], ct, { ...LIMITS, maxPartBytes: 999 }),
      MultipartLimitError,
    );
    expect(err.limit).toBe('maxPartBytes');
  });

  it('accepts a part of exactly maxPartBytes', async () => {
    const parts = await collect(randomChunks(threeParts, 3), ct, { ...LIMITS, maxPartBytes: 1000 });
    expect(parts).toHaveLength(3);
  });

  it('rejects a body larger than maxTotalBytes, counting framing and epilogue', async () => {
    const err = await expectRejection(
      collect(randomChunks(threeParts, 4), ct, { ...LIMITS, maxTotalBytes: threeParts.length - 1 }),
      MultipartLimitError,
    );
    expect(err.limit).toBe('maxTotalBytes');
    await expect(
      collect([threeParts], ct, { ...LIMITS, maxTotalBytes: threeParts.length }),
    ).resolves.toHaveLength(3);
  });

  it('rejects an endless header block', async () => {
    const body = Buffer.concat([Buffer.from(`--${boundary}\r\n`), Buffer.alloc(40_000, 0x61)]);
    const err = await expectRejection(
      collect(randomChunks(body, 5, 4096), ct, { ...LIMITS, maxHeaderBytes: 1024 }),
      MultipartLimitError,
    );
    expect(err.limit).toBe('maxHeaderBytes');
  });
});

describe('parseMultipartRelated malformed bodies', () => {
  const boundary = 'malformed';
  const ct = STOW_TYPE(boundary);
  const good = buildBody(
    [{ headers: ['Content-Type: application/dicom'], body: Buffer.alloc(300, 7) }],
    boundary,
  );

  it.each([
    ['application/dicom', 'not-multipart'],
    ['multipart/related; type="application/dicom"', 'missing-boundary'],
    ['multipart/related; boundary=""', 'missing-boundary'],
    [`multipart/related; boundary="${'x'.repeat(201)}"`, 'invalid-boundary'],
  ])('rejects Content-Type %j (%s)', async (header, reason) => {
    const err = await expectRejection(collect([good], header), MultipartFormatError);
    expect(err).toMatchObject({ reason, status: 400 });
    expect(err).toBeInstanceOf(AppError);
  });

  it('rejects a body without any delimiter', async () => {
    const err = await expectRejection(collect([Buffer.from('just some bytes')], ct), MultipartFormatError);
    expect(err.reason).toBe('no-delimiter');
  });

  it.each([
    ['inside the headers', 20],
    ['inside a body', 100],
    ['before the closing delimiter', good.length - `\r\n--${boundary}--\r\n`.length],
    ['inside the closing delimiter', good.length - 4],
  ])('rejects a body truncated %s', async (_where, at) => {
    const err = await expectRejection(
      collect(randomChunks(good.subarray(0, at), 11), ct),
      MultipartFormatError,
    );
    expect(err.reason).toBe('truncated');
  });

  it('rejects characters after a boundary other than padding', async () => {
    const body = Buffer.from(`--${boundary}garbage\r\n\r\nx\r\n--${boundary}--\r\n`);
    const err = await expectRejection(collect([body], ct), MultipartFormatError);
    expect(err.reason).toBe('bad-delimiter-line');
  });

  it('rejects a header line without a colon', async () => {
    const body = Buffer.from(`--${boundary}\r\nnot a header\r\n\r\nx\r\n--${boundary}--\r\n`);
    const err = await expectRejection(collect([body], ct), MultipartFormatError);
    expect(err.reason).toBe('bad-part-headers');
  });

  it('reports a failing source as a stream error', async () => {
    const source = new PassThrough();
    const pending = collect(source, ct);
    source.write(good.subarray(0, 50));
    source.destroy(new Error('ECONNRESET'));
    const err = await expectRejection(pending, MultipartFormatError);
    expect(err.reason).toBe('stream-error');
    expect((err.cause as Error).message).toBe('ECONNRESET');
  });
});

describe('parseMultipartRelated when the consumer stops early', () => {
  const boundary = 'early';
  const ct = STOW_TYPE(boundary);
  const firstPart = Buffer.from(
    `--${boundary}\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n--${boundary}\r\n\r\n`,
  );

  async function takeFirst(source: Readable, limits: MultipartParseOptions = LIMITS): Promise<string> {
    for await (const part of parseMultipartRelated(source, ct, limits)) {
      return part.body!.toString();
    }
    throw new Error('no part');
  }

  const settle = () => new Promise((resolve) => setTimeout(resolve, 50));

  it('destroys a source whose remaining body is larger than maxDrainBytes', async () => {
    const source = lazySource(firstPart, 512 * 1024 * 1024);
    expect(await takeFirst(source, { ...LIMITS, maxDrainBytes: 64 * 1024 })).toBe('first');
    await settle();
    expect(source.destroyed).toBe(true);
    expect(source.produced()).toBeLessThan(1024 * 1024);
  });

  it('destroys the source at once when maxDrainBytes is 0', async () => {
    const source = lazySource(firstPart, 10 * 1024 * 1024);
    expect(await takeFirst(source, { ...LIMITS, maxDrainBytes: 0 })).toBe('first');
    expect(source.destroyed).toBe(true);
  });

  it('drains a small remainder to its end so the connection stays usable', async () => {
    const source = lazySource(firstPart, 100 * 1024);
    expect(await takeFirst(source)).toBe('first');
    await settle();
    expect(source.readableEnded).toBe(true);
  });

  it('drains or destroys the source after a limit error as well', async () => {
    const source = lazySource(firstPart, 512 * 1024 * 1024);
    await expectRejection(
      collect(source, ct, { ...LIMITS, maxPartBytes: 10, maxDrainBytes: 1024 }),
      MultipartLimitError,
    );
    await settle();
    expect(source.destroyed).toBe(true);
    expect(source.produced()).toBeLessThan(1024 * 1024);
  });

  it('removes a spilled part when the consumer stops on it', async () => {
    const tmpDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'multipart-test-'));
    try {
      const body = buildBody([{ body: Buffer.alloc(5000, 1) }, { body: Buffer.alloc(10, 2) }], boundary);
      for await (const part of parseMultipartRelated(Readable.from([body]), ct, {
        ...LIMITS,
        spillThresholdBytes: 100,
        tmpDir,
      })) {
        expect(existsSync(part.path!)).toBe(true);
        break;
      }
      expect(await fsp.readdir(tmpDir)).toEqual([]);
    } finally {
      await fsp.rm(tmpDir, { recursive: true, force: true });
    }
  });
});

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function* fromArray<T>(items: T[]): AsyncGenerator<T> {
  for (const item of items) yield item;
}

describe('multipartRelatedStream', () => {
  it('round-trips Buffers and streams through the parser, byte for byte', async () => {
    const bodies = samplesAvailable
      ? [...SMALL_INSTANCES, ...LARGE_INSTANCES].map(sample)
      : [Buffer.alloc(70_000, 1), Buffer.from('\r\n--x\r\n')];
    const parts: OutgoingPart[] = bodies.map((b, i) => ({
      contentType: 'application/dicom; transfer-syntax=1.2.840.10008.1.2.1',
      headers: { 'Content-Location': `/studies/1/instances/${i}` },
      body: i % 2 === 0 ? b : Readable.from(randomChunks(b, i, 65536)),
    }));
    const out = multipartRelatedStream(fromArray(parts));
    const contentType = out.contentType('application/dicom', { 'transfer-syntax': '1.2.840.10008.1.2.1' });
    expect(parseMultipartContentType(contentType)).toEqual({
      mediaType: 'multipart/related',
      boundary: out.boundary,
      type: 'application/dicom',
    });
    const encoded = await readAll(out.stream);
    const decoded = await collect(randomChunks(encoded, 77, 64 * 1024), contentType, {
      ...LIMITS,
      maxParts: 1000,
    });
    expect(decoded.map((p) => p.bytes.equals(bodies[p.index]))).toEqual(bodies.map(() => true));
    expect(decoded.map((p) => p.headers['content-location'])).toEqual(
      bodies.map((_b, i) => `/studies/1/instances/${i}`),
    );
  });

  it('uses a random boundary of at least 32 hex characters', () => {
    const a = multipartRelatedStream(fromArray([]));
    const b = multipartRelatedStream(fromArray([]));
    expect(a.boundary).toMatch(/^[0-9a-f]{32,70}$/);
    expect(a.boundary).not.toBe(b.boundary);
    a.stream.destroy();
    b.stream.destroy();
  });

  it('writes an empty multipart body as just the close delimiter', async () => {
    const out = multipartRelatedStream(fromArray([]), 'empty');
    expect((await readAll(out.stream)).toString()).toBe('--empty--\r\n');
  });

  it('does not ask for the next part before the current body has been written', async () => {
    const log: string[] = [];
    const first = new PassThrough();
    async function* parts(): AsyncGenerator<OutgoingPart> {
      log.push('part 1 requested');
      yield { contentType: 'application/dicom', body: first };
      log.push('part 2 requested');
      yield { contentType: 'application/dicom', body: Buffer.from('second') };
    }
    const out = multipartRelatedStream(parts(), 'order');
    const done = readAll(out.stream);
    first.write('first-a');
    await new Promise((r) => setTimeout(r, 20));
    expect(log).toEqual(['part 1 requested']);
    first.end('first-b');
    const text = (await done).toString();
    expect(log).toEqual(['part 1 requested', 'part 2 requested']);
    expect(text).toBe(
      '--order\r\nContent-Type: application/dicom\r\n\r\nfirst-afirst-b\r\n--order\r\nContent-Type: application/dicom\r\n\r\nsecond\r\n--order--\r\n',
    );
  });

  it('reads a body only as fast as the output is consumed', async () => {
    let pulled = 0;
    const endless = new Readable({
      highWaterMark: 16 * 1024,
      read() {
        setImmediate(() => {
          pulled += 16 * 1024;
          this.push(Buffer.alloc(16 * 1024));
        });
      },
    });
    const stalledClient = new Writable({ highWaterMark: 16 * 1024, write: () => undefined }); // never acknowledges
    const out = multipartRelatedStream(
      fromArray([{ contentType: 'application/octet-stream', body: endless }]),
      'bp',
    );
    out.stream.pipe(stalledClient);
    await new Promise((r) => setTimeout(r, 100));
    const afterStall = pulled;
    await new Promise((r) => setTimeout(r, 100));
    expect(pulled).toBe(afterStall);
    expect(pulled).toBeLessThanOrEqual(256 * 1024);
    out.stream.destroy();
    expect(endless.destroyed).toBe(true);
  });

  it('destroys the body being written and ends the parts iterable when the output is destroyed', async () => {
    const stalled = new PassThrough(); // never produces: like an upstream that hangs
    let finished = false;
    let third = false;
    async function* parts(): AsyncGenerator<OutgoingPart> {
      try {
        yield { contentType: 'application/dicom', body: Buffer.from('one') };
        yield { contentType: 'application/dicom', body: stalled };
        third = true;
        yield { contentType: 'application/dicom', body: Buffer.from('three') };
      } finally {
        finished = true;
      }
    }
    const out = multipartRelatedStream(parts(), 'abort');
    out.stream.on('data', () => undefined);
    await new Promise((r) => setTimeout(r, 20));
    out.stream.destroy();
    await new Promise((r) => setTimeout(r, 20));
    expect(stalled.destroyed).toBe(true);
    expect(finished).toBe(true);
    expect(third).toBe(false);
  });

  it('fails the output when a body stream fails', async () => {
    const broken = new Readable({
      read() {
        this.destroy(new Error('upstream failed'));
      },
    });
    const out = multipartRelatedStream(
      fromArray([{ contentType: 'application/dicom', body: broken }]),
      'fail',
    );
    await expect(readAll(out.stream)).rejects.toThrow('upstream failed');
  });

  it('refuses header values that would inject lines', async () => {
    const out = multipartRelatedStream(
      fromArray([
        { contentType: 'application/dicom', headers: { 'X-A': 'a\r\nX-B: b' }, body: Buffer.from('x') },
      ]),
      'inject',
    );
    await expect(readAll(out.stream)).rejects.toThrow(TypeError);
  });

  it('refuses an invalid boundary', () => {
    expect(() => multipartRelatedStream(fromArray([]), 'x'.repeat(71))).toThrow(TypeError);
    expect(() => multipartRelatedStream(fromArray([]), 'bad"quote')).toThrow(TypeError);
  });
});
