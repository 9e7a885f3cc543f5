import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Context } from 'koa';
import type { Principal, Role } from '../src/auth/access';
import { UnauthorizedError } from '../src/errors';
import { cstore, syntheticCopies, waitFor } from './helpers/dimse';
import { resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

/*
 * Issue 8, defect 3: an administrator of one project ("rival") must not be able to take the modality traffic another
 * project's rule ("lung-study": called AE title LUNGSTUDY) already claims, whatever kind of rule, match type or
 * position they use. Arrivals go through DCMTK's dcmsend into the real Orthanc and the change-feed indexer.
 */
const person = (id: string, roles: Record<string, Role[]>, globalAdmin = false): Principal => ({
  id,
  kind: 'user',
  globalAdmin,
  projects: new Map(Object.entries(roles).map(([p, r]) => [p, new Set(r)])),
});
const PRINCIPALS: Record<string, Principal> = {
  'lung-admin': person('lung-admin', { 'lung-study': ['admin'] }),
  'rival-admin': person('rival-admin', { rival: ['admin'] }),
  root: person('root', {}, true),
};
const CT = `${SAMPLES}/hierarchy/77654033/CT2/17106`;

describe('routing rules cannot capture another project’s modality traffic', () => {
  let gw: TestGateway;
  let tmp: string;
  let lungRule: string;
  let rivalOld: string;
  let rivalDormant: string;
  let batch = 0;

  const call = async (who: string, method: string, path: string, body?: unknown) => {
    const headers: Record<string, string> = { 'x-test-principal': who };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${gw.url}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined, text };
  };
  const rival = (method: string, path: string, body?: unknown) =>
    call('rival-admin', method, `/api/projects/rival/routing${path}`, body);
  const instancesIn = async (project: string): Promise<string[]> => {
    const r = await gw.services.db.query<{ sop_instance_uid: string }>(
      'SELECT sop_instance_uid FROM project_instances WHERE project_id = $1 ORDER BY 1',
      [project],
    );
    return r.rows.map((x) => x.sop_instance_uid);
  };
  /** Sends two fresh CT instances (a new study) and returns the project they were indexed into. */
  const send = async (calledAet: string, callingAet: string): Promise<string | null> => {
    const copies = syntheticCopies(CT, join(tmp, `batch-${batch++}`), 2);
    await cstore(
      copies.map((c) => c.path),
      { calledAet, callingAet },
    );
    const uids = copies.map((c) => c.sopInstanceUid);
    return waitFor(
      `${uids.length} instances sent to ${calledAet} from ${callingAet} placed`,
      async () => {
        const r = await gw.services.db.query<{ project_id: string | null }>(
          `SELECT project_id FROM project_instances WHERE sop_instance_uid = ANY ($1)
           UNION ALL SELECT NULL FROM quarantine WHERE sop_instance_uid = ANY ($1)`,
          [uids],
        );
        if (r.rows.length < uids.length) return false;
        const projects = [...new Set(r.rows.map((x) => x.project_id))];
        expect(projects).toHaveLength(1);
        return { project: projects[0] };
      },
      60_000,
    ).then((x) => x.project);
  };

  beforeAll(async () => {
    await resetStack();
    tmp = mkdtempSync(join(tmpdir(), 'aperture-capture-'));
    gw = await startGateway({ INDEXER_ENABLED: 'true', INDEXER_POLL_MS: '100' });
    gw.services.authenticate = async (ctx: Context) => {
      const p = PRINCIPALS[ctx.get('x-test-principal')];
      if (!p) throw new UnauthorizedError();
      return p;
    };
    for (const id of ['lung-study', 'rival']) {
      expect((await call('root', 'POST', '/api/projects', { id, name: id })).status).toBe(201);
    }
    // Established before lung-study's rule: one rule of rival's own, and one stored disabled.
    const old = await rival('POST', '', { kind: 'called_aet', value: 'RIVAL' });
    expect(old.status).toBe(201);
    rivalOld = old.body.id;
    const dormant = await rival('POST', '', { kind: 'called_aet', value: 'LUNGSTUDY', enabled: false });
    expect(dormant.status).toBe(201);
    rivalDormant = dormant.body.id;
    const lung = await call('lung-admin', 'POST', '/api/projects/lung-study/routing', {
      kind: 'called_aet',
      value: 'LUNGSTUDY',
    });
    expect(lung.status).toBe(201);
    lungRule = lung.body.id;
  }, 120_000);
  afterAll(async () => {
    await gw?.close();
    rmSync(tmp, { recursive: true, force: true });
  }, 120_000);

  it('refuses rules that provably claim lung-study’s arrivals with 409 naming only the rule they overlap', async () => {
    const claims = [
      { kind: 'called_aet', match: 'regex', value: '^LUNG', position: 0 },
      { kind: 'called_aet', match: 'regex', value: '^[Ll]ung[a-z]+$', position: 0 },
      { kind: 'called_aet', match: 'prefix', value: 'lung', position: 0 },
      { kind: 'called_aet', match: 'contains', value: 'NGST', position: 0 },
      { kind: 'called_aet', match: 'equals', value: 'LungStudy', position: 0 },
    ];
    for (const claim of claims) {
      const res = await rival('POST', '', claim);
      expect([claim, res.status]).toEqual([claim, 409]);
      expect(res.text).toContain(`routing rule ${lungRule}`);
      expect(res.text).not.toContain('lung-study');
    }
  });

  it('refuses catch-all rules of any kind from a project administrator', async () => {
    const catchAlls = [
      { kind: 'attribute', attribute: 'SOPClassUID', match: 'regex', value: '.*', position: 0 },
      { kind: 'calling_aet', match: 'regex', value: '.*', position: 0 },
      { kind: 'called_aet', match: 'regex', value: '.+' },
      { kind: 'source_ip', match: 'regex', value: '^' },
    ];
    for (const rule of catchAlls) {
      const res = await rival('POST', '', rule);
      expect([rule, res.status]).toEqual([rule, 403]);
    }
  });

  it('lets other kinds of rules through, but however they are ordered lung-study keeps its arrivals', async () => {
    const byCaller = await rival('POST', '', { kind: 'calling_aet', value: 'CT_ROOM_9', position: 0 });
    expect(byCaller.status).toBe(201);
    const bySopClass = await rival('POST', '', {
      kind: 'attribute',
      attribute: 'SOPClassUID',
      match: 'regex',
      value: '^1\\.2\\.840\\.10008\\.5\\.1\\.4\\.1\\.1\\.',
      position: 0,
    });
    expect(bySopClass.status).toBe(201);
    // A global administrator may add anything; without a global priority it still comes after lung-study's rule.
    const forced = await call('root', 'POST', '/api/projects/rival/routing', {
      kind: 'called_aet',
      match: 'regex',
      value: '^LUNG',
      position: 0,
    });
    expect(forced.status).toBe(201);

    expect(await send('LUNGSTUDY', 'CT_ROOM_9')).toBe('lung-study');
    expect(forced.body.shadowed_by).toEqual([lungRule]);
    // rival's rules do work on what no other project claims.
    expect(await send('ARCHIVE', 'CT_ROOM_9')).toBe('rival');
    expect(await send('RIVAL', 'MODALITY')).toBe('rival');
  }, 180_000);

  it('re-establishes a rule that is changed or re-enabled, so an old rule cannot be bent onto lung-study', async () => {
    // Both were created before lung-study's rule; a project administrator can neither bend nor wake them.
    const bent = await rival('PUT', `/${rivalOld}`, { kind: 'called_aet', match: 'prefix', value: 'LUNG' });
    expect(bent.status).toBe(409);
    const woken = await rival('PUT', `/${rivalDormant}`, { kind: 'called_aet', value: 'LUNGSTUDY' });
    expect(woken.status).toBe(409);
    expect(woken.text).toContain(`routing rule ${lungRule}`);
    // A global administrator can, but the changed rules count as new: lung-study's rule was there first.
    for (const [id, rule] of [
      [rivalOld, { kind: 'called_aet', match: 'prefix', value: 'LUNG', position: 0 }],
      [rivalDormant, { kind: 'called_aet', value: 'LUNGSTUDY', position: 0 }],
    ] as const) {
      const res = await call('root', 'PUT', `/api/projects/rival/routing/${id}`, rule);
      expect(res.status).toBe(200);
      expect(res.body.shadowed_by).toContain(lungRule);
    }
    expect(await send('LUNGSTUDY', 'CT_ROOM_2')).toBe('lung-study');
    // A position change alone keeps a rule's standing (and needs no new check).
    const moved = await rival('PUT', `/${rivalOld}`, {
      kind: 'called_aet',
      match: 'prefix',
      value: 'LUNG',
      position: 5,
    });
    expect(moved.status).toBe(200);
    expect(moved.body).toMatchObject({ position: 5, shadowed_by: [lungRule] });
    expect(await send('LUNGSTUDY', 'CT_ROOM_5')).toBe('lung-study');
  }, 180_000);

  it('leaves cross-project precedence to global administrators: priority', async () => {
    const refused = await rival('POST', '', { kind: 'called_aet', value: 'RIVAL2', priority: 0 });
    expect(refused.status).toBe(403);
    const rules = (await rival('GET', '')).body as Array<{ id: string; value: string; match: string }>;
    const regex = rules.find((r) => r.match === 'regex' && r.value === '^LUNG')!;
    const raised = await call('root', 'PUT', `/api/projects/rival/routing/${regex.id}`, {
      kind: 'called_aet',
      match: 'regex',
      value: '^LUNG',
      priority: 1,
    });
    expect(raised.status).toBe(200);
    expect(raised.body).toMatchObject({ priority: 1, shadowed_by: [] });
    expect(raised.body.shadows).toContain(lungRule);
    expect(await send('LUNGSTUDY', 'CT_ROOM_3')).toBe('rival');
    // A project administrator changing that rule loses the priority a global administrator gave it.
    const narrowed = await rival('PUT', `/${regex.id}`, { kind: 'called_aet', value: 'RIVAL3' });
    expect(narrowed.status).toBe(200);
    expect(narrowed.body.priority).toBeNull();
    expect(await send('LUNGSTUDY', 'CT_ROOM_4')).toBe('lung-study');
    expect(await instancesIn('lung-study')).toHaveLength(8);
  }, 180_000);
});
