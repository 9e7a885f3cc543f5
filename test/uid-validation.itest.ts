import { ensureProject } from '../src/index-db/projects';
import { resetStack, startGateway, type TestGateway } from './helpers/gateway';

/*
 * One UID rule on every route family (issue 9): a malformed UID answers 400 with a DICOM-conformant error body that
 * names the parameter, before any lookup, whichever route, root or API it comes through.
 */

jest.setTimeout(300_000);

const MALFORMED: Record<string, string> = {
  'an empty component': '1..2',
  '65 characters': `1.2.${'3'.repeat(61)}`,
  letters: '1.2.abc',
};

const OK = '1.2.3';

interface Case {
  family: string;
  /** The name the error must give for the parameter. */
  parameter: string;
  request(bad: string): { path: string; init?: RequestInit };
}

const json = (body: unknown): RequestInit => ({
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
});
const inst = (st: string, se: string, sop: string) => `/studies/${st}/series/${se}/instances/${sop}`;

const CASES: Case[] = [
  {
    family: 'QIDO study series',
    parameter: '"study"',
    request: (b) => ({ path: `/dicom-web/studies/${b}/series` }),
  },
  {
    family: 'QIDO series instances',
    parameter: '"series"',
    request: (b) => ({ path: `/dicom-web/studies/${OK}/series/${b}/instances` }),
  },
  {
    family: 'QIDO matching key',
    parameter: 'StudyInstanceUID',
    request: (b) => ({ path: `/dicom-web/studies?StudyInstanceUID=${b}` }),
  },
  { family: 'WADO-RS study', parameter: '"study"', request: (b) => ({ path: `/dicom-web/studies/${b}` }) },
  {
    family: 'WADO-RS series',
    parameter: '"series"',
    request: (b) => ({ path: `/dicom-web/studies/${OK}/series/${b}` }),
  },
  {
    family: 'WADO-RS instance',
    parameter: '"instance"',
    request: (b) => ({ path: `/dicom-web${inst(OK, OK, b)}` }),
  },
  {
    family: 'metadata (project root)',
    parameter: '"series"',
    request: (b) => ({ path: `/projects/demo/dicom-web/studies/${OK}/series/${b}/metadata` }),
  },
  {
    family: 'frames',
    parameter: '"instance"',
    request: (b) => ({ path: `/dicom-web${inst(OK, OK, b)}/frames/1` }),
  },
  {
    family: 'rendered',
    parameter: '"study"',
    request: (b) => ({ path: `/dicom-web${inst(b, OK, OK)}/rendered` }),
  },
  {
    family: 'thumbnail',
    parameter: '"series"',
    request: (b) => ({ path: `/dicom-web/studies/${OK}/series/${b}/thumbnail` }),
  },
  {
    family: 'bulk data',
    parameter: '"instance"',
    request: (b) => ({ path: `/dicom-web${inst(OK, OK, b)}/bulk/7FE00010` }),
  },
  {
    family: 'STOW URL',
    parameter: '"study"',
    request: (b) => ({
      path: `/projects/demo/dicom-web/studies/${b}`,
      init: {
        method: 'POST',
        headers: { 'content-type': 'multipart/related; type="application/dicom"' },
        body: '',
      },
    }),
  },
  {
    family: 'share link root',
    parameter: '"study"',
    request: (b) => ({ path: `/share/not-a-token/dicom-web/studies/${b}/metadata` }),
  },
  {
    family: 'WADO-URI',
    parameter: 'objectUID',
    request: (b) => ({ path: `/wado?requestType=WADO&studyUID=${OK}&seriesUID=${OK}&objectUID=${b}` }),
  },
  {
    family: 'API shares',
    parameter: 'studyUid',
    request: (b) => ({ path: '/api/projects/demo/shares', init: json({ studyUid: b, expiresIn: '1h' }) }),
  },
  { family: 'API audit', parameter: 'study', request: (b) => ({ path: `/api/audit?study=${b}` }) },
  {
    family: 'API quarantine',
    parameter: 'seriesUid',
    request: (b) => ({ path: '/api/quarantine/assign', init: json({ project: 'demo', seriesUid: b }) }),
  },
  {
    family: 'API cohorts',
    parameter: 'studies',
    request: (b) => ({
      path: '/api/projects/demo/cohorts',
      init: json({ name: 'c', studies: [b], target: { project: 'demo' } }),
    }),
  },
  {
    family: 'API nodes (bridge retrieve)',
    parameter: 'studies',
    request: (b) => ({
      path: `/api/nodes/${NODE}/retrieve`,
      init: json({ project: 'demo', studies: [OK, b] }),
    }),
  },
  {
    family: 'API pipeline runs',
    parameter: 'series',
    request: (b) => ({
      path: '/api/projects/demo/runs',
      init: json({ pipeline: 'threshold', series: [b] }),
    }),
  },
  {
    family: 'API records (a study reference field)',
    parameter: 'ct:',
    request: (b) => ({
      path: `/api/projects/demo/subjects/${subject}/records/Imaging`,
      init: json({ data: { ct: b } }),
    }),
  },
  {
    family: 'API download links',
    parameter: '"path"',
    request: (b) => ({ path: '/api/download-links', init: json({ path: `/dicom-web/studies/${b}` }) }),
  },
];

/** A remote PACS node for the bridge case (its retrieve checks the body after finding the node). */
const NODE = 'uid-check-node';
/** A research-records subject whose record type has a study reference (x-ref) field. */
let subject = '';

let gw: TestGateway;

beforeAll(async () => {
  await resetStack();
  gw = await startGateway();
  await ensureProject(gw.services.db, { id: 'demo', name: 'Demo' });
  const node = await fetch(`${gw.url}/api/nodes/${NODE}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ aet: 'UIDCHECK', host: '127.0.0.1', port: 1 }),
  });
  if (!node.ok) throw new Error(`could not register the node: ${node.status} ${await node.text()}`);
  const type = await fetch(`${gw.url}/api/projects/demo/record-types/Imaging`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      schema: { type: 'object', properties: { ct: { type: 'string', 'x-ref': 'study' } } },
    }),
  });
  if (!type.ok) throw new Error(`could not define the record type: ${type.status} ${await type.text()}`);
  const made = await fetch(`${gw.url}/api/projects/demo/subjects`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ patient_id: 'UID-CHECK-1', kind: 'phantom' }),
  });
  if (!made.ok) throw new Error(`could not create the subject: ${made.status} ${await made.text()}`);
  subject = ((await made.json()) as { id: string }).id;
});
afterAll(async () => {
  await gw?.close();
});

describe('a malformed UID answers 400 naming the parameter', () => {
  for (const [problem, bad] of Object.entries(MALFORMED)) {
    describe(`${problem} (${bad.length > 20 ? `${bad.slice(0, 12)}…` : bad})`, () => {
      it.each(CASES.map((c) => [c.family, c] as const))('%s', async (_family, c) => {
        const { path, init } = c.request(bad);
        const res = await fetch(gw.url + path, init);
        const body = (await res.json()) as { errors?: Array<{ code: string; message: string }> };
        expect(res.status).toBe(400);
        expect(body.errors?.[0]?.message).toContain(c.parameter);
        // The value itself is never echoed: a malformed "UID" may be anything.
        if (bad.length > 20) expect(body.errors?.[0]?.message).not.toContain(bad);
      });
    });
  }

  it('still answers 404, not 400, for a well-formed UID that is not there', async () => {
    const res = await fetch(`${gw.url}/dicom-web/studies/${OK}/series/${OK}/metadata`);
    expect(res.status).toBe(404);
  });
});
