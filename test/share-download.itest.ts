import { setTimeout as sleep } from 'node:timers/promises';
import { ingestInstance } from '../src/ingest/ingest';
import { generateInstances } from '../tools/synth';
import { bearer, passwordToken, startAuthStack, type AuthStack } from './helpers/auth';
import { resetStack } from './helpers/gateway';

/**
 * The share page's "Download as ZIP" (web/src/api.ts sharedDownload) hands the browser's download manager
 * `/share/{token}/dicom-web/studies/{uid}?accept=application/zip`. This checks that the gateway streams that archive
 * with backpressure: a reader that takes the first bytes and then stops leaves most instances of a multi-instance
 * study unopened, so the gateway's memory does not grow with the study, and the rest arrives once it reads on.
 * The browser side (the page saves through the download manager, never through page memory) is in web.itest.ts.
 */

const INSTANCES = 24;
/** 1024 × 1024 16-bit frames: about 2 MiB per instance, 48 MiB per study, well past loopback socket buffers. */
const MATRIX = 1024;

describe("share page's ZIP download", () => {
  let stack: AuthStack;
  let study: string;
  let zipUrl: string;

  beforeAll(async () => {
    await resetStack();
    stack = await startAuthStack();
    const carol = await passwordToken(stack.issuer, 'carol');
    const created = await fetch(`${stack.gw.url}/api/projects`, {
      method: 'POST',
      headers: bearer(carol, { 'content-type': 'application/json' }),
      body: JSON.stringify({ id: 'zip-share', name: 'ZIP share' }),
    });
    expect(created.status).toBe(201);
    for (const inst of generateInstances({
      seed: 'share-zip',
      modalities: ['CT'],
      instancesPerSeries: INSTANCES,
      rows: MATRIX,
      cols: MATRIX,
    })) {
      const out = await ingestInstance(stack.gw.services, inst.buffer, ['zip-share'], 'stow');
      if (!out.ok) throw new Error(`seeding failed: ${out.message}`);
      study = inst.studyInstanceUid;
    }
    const res = await fetch(`${stack.gw.url}/api/projects/zip-share/shares`, {
      method: 'POST',
      headers: bearer(carol, { 'content-type': 'application/json' }),
      body: JSON.stringify({ studyUid: study, expiresIn: '1h' }),
    });
    expect(res.status).toBe(201);
    const { dicomwebUrl } = (await res.json()) as { dicomwebUrl: string };
    zipUrl = `${dicomwebUrl}/studies/${study}?accept=${encodeURIComponent('application/zip')}`;
  }, 5 * 60_000);
  afterAll(async () => stack?.close());

  it('streams a 24-instance study: bytes arrive while most instances are still unopened', async () => {
    const archive = stack.gw.services.archive;
    const realOpen = archive.openInstance.bind(archive);
    let opened = 0;
    // Counts the gateway's reads from the real Orthanc (each call goes through unchanged).
    const spy = jest.spyOn(archive, 'openInstance').mockImplementation((...args) => {
      opened++;
      return realOpen(...args);
    });
    try {
      const res = await fetch(zipUrl);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('application/zip');
      expect(res.headers.get('content-disposition')).toContain(`${study}.zip`);
      const reader = res.body!.getReader();
      const first = await reader.read();
      expect(Buffer.from(first.value!.subarray(0, 4))).toEqual(Buffer.from('PK\x03\x04', 'latin1'));
      // The reader stops: the gateway may fill the socket's buffers, then must wait instead of reading on.
      await sleep(2000);
      const openedWhilePaused = opened;
      expect(openedWhilePaused).toBeGreaterThan(0);
      expect(openedWhilePaused).toBeLessThan(INSTANCES / 2);

      let bytes = first.value!.length;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        bytes += value.length;
      }
      expect(opened).toBe(INSTANCES);
      // Every instance went out whole: stored entries of about 2 MiB each.
      expect(bytes).toBeGreaterThan(INSTANCES * MATRIX * MATRIX * 2);
    } finally {
      spy.mockRestore();
    }
  });
});
