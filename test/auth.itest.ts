import { decodeJwt } from 'jose';
import dcmjs from 'dcmjs';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ingestInstance } from '../src/ingest/ingest';
import {
  bearer,
  clientCredentialsToken,
  forgedTokens,
  passwordToken,
  startAuthStack,
  type AuthStack,
} from './helpers/auth';
import { resetStack, SAMPLES } from './helpers/gateway';

/**
 * Per-project access with Keycloak-shaped tokens, share links and the audit trail, against the in-process
 * Keycloak-compatible issuer (realm file keycloak/realm-export.json) and a real stack.
 *
 * Projects: A = `demo` (erin reads it, bob contributes), B = `lung-study` (alice curates it, dave administers it).
 * carol holds the realm role `aperture-admin`. Project B holds two studies (B1, B2) so that a share link for one can
 * be pointed at the other.
 */

interface Uids {
  study: string;
  series: string;
  instance: string;
}

/** What a route family needs to build its URL. */
interface Target extends Uids {
  project: string;
}

/** Where a route family lives: below a DICOMweb root, below a WADO-URI root, or at an absolute API path. */
type RootKind = 'dicomweb' | 'wado-uri' | 'api';

/**
 * The route families of the gateway, one row each. `path` is appended to the root of its kind (absolute for `api`).
 * `uidScoped` rows address one study or a part of it and join the cross-project matrix. Add a row when a route
 * family lands: every row is also requested with a valid token and must answer 2xx, so a row for a route that does
 * not exist fails instead of passing vacuously.
 */
interface RouteFamily {
  family: string;
  kind: RootKind;
  path: (t: Target) => string;
  accept?: string;
  uidScoped: boolean;
}

const inst = (t: Uids) => `/studies/${t.study}/series/${t.series}/instances/${t.instance}`;
const DICOM_MULTIPART = 'multipart/related; type="application/dicom"';
const OCTETS_MULTIPART = 'multipart/related; type="application/octet-stream"';

const ROUTES: RouteFamily[] = [
  { family: 'QIDO search for studies', kind: 'dicomweb', path: () => '/studies', uidScoped: false },
  { family: 'QIDO search for series', kind: 'dicomweb', path: () => '/series', uidScoped: false },
  { family: 'QIDO search for instances', kind: 'dicomweb', path: () => '/instances', uidScoped: false },
  {
    family: 'QIDO series of a study',
    kind: 'dicomweb',
    path: (t) => `/studies/${t.study}/series`,
    uidScoped: true,
  },
  {
    family: 'QIDO instances of a series',
    kind: 'dicomweb',
    path: (t) => `/studies/${t.study}/series/${t.series}/instances`,
    uidScoped: true,
  },
  {
    family: 'QIDO instances of a study',
    kind: 'dicomweb',
    path: (t) => `/studies/${t.study}/instances`,
    uidScoped: true,
  },
  {
    family: 'WADO retrieve study',
    kind: 'dicomweb',
    path: (t) => `/studies/${t.study}`,
    accept: DICOM_MULTIPART,
    uidScoped: true,
  },
  {
    family: 'WADO retrieve series',
    kind: 'dicomweb',
    path: (t) => `/studies/${t.study}/series/${t.series}`,
    accept: DICOM_MULTIPART,
    uidScoped: true,
  },
  {
    family: 'WADO retrieve instance',
    kind: 'dicomweb',
    path: inst,
    accept: DICOM_MULTIPART,
    uidScoped: true,
  },
  {
    family: 'study metadata',
    kind: 'dicomweb',
    path: (t) => `/studies/${t.study}/metadata`,
    uidScoped: true,
  },
  {
    family: 'series metadata',
    kind: 'dicomweb',
    path: (t) => `/studies/${t.study}/series/${t.series}/metadata`,
    uidScoped: true,
  },
  { family: 'instance metadata', kind: 'dicomweb', path: (t) => `${inst(t)}/metadata`, uidScoped: true },
  {
    family: 'frames',
    kind: 'dicomweb',
    path: (t) => `${inst(t)}/frames/1`,
    accept: OCTETS_MULTIPART,
    uidScoped: true,
  },
  {
    family: 'bulk data',
    kind: 'dicomweb',
    path: (t) => `${inst(t)}/bulk/7FE00010`,
    accept: OCTETS_MULTIPART,
    uidScoped: true,
  },
  {
    family: 'rendered instance',
    kind: 'dicomweb',
    path: (t) => `${inst(t)}/rendered`,
    accept: 'image/jpeg',
    uidScoped: true,
  },
  {
    family: 'rendered frame',
    kind: 'dicomweb',
    path: (t) => `${inst(t)}/frames/1/rendered`,
    accept: 'image/png',
    uidScoped: true,
  },
  {
    family: 'study thumbnail',
    kind: 'dicomweb',
    path: (t) => `/studies/${t.study}/thumbnail`,
    accept: 'image/jpeg',
    uidScoped: true,
  },
  {
    family: 'series thumbnail',
    kind: 'dicomweb',
    path: (t) => `/studies/${t.study}/series/${t.series}/thumbnail`,
    accept: 'image/jpeg',
    uidScoped: true,
  },
  {
    family: 'instance thumbnail',
    kind: 'dicomweb',
    path: (t) => `${inst(t)}/thumbnail`,
    accept: 'image/jpeg',
    uidScoped: true,
  },
  {
    family: 'WADO-URI',
    kind: 'wado-uri',
    path: (t) => `?requestType=WADO&studyUID=${t.study}&seriesUID=${t.series}&objectUID=${t.instance}`,
    uidScoped: true,
  },
  { family: 'projects API', kind: 'api', path: (t) => `/api/projects/${t.project}`, uidScoped: false },
  { family: 'routing API', kind: 'api', path: (t) => `/api/projects/${t.project}/routing`, uidScoped: false },
  {
    family: 'share links API',
    kind: 'api',
    path: (t) => `/api/projects/${t.project}/shares`,
    uidScoped: false,
  },
  { family: 'audit API', kind: 'api', path: (t) => `/api/projects/${t.project}/audit`, uidScoped: false },
];

