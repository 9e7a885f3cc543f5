import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { decodeJwt } from 'jose';
import { ensureProject } from '../src/index-db/projects';
import { type AuthStack, bearer, startAuthStack } from './helpers/auth';
import { waitFor } from './helpers/dimse';
import { resetStack } from './helpers/gateway';

const run = promisify(execFile);
const ROOT = join(__dirname, '..');

describe('project memberships kept in Aperture', () => {
  let stack: AuthStack;
  let dave: Record<string, string>; // admin of lung-study (Keycloak group)
  let alice: Record<string, string>; // curator of lung-study
  let bob: Record<string, string>; // no role in lung-study (contributor of demo)
  let bobSub: string;

  const api = (path: string, who: Record<string, string>, init: RequestInit = {}) =>
    fetch(`${stack.gw.url}${path}`, { ...init, headers: { ...who, ...(init.headers ?? {}) } });
  const put = (subject: string, body: unknown, who = dave) =>
    api(`/api/projects/lung-study/members/${encodeURIComponent(subject)}`, who, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  const bobReads = async () => (await api('/projects/lung-study/dicom-web/studies', bob)).status;

  beforeAll(async () => {
    await resetStack();
    stack = await startAuthStack();
    await ensureProject(stack.gw.services.db, { id: 'lung-study', name: 'Lung study' });
    dave = bearer(await stack.issuer.userToken('dave'));
    alice = bearer(await stack.issuer.userToken('alice'));
    const bobToken = await stack.issuer.userToken('bob');
    bob = bearer(bobToken);
    bobSub = decodeJwt(bobToken).sub!;
  }, 120_000);
  afterAll(async () => stack?.close());

  it('a grant by username takes effect at once, a revocation too, and both are audited', async () => {
    expect(await bobReads()).toBe(404);
    const granted = await put('bob', { role: 'reader', kind: 'username' });
    expect(granted.status).toBe(201);
    expect(await granted.json()).toMatchObject({
      subject_kind: 'username',
      subject: 'bob',
      role: 'reader',
    });
    expect(await bobReads()).toBe(200);
    // Reader, not contributor: STOW stays closed.
    const stow = await api('/projects/lung-study/dicom-web/studies', bob, {
      method: 'POST',
      headers: { 'content-type': 'multipart/related; type="application/dicom"; boundary=x' },
      body: '--x--\r\n',
    });
    expect(stow.status).toBe(403);

    const revoked = await api('/api/projects/lung-study/members/bob?kind=username', dave, {
      method: 'DELETE',
    });
    expect(revoked.status).toBe(204);
    expect(await bobReads()).toBe(404);

    await waitFor('the audit events', async () => {
      const r = await stack.gw.services.db.query<{ action: string }>(
        "SELECT action FROM audit_events WHERE action LIKE 'member.%' AND project_id = 'lung-study' ORDER BY id",
      );
      return r.rows.map((x) => x.action).join(',') === 'member.put,member.delete';
    });
  });

  it('roles are the union of Keycloak groups and memberships (by token subject)', async () => {
    expect((await put(bobSub, { role: 'admin' })).status).toBe(201);
    expect((await api('/api/projects/lung-study/members', bob)).status).toBe(200);
    // alice keeps her group's curator role and gains nothing she was not granted.
    expect((await put('alice', { role: 'reader', kind: 'username' })).status).toBe(201);
    expect((await api('/api/projects/lung-study/members', alice)).status).toBe(403);
    const list = (await (await api('/api/projects/lung-study/members', dave)).json()) as Array<{
      subject: string;
    }>;
    expect(list.map((m) => m.subject).sort()).toEqual(['alice', bobSub].sort());
    expect((await put(bobSub, { role: 'reader' })).status).toBe(200);
    expect((await api('/api/projects/lung-study/members', bob)).status).toBe(403);
  });

  it('refuses non-admins, unknown roles and unknown projects', async () => {
    expect((await put('erin', { role: 'reader', kind: 'username' }, alice)).status).toBe(403);
    expect((await put('erin', { role: 'owner', kind: 'username' })).status).toBe(400);
    expect((await put('erin', { role: 'reader', kind: 'email' })).status).toBe(400);
    const nope = await api('/api/projects/no-such/members', dave);
    expect(nope.status).toBe(404);
    expect((await api('/api/projects/lung-study/members/nobody', dave, { method: 'DELETE' })).status).toBe(
      404,
    );
  });

  it('the CLI grants and revokes against the database, audited, seen by the gateway within the cache bound', async () => {
    const erin = bearer(await stack.issuer.userToken('erin'));
    const erinReads = async () => (await api('/projects/lung-study/dicom-web/studies', erin)).status;
    expect(await erinReads()).toBe(404);
    const cli = (...args: string[]) =>
      run(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/index.ts'), 'members', ...args], {
        cwd: ROOT,
        env: process.env,
      });
    const out = await cli('grant', 'lung-study', 'erin', 'reader', '--username');
    expect(out.stdout).toMatch(/granted reader in lung-study/);
    // Another process changed it: this gateway sees it within MEMBERSHIP_CACHE_MS (2 s).
    await waitFor('the CLI grant to apply', async () => (await erinReads()) === 200, 5000, 100);
    await cli('revoke', 'lung-study', 'erin', '--username');
    await waitFor('the CLI revocation to apply', async () => (await erinReads()) === 404, 5000, 100);
    const audit = await stack.gw.services.db.query<{ action: string; principal: string }>(
      "SELECT action, principal FROM audit_events WHERE route = 'cli members' ORDER BY id",
    );
    expect(audit.rows.map((r) => r.action)).toEqual(['member.put', 'member.delete']);
    expect(audit.rows[0].principal).toMatch(/^cli:/);
  });
});
