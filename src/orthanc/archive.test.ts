import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { NotFoundError, UnrecoverableInputError } from '../errors';
import { decodeFailure, isRefusedByArchive, OrthancArchive } from './archive';
import { OrthancClient } from './client';

type Handler = (req: IncomingMessage, body: string, res: ServerResponse) => void;

/** A loopback stand-in for Orthanc's REST API that records what it was asked and answers as told. */
async function peer(handler: Handler): Promise<{ server: Server; archive: OrthancArchive; seen: string[] }> {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      seen.push(`${req.method} ${req.url}${body ? ` ${body}` : ''}`);
      handler(req, body, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = new OrthancClient({
    ORTHANC_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    ORTHANC_USERNAME: undefined,
    ORTHANC_PASSWORD: undefined,
    ORTHANC_TIMEOUT_MS: 5000,
    ORTHANC_CONNECTIONS: 2,
  } as never);
  const archive = new OrthancArchive(client);
  const close = server.close.bind(server);
  server.close = ((cb?: (err?: Error) => void) => {
    void client.close().then(() => close(cb));
    return server;
  }) as typeof server.close;
  return { server, archive, seen };
}

const json = (res: ServerResponse, status: number, value: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
};

async function text(stream: NodeJS.ReadableStream): Promise<string> {
  let s = '';
  for await (const c of stream) s += String(c);
  return s;
}

describe('OrthancArchive', () => {
  let p: Awaited<ReturnType<typeof peer>>;
  afterEach(async () => {
    await new Promise<void>((r) => p.server.close(() => r()));
  });

  it('stores an instance and says whether the archive already had it', async () => {
    p = await peer((_req, _body, res) =>
      json(res, 200, {
        ID: 'abc',
        Status: 'AlreadyStored',
        ParentStudy: '',
        ParentSeries: '',
        ParentPatient: '',
      }),
    );
    expect(await p.archive.storeInstance(Buffer.from('DICM'), 4)).toEqual({
      status: 'alreadyStored',
      archiveId: 'abc',
    });
    expect(p.seen).toEqual(['POST /instances DICM']);
  });

  it('stores again when the index reports a serialisation conflict, and gives up after a few attempts', async () => {
    const conflict = {
      HttpStatus: 503,
      Message:
        'Database could not serialize access due to concurrent update, the transaction should be retried',
    };
    let calls = 0;
    p = await peer((_req, _body, res) =>
      ++calls < 3 ? json(res, 503, conflict) : json(res, 200, { ID: 'abc', Status: 'Success' }),
    );
    expect(await p.archive.storeInstance(Buffer.from('DICM'), 4)).toEqual({
      status: 'stored',
      archiveId: 'abc',
    });
    expect(p.seen).toHaveLength(3);
    await new Promise<void>((r) => p.server.close(() => r()));
    p = await peer((_req, _body, res) => json(res, 503, conflict));
    const err = await p.archive.storeInstance(Buffer.from('DICM'), 4).catch((e: unknown) => e);
    expect(isRefusedByArchive(err)).toBe(false);
    expect(p.seen).toHaveLength(4);
    // Any other 503 (Orthanc going down) is not retried here: the caller answers "retry later" at once.
    await new Promise<void>((r) => p.server.close(() => r()));
    p = await peer((_req, _body, res) => json(res, 503, { HttpStatus: 503, Message: 'Service unavailable' }));
    await p.archive.storeInstance(Buffer.from('DICM'), 4).catch(() => undefined);
    expect(p.seen).toHaveLength(1);
  });

  it('reports a refused object as a refusal, not as an outage', async () => {
    p = await peer((_req, _body, res) => json(res, 400, { OrthancStatus: 15 }));
    const err = await p.archive.storeInstance(Buffer.from('x')).catch((e: unknown) => e);
    expect(isRefusedByArchive(err)).toBe(true);
  });

  it('fetches frames by 1-based number from the raw frame resource, in the order asked', async () => {
    p = await peer((req, _body, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.end(`frame:${req.url}`);
    });
    const got: string[] = [];
    for await (const { frame, stream } of p.archive.openFrames('i/1', [3, 1])) {
      got.push(`${frame}=${await text(stream.body)}`);
    }
    expect(got).toEqual(['3=frame:/instances/i%2F1/frames/2/raw', '1=frame:/instances/i%2F1/frames/0/raw']);
  });

  it('transcodes through /modify keeping the SOP Instance UID, and opens as stored without it', async () => {
    p = await peer((_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'application/dicom' });
      res.end('file');
    });
    await text(
      (
        await p.archive.openInstance('x', {
          transferSyntax: '1.2.840.10008.1.2.1',
          storedSyntax: '1.2.840.10008.1.2.4.50',
        })
      ).body,
    );
    await text(
      (
        await p.archive.openInstance('x', {
          transferSyntax: '1.2.840.10008.1.2.1',
          storedSyntax: '1.2.840.10008.1.2.1',
        })
      ).body,
    );
    await text((await p.archive.openInstance('x')).body);
    expect(p.seen).toEqual([
      'POST /instances/x/modify {"Transcode":"1.2.840.10008.1.2.1","Force":true,"Keep":["SOPInstanceUID"]}',
      'GET /instances/x/file',
      'GET /instances/x/file',
    ]);
  });

  it('names the transfer syntax when the archive cannot decode a frame', async () => {
    p = await peer((_req, _body, res) => json(res, 500, { OrthancStatus: 2 }));
    const refused: unknown = await p.archive.openFrame('x', 1).catch((err: unknown) => err);
    expect(decodeFailure(refused, '1.2.840.10008.1.2.4.90')).toEqual(
      new UnrecoverableInputError('the archive cannot decode transfer syntax 1.2.840.10008.1.2.4.90'),
    );
    expect(p.seen).toEqual(['GET /instances/x/frames/0/raw']);
  });

  it('reads native pixel data as fragment 0 and other bulk data by content path', async () => {
    p = await peer((_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.end('v');
    });
    await text((await p.archive.openBulkData('x', '7FE00010', { pixelData: true })).body);
    await text((await p.archive.openBulkData('x', '00281201')).body);
    await text((await p.archive.openBulkData('x', '00400275/0/00081150')).body);
    expect(p.seen).toEqual([
      'GET /instances/x/content/7fe0-0010/0',
      'GET /instances/x/content/0028-1201',
      'GET /instances/x/content/0040-0275/0/0008-1150',
    ]);
  });

  it('refuses an archived file larger than the caller allows', async () => {
    p = await peer((_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'application/dicom' });
      res.end(Buffer.alloc(100));
    });
    expect((await p.archive.readInstanceFile('x', 100)).length).toBe(100);
    await expect(p.archive.readInstanceFile('x', 99)).rejects.toBeInstanceOf(UnrecoverableInputError);
  });

  it('answers the change log, listing and identity in its own terms', async () => {
    p = await peer((req, _body, res) => {
      const answers: Record<string, unknown> = {
        '/changes?since=5&limit=2': {
          Changes: [
            { Seq: 6, ChangeType: 'NewInstance', ResourceType: 'Instance', ID: 'i', Path: '', Date: '' },
          ],
          Done: true,
          Last: 6,
        },
        '/instances?since=0&limit=2': ['i', 'j'],
        '/statistics': { CountInstances: 2 },
        '/instances/i': { MainDicomTags: { SOPInstanceUID: '1.2.3' }, ParentSeries: 's' },
        '/series/s': { MainDicomTags: { SeriesInstanceUID: '1.2' }, ParentStudy: 't' },
        '/studies/t': { MainDicomTags: { StudyInstanceUID: '1' } },
        '/instances/i/metadata?expand': {
          CalledAET: 'AP',
          RemoteAET: 'MOD',
          RemoteIP: '10.0.0.1',
          Origin: 'DicomProtocol',
        },
      };
      if (req.url! in answers) json(res, 200, answers[req.url!]);
      else json(res, 404, {});
    });
    expect(await p.archive.changes(5, 2)).toEqual({
      changes: [{ seq: 6, kind: 'NewInstance', level: 'Instance', archiveId: 'i' }],
      done: true,
      last: 6,
    });
    expect(await p.archive.listInstances(0, 2)).toEqual(['i', 'j']);
    expect(await p.archive.countInstances()).toBe(2);
    expect(await p.archive.instanceIdentity('i')).toEqual({
      sopInstanceUid: '1.2.3',
      seriesUid: '1.2',
      studyUid: '1',
    });
    expect(await p.archive.seriesInstanceUid('s')).toBe('1.2');
    expect(await p.archive.arrivalOrigin('i')).toEqual({
      calledAet: 'AP',
      callingAet: 'MOD',
      remoteIp: '10.0.0.1',
      origin: 'DicomProtocol',
    });
    expect(await p.archive.hasInstance('i')).toBe(true);
    expect(await p.archive.hasInstance('gone')).toBe(false);
    await expect(p.archive.instanceTags('gone')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('says which transfer syntaxes it can decode (no JPEG 2000 without the GDCM plugin)', () => {
    p = { server: createServer(), archive: new OrthancArchive({} as never), seen: [] };
    const caps = p.archive.capabilities();
    expect(caps.decodable.has('1.2.840.10008.1.2.4.50')).toBe(true);
    expect(caps.decodable.has('1.2.840.10008.1.2.4.90')).toBe(false);
  });
});
