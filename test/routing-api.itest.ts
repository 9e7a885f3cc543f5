import type { Context } from 'koa';
import type { Principal, Role } from '../src/auth/access';
import { UnauthorizedError } from '../src/errors';
import { ensureProject } from '../src/index-db/projects';
import { resetStack, startGateway, type TestGateway } from './helpers/gateway';

/** Principals as authentication would produce them from tokens; picked per request by a test header. */
const person = (id: string, roles: Record<string, Role[]>, globalAdmin = false): Principal => ({
  id,
  kind: 'user',
  globalAdmin,
  projects: new Map(Object.entries(roles).map(([p, r]) => [p, new Set(r)])),
});
const PRINCIPALS: Record<string, Principal> = {
  'lung-admin': person('lung-admin', { 'lung-study': ['admin'] }),
  'lung-reader': person('lung-reader', { 'lung-study': ['reader'] }),
  outsider: person('outsider', {}),
  root: person('root', {}, true),
};

describe('routing rules API and quarantine permissions', () => {
  let gw: TestGateway;
  const call = async (who: string, method: string, path: string, body?: unknown) => {
    const headers: Record<string, string> = { 'x-test-principal': who };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${gw.url}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return {
      status: res.status,
      body: text ? JSON.parse(text) : undefined,
      location: res.headers.get('location'),
    };
  };

  beforeAll(async () => {
    await resetStack();
    gw = await startGateway();
    // The app calls services.authenticate per request; the test decides who is calling.
    gw.services.authenticate = async (ctx: Context) => {
      const p = PRINCIPALS[ctx.get('x-test-principal')];
      if (!p) throw new UnauthorizedError();
      return p;
    };
    await ensureProject(gw.services.db, { id: 'lung-study', name: 'Lung' });
    await ensureProject(gw.services.db, { id: 'neuro', name: 'Neuro' });
  }, 120_000);
  afterAll(async () => gw?.close());

  it('lets a project administrator create, list, change and delete the project’s rules', async () => {
    const created = await call('lung-admin', 'POST', '/api/projects/lung-study/routing', {
      kind: 'called_aet',
      value: 'LUNGSTUDY',
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      project_id: 'lung-study',
      kind: 'called_aet',
      match: 'equals',
      enabled: true,
    });
    expect(created.location).toBe(`/api/projects/lung-study/routing/${created.body.id}`);
    const second = await call('lung-admin', 'POST', '/api/projects/lung-study/routing', {
      kind: 'attribute',
      attribute: 'PatientComments',
      match: 'contains',
      value: 'Project: lung',
    });
    expect(second.body.position).toBeGreaterThan(created.body.position);

    const moved = await call('lung-admin', 'PUT', `/api/projects/lung-study/routing/${second.body.id}`, {
      kind: 'attribute',
      attribute: 'PatientComments',
      match: 'regex',
      value: 'Project:\\s*lung\\b',
      position: 0,
    });
    expect(moved.status).toBe(200);
    expect(moved.body).toMatchObject({ position: 0, match: 'regex' });
    const list = await call('lung-admin', 'GET', '/api/projects/lung-study/routing');
    expect(list.body.map((r: { id: string }) => r.id)).toEqual([second.body.id, created.body.id]);

    expect(
      (await call('lung-admin', 'DELETE', `/api/projects/lung-study/routing/${second.body.id}`)).status,
    ).toBe(204);
    expect(
      (await call('lung-admin', 'GET', `/api/projects/lung-study/routing/${second.body.id}`)).status,
    ).toBe(404);
  });

  it('answers 403 to a reader of the project and 404 to someone outside it', async () => {
    expect((await call('lung-reader', 'GET', '/api/projects/lung-study/routing')).status).toBe(403);
    const rule = { kind: 'called_aet', value: 'X' };
    expect((await call('lung-reader', 'POST', '/api/projects/lung-study/routing', rule)).status).toBe(403);
    expect((await call('outsider', 'GET', '/api/projects/lung-study/routing')).status).toBe(404);
    expect((await call('lung-admin', 'GET', '/api/projects/neuro/routing')).status).toBe(404);
    expect((await call('root', 'GET', '/api/projects/no-such-project/routing')).status).toBe(404);
  });

  it('refuses invalid rules with 400 and another project’s rule with 404', async () => {
    const bad = [
      { kind: 'called_aet', match: 'regex', value: '(' },
      { kind: 'attribute', attribute: 'NoSuchKeyword', value: 'x' },
      { kind: 'attribute', value: 'x' },
      { kind: 'teleport', value: 'x' },
      { kind: 'called_aet', value: '   ' },
    ];
    for (const body of bad) {
      expect((await call('lung-admin', 'POST', '/api/projects/lung-study/routing', body)).status).toBe(400);
    }
    const neuroRule = await call('root', 'POST', '/api/projects/neuro/routing', {
      kind: 'called_aet',
      value: 'NEURO',
    });
    expect(neuroRule.status).toBe(201);
    const hijack = await call('lung-admin', 'PUT', `/api/projects/lung-study/routing/${neuroRule.body.id}`, {
      kind: 'called_aet',
      value: 'LUNG2',
    });
    expect(hijack.status).toBe(404);
    expect(
      (await call('lung-admin', 'DELETE', `/api/projects/lung-study/routing/${neuroRule.body.id}`)).status,
    ).toBe(404);
  });

  it('stops a project administrator from claiming another project’s modality; a global administrator may', async () => {
    const claim = { kind: 'called_aet', match: 'prefix', value: 'NEU' };
    const refused = await call('lung-admin', 'POST', '/api/projects/lung-study/routing', claim);
    expect(refused.status).toBe(409);
    expect(JSON.stringify(refused.body)).not.toContain('neuro');
    expect((await call('root', 'POST', '/api/projects/lung-study/routing', claim)).status).toBe(201);
  });

  it('shows the quarantine and its assignment to global administrators only', async () => {
    expect((await call('lung-admin', 'GET', '/api/quarantine')).status).toBe(403);
    expect((await call('lung-admin', 'GET', '/api/quarantine/failures')).status).toBe(403);
    const assign = { studyUid: '1.2.3', project: 'lung-study' };
    expect((await call('lung-admin', 'POST', '/api/quarantine/assign', assign)).status).toBe(403);
    expect((await call('root', 'GET', '/api/quarantine')).body).toEqual({ total: 0, studies: [] });
    expect((await call('root', 'POST', '/api/quarantine/assign', assign)).status).toBe(404);
    expect(
      (await call('root', 'POST', '/api/quarantine/assign', { ...assign, project: 'nope' })).status,
    ).toBe(404);
  });
});