/** The root of a route family: of one project, the union (no project), or a share link (DICOMweb only). */
/** The Accept header a route family asks for, if any. */
function acceptOf(route: RouteFamily): Record<string, string> {
  return route.accept ? { accept: route.accept } : {};
}

/** '2xx' for any success, else the status itself: lets one assertion name the row that failed. */
function statusClass(status: number): string | number {
  return status >= 200 && status < 300 ? '2xx' : status;
}

function rootOf(kind: RootKind, where: { project?: string; share?: string } = {}): string {
  if (kind === 'api') return '';
  if (kind === 'wado-uri') return where.project ? `/projects/${where.project}/wado` : '/wado';
  if (where.share) return `/share/${where.share}/dicom-web`;
  return where.project ? `/projects/${where.project}/dicom-web` : '/dicom-web';
}

jest.setTimeout(120_000);
const JWKS_COOLDOWN_MS = 8000;

const A = 'demo';
const B = 'lung-study';

function sample(rel: string): Buffer {
  return readFileSync(join(SAMPLES, rel));
}

/** A copy of a Part-10 file under a new SOP Instance UID (study and series kept), with attributes replaced. */
function withNewSop(bytes: Buffer, changes: Record<string, unknown[]>): Buffer {
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) as ArrayBuffer;
  const data = dcmjs.data.DicomMessage.readFile(ab);
  const sop = dcmjs.data.DicomMetaDictionary.uid();
  data.dict['00080018'].Value = [sop];
  data.meta['00020003'].Value = [sop];
  for (const [tag, value] of Object.entries(changes)) data.dict[tag].Value = value;
  return Buffer.from(data.write());
}

function readSop(bytes: Buffer): string {
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) as ArrayBuffer;
  return String(dcmjs.data.DicomMessage.readFile(ab).dict['00080018'].Value?.[0]);
}

describe('per-project access with Keycloak tokens', () => {
  let stack: AuthStack;
  let url: string;
  const tokens: Record<string, string> = {};
  let a: Uids;
  let b1: Uids;
  let b2: Uids;

  const get = (path: string, token?: string, headers: Record<string, string> = {}) =>
    fetch(`${url}${path}`, { headers: token ? bearer(token, headers) : headers });

  const seed = async (project: string, files: string[]): Promise<Uids> => {
    let uids: Uids | undefined;
    for (const f of files) {
      const out = await ingestInstance(stack.gw.services, sample(f), [project], 'stow');
      if (!out.ok) throw new Error(`seeding ${f} failed: ${out.message}`);
      uids ??= {
        study: out.parsed.studyInstanceUid,
        series: out.parsed.seriesInstanceUid,
        instance: out.parsed.sopInstanceUid,
      };
    }
    return uids!;
  };

  beforeAll(async () => {
    await resetStack();
    // A short cooldown so the rotation scenario can show both sides of it within a test.
    // Long enough that a loaded CI machine still makes the "inside the cooldown" request inside it.
    stack = await startAuthStack({ OIDC_JWKS_COOLDOWN_MS: String(JWKS_COOLDOWN_MS) });
    url = stack.gw.url;
    for (const user of ['alice', 'bob', 'carol', 'dave', 'erin'])
      tokens[user] = await passwordToken(stack.issuer, user);
    tokens.scripts = await clientCredentialsToken(stack.issuer);
    for (const id of [A, B]) {
      const res = await fetch(`${url}/api/projects`, {
        method: 'POST',
        headers: bearer(tokens.carol, { 'content-type': 'application/json' }),
        body: JSON.stringify({ id, name: id }),
      });
      expect(res.status).toBe(201);
    }
    a = await seed(A, ['hierarchy/77654033/CT2/17106', 'hierarchy/77654033/CT2/17136']);
    b1 = await seed(B, ['hierarchy/98892001/CT2N/6293', 'hierarchy/98892001/CT2N/6924']);
    b2 = await seed(B, ['hierarchy/98892003/MR700/4467']);
  });
  afterAll(async () => stack?.close());

  describe('token verification', () => {
    it('accepts tokens from the password and client-credentials grants and maps the service account', async () => {
      const res = await get('/api/projects', tokens.erin);
      expect(res.status).toBe(200);
      expect(((await res.json()) as Array<{ id: string }>).map((p) => p.id)).toEqual([A]);
      const svc = await get('/api/projects', tokens.scripts);
      expect(svc.status).toBe(200);
      expect(((await svc.json()) as Array<{ id: string }>).map((p) => p.id).sort()).toEqual([A, B]);
    });

    it('answers a request without a token 401 with the bare Bearer challenge (RFC 6750 §3.1)', async () => {
      const res = await get('/dicom-web/studies');
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer realm="aperture"');
    });

    it('refuses a refresh token used as an access token', async () => {
      const res = await fetch(`${stack.issuer.issuer}/protocol/openid-connect/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'password',
          client_id: 'aperture-viewer',
          username: 'erin',
          password: 'erin-demo',
        }),
      });
      const { refresh_token } = (await res.json()) as { refresh_token: string };
      const r = await get('/api/projects', refresh_token);
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate')).toContain('error="invalid_token"');
    });

    describe.each(ROUTES.map((r) => [r.family, r] as const))('%s', (_family, route) => {
      let forged: Record<string, string>;
      let target: string;
      beforeAll(async () => {
        forged = await forgedTokens(stack.issuer, 'carol');
        target = `${rootOf(route.kind, { project: B })}${route.path({ ...b1, project: B })}`;
      });

      it('answers a valid token (the route exists)', async () => {
        const res = await get(target, tokens.carol, acceptOf(route));
        expect(res.status).toBeGreaterThanOrEqual(200);
        expect(res.status).toBeLessThan(300);
        await res.arrayBuffer();
      });

      it('answers 401 invalid_token for every defective token', async () => {
        for (const [defect, token] of Object.entries(forged)) {
          const res = await get(target, token);
          await res.arrayBuffer();
          expect([defect, res.status]).toEqual([defect, 401]);
          expect([defect, res.headers.get('www-authenticate')]).toEqual([
            defect,
            expect.stringMatching(
              /^Bearer realm="aperture", error="invalid_token", error_description="[^"]+"$/,
            ),
          ]);
        }
      });
    });

    it('trusts a rotated-in key once the JWKS cooldown has passed, and keeps trusting the old one', async () => {
      const oldToken = await stack.issuer.userToken('erin');
      const forged = await forgedTokens(stack.issuer, 'erin');
      // The tests above sent tokens with unknown kids too; the refetch one of them caused may be almost a cooldown
      // old, and a rotation inside its tail would be trusted at once. Let any such cooldown run out first, so that
      // the refetch below is the one that starts the window the rest of the test relies on.
      await new Promise((r) => setTimeout(r, JWKS_COOLDOWN_MS + 100));
      // An unknown kid makes the gateway refetch the JWKS (no key there matches it: still 401)...
      expect((await get('/api/projects', forged['unknown kid'])).status).toBe(401);
      // ...so a key rotated in right now is inside the cooldown and not trusted yet.
      await stack.issuer.rotateKeys();
      const newToken = await stack.issuer.userToken('erin');
      const early = await get('/api/projects', newToken);
      expect(early.status).toBe(401);
      expect(early.headers.get('www-authenticate')).toContain('unknown signing key');
      await new Promise((r) => setTimeout(r, JWKS_COOLDOWN_MS + 100));
      // Past the cooldown the next unknown kid refetches; on a loaded machine that fetch may time out once, so ask
      // again (at most once per second, for two more cooldowns) rather than take a single answer.
      let late: number;
      for (const deadline = Date.now() + 2 * JWKS_COOLDOWN_MS; ;) {
        late = (await get('/api/projects', newToken)).status;
        if (late === 200 || Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 1000));
      }
      expect(late).toBe(200);
      // Keycloak keeps the previous key published after a rotation; so does the issuer, and tokens signed with it live on.
      expect((await get('/api/projects', oldToken)).status).toBe(200);
    });
  });

  describe('issued-at in the future', () => {
    it('refuses a token issued beyond the clock tolerance in the future with 401 invalid_token; within it, accepts', async () => {
      const now = Math.floor(Date.now() / 1000);
      // A token minted "tomorrow" with a long life would outlive any revocation the issuer records today.
      const future = await stack.issuer.userToken('erin', {
        overrides: { iat: now + 3600, exp: now + 7200 },
      });
      for (const path of ['/api/projects', `/projects/${A}/dicom-web/studies`, '/dicom-web/studies']) {
        const res = await get(path, future);
        await res.arrayBuffer();
        expect([path, res.status]).toEqual([path, 401]);
        expect(res.headers.get('www-authenticate')).toBe(
          'Bearer realm="aperture", error="invalid_token", error_description="token issued in the future"',
        );
      }
      // OIDC_CLOCK_TOLERANCE_S (5 s by default) absorbs ordinary clock skew between issuer and gateway.
      const skewed = await stack.issuer.userToken('erin', { overrides: { iat: now + 2 } });
      expect((await get('/api/projects', skewed)).status).toBe(200);
      const nonNumeric = await stack.issuer.userToken('erin', { overrides: { iat: 'tomorrow' as never } });
      expect((await get('/api/projects', nonNumeric)).status).toBe(401);
    });
  });

  describe('a group naming a project that does not exist', () => {
    const GHOST = 'ghost';
    let ghostAdmin: string;
    let ghostReader: string;
    beforeAll(async () => {
      ghostAdmin = await stack.issuer.userToken('erin', {
        overrides: { groups: ['/projects/demo/reader', `/projects/${GHOST}/admin`] },
      });
      ghostReader = await stack.issuer.userToken('erin', {
        overrides: { groups: ['/projects/demo/reader', `/projects/${GHOST}/reader`] },
      });
    });

    it.each(ROUTES.map((r) => [r.family, r] as const))(
      'answers 404 for %s of that project, to its "admin" and its "reader" alike',
      async (_f, route) => {
        const target = `${rootOf(route.kind, { project: GHOST })}${route.path({ ...a, project: GHOST })}`;
        for (const [who, token] of [
          ['admin', ghostAdmin],
          ['reader', ghostReader],
        ]) {
          const res = await get(target, token, acceptOf(route));
          await res.arrayBuffer();
          expect([who, target, res.status]).toEqual([who, target, 404]);
        }
      },
    );

    it('answers 404 to writes under it too (routing rules, share links, STOW), and shows it nowhere', async () => {
      const json = (method: string, path: string, body: unknown) =>
        fetch(`${url}${path}`, {
          method,
          headers: bearer(ghostAdmin, { 'content-type': 'application/json' }),
          body: JSON.stringify(body),
        });
      const writes = [
        await json('POST', `/api/projects/${GHOST}/routing`, { kind: 'called_aet', value: 'GHOST' }),
        await json('POST', `/api/projects/${GHOST}/shares`, { studyUid: a.study }),
        await fetch(`${url}/api/projects/${GHOST}/shares/1`, {
          method: 'DELETE',
          headers: bearer(ghostAdmin),
        }),
        await fetch(`${url}/projects/${GHOST}/dicom-web/studies`, {
          method: 'POST',
          headers: bearer(ghostAdmin, {
            'content-type': 'multipart/related; type="application/dicom"; boundary=x',
          }),
          body: '--x--\r\n',
        }),
      ];
      // A reader of it learns no more than its admin: 404, not the 403 a reader of an existing project gets.
      for (const method of ['POST', 'DELETE']) {
        writes.push(
          await fetch(`${url}/api/projects/${GHOST}/routing${method === 'DELETE' ? '/1' : ''}`, {
            method,
            headers: bearer(ghostReader, { 'content-type': 'application/json' }),
            body: method === 'POST' ? JSON.stringify({ kind: 'called_aet', value: 'GHOST' }) : undefined,
          }),
        );
      }
      writes.push(
        await fetch(`${url}/projects/${GHOST}/dicom-web/studies`, {
          method: 'POST',
          headers: bearer(ghostReader, {
            'content-type': 'multipart/related; type="application/dicom"; boundary=x',
          }),
          body: '--x--\r\n',
        }),
      );
      for (const res of writes) {
        await res.arrayBuffer();
        expect([res.url, res.status]).toEqual([res.url, 404]);
      }
      const list = await get('/api/projects', ghostAdmin);
      expect(((await list.json()) as Array<{ id: string }>).map((p) => p.id)).toEqual([A]);
      // The union root still answers with the projects that exist.
      expect((await get('/dicom-web/studies', ghostAdmin)).status).toBe(200);
    });
  });

  describe('cross-project isolation', () => {
    const ROOTS = [
      ['its own project root', { project: A }],
      ["the other project's root", { project: B }],
      ['the union root', {}],
    ] as const;
    const scoped = ROUTES.filter((r) => r.uidScoped);

    it.each(scoped.map((r) => [r.family, r] as const))(
      "a reader of A asking for B's study by UID (%s) gets 404 at every root, while B's admin gets it",
      async (_f, route) => {
        const headers: Record<string, string> = route.accept ? { accept: route.accept } : {};
        for (const [label, where] of ROOTS) {
          const res = await get(
            `${rootOf(route.kind, where)}${route.path({ ...b1, project: B })}`,
            tokens.erin,
            headers,
          );
          await res.arrayBuffer();
          expect([label, res.status]).toEqual([label, 404]);
        }
        const control = await get(
          `${rootOf(route.kind, { project: B })}${route.path({ ...b1, project: B })}`,
          tokens.dave,
          headers,
        );
        await control.arrayBuffer();
        expect(control.status).toBeGreaterThanOrEqual(200);
        expect(control.status).toBeLessThan(300);
      },
    );

    it("never shows B's studies in A's QIDO results, whatever the filter", async () => {
      const queries = [
        '/studies',
        `/studies?StudyInstanceUID=${b1.study}`,
        `/series?StudyInstanceUID=${b1.study}`,
        `/instances?StudyInstanceUID=${b1.study}`,
        `/instances?SOPInstanceUID=${b1.instance}`,
        '/studies?PatientName=Doe*&fuzzymatching=true',
        '/series?limit=1000',
        '/instances?limit=1000',
      ];
      let sawA = false;
      for (const root of [`/projects/${A}/dicom-web`, '/dicom-web']) {
        for (const q of queries) {
          const res = await get(`${root}${q}`, tokens.erin);
          expect([q, res.status]).toEqual([q, 200]);
          const text = await res.text();
          for (const uid of [b1.study, b2.study, b1.series, b1.instance])
            expect([q, text.includes(uid)]).toEqual([q, false]);
          if (text.includes(a.study)) sawA = true;
        }
      }
      expect(sawA).toBe(true);
    });
  });

  describe('STOW by a contributor', () => {
    const post = (root: string, token: string | undefined, part: Buffer) => {
      const boundary = 'aperture-auth-test';
      const body = Buffer.concat([
        Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`),
        part,
        Buffer.from(`\r\n--${boundary}--\r\n`),
      ]);
      const headers: Record<string, string> = {
        'content-type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
        accept: 'application/dicom+json',
      };
      return fetch(`${url}${root}/studies`, {
        method: 'POST',
        headers: token ? bearer(token, headers) : headers,
        body,
      });
    };
    let intruder: string;
    let intruderBytes: Buffer;

    beforeAll(() => {
      // An object claiming B1's study and series, as anyone who once saw B1's UIDs could write.
      intruderBytes = withNewSop(sample('hierarchy/98892001/CT2N/6293'), {
        '00100010': ['Intruder^Bob'],
        '00100020': ['BOB-1'],
      });
      intruder = readSop(intruderBytes);
    });

    it('needs the contributor role in the project, and a project root', async () => {
      expect((await post(`/projects/${A}/dicom-web`, tokens.erin, intruderBytes)).status).toBe(403);
      expect((await post(`/projects/${B}/dicom-web`, tokens.bob, intruderBytes)).status).toBe(404);
      expect((await post(`/projects/${A}/dicom-web`, undefined, intruderBytes)).status).toBe(401);
    });

    it("stores into A an object with B's study UIDs without granting any of B's data", async () => {
      const res = await post(`/projects/${A}/dicom-web`, tokens.bob, intruderBytes);
      expect(res.status).toBe(200);
      await res.arrayBuffer();

      for (const root of [`/projects/${A}/dicom-web`, '/dicom-web']) {
        // The study now "exists" for bob, but holds only what bob stored: one series, one instance, bob's attributes.
        const series = (await (await get(`${root}/studies/${b1.study}/series`, tokens.bob)).json()) as Array<
          Record<string, { Value?: unknown[] }>
        >;
        expect(series.map((x) => x['00201209']?.Value?.[0])).toEqual([1]);
        const studies = await (await get(`${root}/studies?StudyInstanceUID=${b1.study}`, tokens.bob)).text();
        expect(studies).toContain('BOB-1');
        expect(studies).not.toMatch(/Doe\^Peter|98892001/);

        const metadata = await get(`${root}/studies/${b1.study}/metadata`, tokens.bob);
        expect(metadata.status).toBe(200);
        const sops = ((await metadata.json()) as Array<Record<string, { Value: string[] }>>).map(
          (d) => d['00080018'].Value[0],
        );
        expect(sops).toEqual([intruder]);

        for (const route of ROUTES.filter(
          (r) => r.uidScoped && r.path({ ...b1, project: A }).includes(b1.instance),
        )) {
          const r = await get(
            `${rootOf(route.kind, root === '/dicom-web' ? {} : { project: A })}${route.path({ ...b1, project: A })}`,
            tokens.bob,
            acceptOf(route),
          );
          await r.arrayBuffer();
          expect([route.family, r.status]).toEqual([route.family, 404]);
        }
      }
      // B is untouched: its study still has its own two instances and not bob's.
      const bSide = (await (
        await get(`/projects/${B}/dicom-web/studies/${b1.study}/instances`, tokens.dave)
      ).json()) as Array<Record<string, { Value: string[] }>>;
      expect(bSide.map((d) => d['00080018'].Value[0])).toContain(b1.instance);
      expect(bSide.map((d) => d['00080018'].Value[0])).not.toContain(intruder);
      expect(bSide).toHaveLength(2);
    });

    it('refuses STOW on the read-only union root', async () => {
      const union = await post('/dicom-web', tokens.bob, intruderBytes);
      expect([404, 405]).toContain(union.status);
    });
  });

  describe('share links', () => {
    let share: { id: string; token: string; dicomwebUrl: string };

    beforeAll(async () => {
      const res = await fetch(`${url}/api/projects/${B}/shares`, {
        method: 'POST',
        headers: bearer(tokens.alice, { 'content-type': 'application/json' }),
        body: JSON.stringify({ studyUid: b1.study, expiresIn: '1h' }),
      });
      expect(res.status).toBe(201);
      share = (await res.json()) as typeof share;
    });

    it('gives a token once, with a prefix, and lists links without tokens', async () => {
      expect(share.token).toMatch(/^apsh_[A-Za-z0-9_-]{43}$/);
      expect(share.dicomwebUrl).toBe(`${url}/share/${share.token}/dicom-web`);
      const list = await get(`/api/projects/${B}/shares`, tokens.alice);
      expect(list.status).toBe(200);
      const text = await list.text();
      expect(text).not.toContain(share.token);
      expect(JSON.parse(text)).toEqual([
        expect.objectContaining({ id: share.id, studyUid: b1.study, projectId: B, status: 'active' }),
      ]);
    });

    it('lets only curators create links, and only for studies the project holds', async () => {
      const post = (project: string, token: string, body: unknown) =>
        fetch(`${url}/api/projects/${project}/shares`, {
          method: 'POST',
          headers: bearer(token, { 'content-type': 'application/json' }),
          body: JSON.stringify(body),
        });
      expect((await post(A, tokens.bob, { studyUid: a.study, expiresIn: 60 })).status).toBe(403);
      expect((await post(B, tokens.erin, { studyUid: b1.study, expiresIn: 60 })).status).toBe(404);
      expect((await post(B, tokens.alice, { studyUid: a.study, expiresIn: 60 })).status).toBe(404);
      expect((await post(B, tokens.alice, { seriesUid: a.series, expiresIn: 60 })).status).toBe(404);
      expect((await post(B, tokens.alice, { studyUid: b1.study })).status).toBe(400);
    });

    it('reads the shared study through the path and as a Bearer token, and nothing else', async () => {
      const viaPath = await get(`/share/${share.token}/dicom-web/studies`);
      expect(viaPath.status).toBe(200);
      const studies = (await viaPath.json()) as Array<Record<string, { Value: string[] }>>;
      expect(studies.map((s) => s['0020000D'].Value[0])).toEqual([b1.study]);

      const viaBearer = await get(`/dicom-web/studies/${b1.study}/series`, share.token);
      expect(viaBearer.status).toBe(200);

      for (const route of ROUTES.filter((r) => r.uidScoped)) {
        const headers: Record<string, string> = route.accept ? { accept: route.accept } : {};
        const attempts: Array<[string, string | undefined]> = [[`${rootOf(route.kind)}`, share.token]];
        if (route.kind === 'dicomweb') attempts.push([rootOf(route.kind, { share: share.token }), undefined]);
        for (const [root, bearerToken] of attempts) {
          // The shared study answers; the other study of the same project and a study of another project do not.
          const own = await get(`${root}${route.path({ ...b1, project: B })}`, bearerToken, headers);
          await own.arrayBuffer();
          expect([route.family, statusClass(own.status)]).toEqual([route.family, '2xx']);
          for (const other of [b2, a]) {
            const res = await get(`${root}${route.path({ ...other, project: B })}`, bearerToken, headers);
            await res.arrayBuffer();
            expect([route.family, res.status]).toEqual([route.family, 404]);
          }
        }
      }
      // No roles: the API sees nothing.
      expect((await get(`/api/projects/${B}/shares`, share.token)).status).toBe(404);
    });

    it('is read-only: writes through a share link answer 405', async () => {
      const res = await fetch(`${url}/share/${share.token}/dicom-web/studies`, {
        method: 'POST',
        headers: { 'content-type': 'multipart/related; type="application/dicom"; boundary=x' },
        body: '--x--',
      });
      expect(res.status).toBe(405);
      expect(res.headers.get('allow')).toBe('GET, HEAD');
      // OPTIONS says the same: the shared route table's POST is not offered there (issue 12, deviation 6).
      const options = await fetch(`${url}/share/${share.token}/dicom-web/studies`, { method: 'OPTIONS' });
      expect(options.status).toBe(200);
      expect(options.headers.get('allow')).toBe('GET, HEAD');
    });

    it('stops working when revoked or expired', async () => {
      const res = await fetch(`${url}/api/projects/${B}/shares`, {
        method: 'POST',
        headers: bearer(tokens.alice, { 'content-type': 'application/json' }),
        body: JSON.stringify({ seriesUid: b2.series, expiresIn: 60 }),
      });
      const second = (await res.json()) as { id: string; token: string };
      expect((await get(`/share/${second.token}/dicom-web/studies`)).status).toBe(200);

      const del = await fetch(`${url}/api/projects/${B}/shares/${second.id}`, {
        method: 'DELETE',
        headers: bearer(tokens.alice),
      });
      expect(del.status).toBe(204);
      const revoked = await get(`/share/${second.token}/dicom-web/studies`);
      expect(revoked.status).toBe(401);
      expect(revoked.headers.get('www-authenticate')).toContain('error="invalid_token"');

      await stack.gw.services.db.query(
        "UPDATE share_links SET expires_at = now() - interval '1 second' WHERE id = $1",
        [share.id],
      );
      expect((await get(`/share/${share.token}/dicom-web/studies`)).status).toBe(401);
      const list = (await (await get(`/api/projects/${B}/shares`, tokens.alice)).json()) as Array<{
        id: string;
        status: string;
      }>;
      expect(Object.fromEntries(list.map((l) => [l.id, l.status]))).toEqual({
        [share.id]: 'expired',
        [second.id]: 'revoked',
      });
    });
  });

  describe('audit trail', () => {
    const audit = async (token: string, query: string, project?: string) => {
      const res = await get(
        project ? `/api/projects/${project}/audit?${query}` : `/api/audit?${query}`,
        token,
      );
      expect(res.status).toBe(200);
      return (await res.json()) as Array<Record<string, unknown>>;
    };

    it("records each cross-project attempt with the caller's subject, the UID and the 404", async () => {
      const erinSub = decodeJwt(tokens.erin).sub!;
      const rows = await audit(tokens.carol, `principal=${erinSub}&outcome=404&study=${b1.study}&limit=1000`);
      const scoped = ROUTES.filter((r) => r.uidScoped).length;
      expect(rows.length).toBeGreaterThanOrEqual(scoped * 3);
      expect(rows.every((r) => r.principal_kind === 'user' && r.method === 'GET')).toBe(true);
      expect(new Set(rows.map((r) => r.project_id))).toEqual(new Set([A, B, null]));
      expect(new Set(rows.map((r) => r.route))).toContain(
        '/projects/:project/dicom-web/studies/:study/series',
      );
      expect(JSON.stringify(rows)).not.toMatch(/erin|Erin|Doe/);
    });

    it('records refused tokens (401) under the project they aimed at, for its admin to see', async () => {
      const rows = await audit(tokens.dave, 'outcome=401&limit=1000', B);
      expect(rows.length).toBeGreaterThanOrEqual(ROUTES.length);
      expect(rows.every((r) => r.principal === 'anonymous' && r.project_id === B)).toBe(true);
    });

    it('records share-link reads under the share id and the bytes actually sent', async () => {
      const res = await fetch(`${url}/api/projects/${B}/shares`, {
        method: 'POST',
        headers: bearer(tokens.alice, { 'content-type': 'application/json' }),
        body: JSON.stringify({ studyUid: b1.study, expiresIn: 600 }),
      });
      const link = (await res.json()) as { id: string; token: string };
      const body = await (
        await get(`/share/${link.token}/dicom-web/studies/${b1.study}/instances`)
      ).arrayBuffer();
      const rows = await audit(tokens.dave, `principal=${link.id}`, B);
      expect(rows).toEqual([
        expect.objectContaining({
          principal_kind: 'share',
          action: 'qido.instances',
          study_uid: b1.study,
          outcome: 200,
          bytes: String(body.byteLength),
          route: '/share/:shareToken/dicom-web/studies/:study/instances',
        }),
      ]);
      expect(JSON.stringify(rows)).not.toContain(link.token);
    });

    it('records the bytes actually sent for a streamed retrieval', async () => {
      const res = await get(`/projects/${B}/dicom-web${inst(b1)}`, tokens.dave, { accept: DICOM_MULTIPART });
      expect(res.status).toBe(200);
      const received = (await res.arrayBuffer()).byteLength;
      expect(received).toBeGreaterThan(1000);
      const daveSub = decodeJwt(tokens.dave).sub!;
      const rows = await audit(tokens.dave, `principal=${daveSub}&study=${b1.study}&outcome=200&limit=1`, B);
      expect(rows).toEqual([
        expect.objectContaining({
          route: '/projects/:project/dicom-web/studies/:study/series/:series/instances/:instance',
          sop_instance_uid: b1.instance,
          bytes: String(received),
        }),
      ]);
    });

    it('lets project admins read their project only, filter it and export it as CSV', async () => {
      expect((await get(`/api/projects/${B}/audit`, tokens.alice)).status).toBe(403);
      expect((await get(`/api/projects/${B}/audit`, tokens.erin)).status).toBe(404);
      expect((await get(`/api/projects/${A}/audit`, tokens.dave)).status).toBe(404);
      expect((await get('/api/audit', tokens.dave)).status).toBe(403);

      const creates = await audit(tokens.dave, 'action=share.*', B);
      expect(creates.length).toBeGreaterThan(0);
      expect(creates.every((r) => String(r.action).startsWith('share.') && r.project_id === B)).toBe(true);

      const csv = await get(`/api/projects/${B}/audit?format=csv&outcome=4xx`, tokens.dave);
      expect(csv.status).toBe(200);
      expect(csv.headers.get('content-type')).toMatch(/^text\/csv/);
      const lines = (await csv.text()).trim().split('\r\n');
      expect(lines[0]).toBe(
        'id,at,principal,principal_kind,action,project_id,study_uid,series_uid,sop_instance_uid,outcome,bytes,client_ip,method,route,detail',
      );
      expect(lines.length).toBeGreaterThan(1);
      expect(lines.slice(1).every((l) => /,4\d\d,/.test(l))).toBe(true);
    });
  });
});
