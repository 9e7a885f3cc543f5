/**
 * The PACS bridge (issue 14) against two real "clinical PACS" peers started here: a second Orthanc (AE PACSB) loaded
 * over its REST API, and DCMTK dcmqrscp (AE QRSCP) with its own database, loaded with storescu.
 */
import type { Worker } from 'bullmq';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CGET_MAX_BACKLOG, cgetStudy } from '../src/bridge/cget';
import { deidentifier } from '../src/cohorts/deidentifier';
import { initIndexer } from '../src/ingest/change-feed';
import { acquireNodeSlot } from '../src/index-db/bridge';
import { createResearchProject } from '../src/index-db/cohorts';
import { withTransaction } from '../src/index-db/pool';
import { forgetProjectIds } from '../src/index-db/projects';
import { initBridgeWorker } from '../src/jobs/bridge';
import { initCohortWorker } from '../src/jobs/cohort';
import { getRemoteNodes } from '../src/orthanc/remote-nodes';
import { freePort, syntheticCopies, type SyntheticCopy, waitFor } from './helpers/dimse';
import { orthancEndpoint, resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

const run = promisify(execFile);
const STACK = join(__dirname, '../scripts/stack.sh');
const CT = `${SAMPLES}/ct/CT_small.dcm`;

let gw: TestGateway;
let worker: Worker | undefined;
let tmp: string;
let peerEnv: NodeJS.ProcessEnv;
let peer: { url: string; auth: string; dicomPort: number };
let qr: { proc: ChildProcess; port: number; db: string };
const ours = orthancEndpoint();
const ourDicomPort = Number(process.env.ORTHANC_DICOM_PORT);

const api = async (method: string, path: string, body?: unknown) => {
  const res = await fetch(gw.url + path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
};

const startWorker = () => {
  worker = initBridgeWorker({ ...gw.services, nodes: getRemoteNodes(), deid: deidentifier });
};

/** Synthetic studies of `n` instances each, written under `dir`. */
function studies(dir: string, count: number, n: number): SyntheticCopy[][] {
  return Array.from({ length: count }, (_, i) => syntheticCopies(CT, join(dir, String(i)), n));
}

async function toPeer(copies: SyntheticCopy[]): Promise<void> {
  for (const c of copies) {
    const r = await fetch(`${peer.url}/instances`, {
      method: 'POST',
      headers: { authorization: peer.auth },
      body: readFileSync(c.path),
    });
    expect(r.ok).toBe(true);
  }
}

async function toQr(dir: string): Promise<void> {
  await run('storescu', ['-aec', 'QRSCP', '+sd', '+r', '127.0.0.1', String(qr.port), dir], {
    timeout: 60_000,
  });
}

/** Runs a retrieve through the API and waits until it finished. */
async function retrieve(node: string, body: Record<string, unknown>) {
  const created = await api('POST', `/api/nodes/${node}/retrieve`, { project: 'clinic', ...body });
  expect(created.status).toBe(202);
  return waitFor(
    `retrieve ${created.body.id} to finish`,
    async () => {
      const r = await api('GET', `/api/retrieves/${created.body.id}`);
      return ['done', 'partial', 'failed', 'cancelled'].includes(r.body.state) ? r.body : undefined;
    },
    90_000,
    200,
  );
}

const projectStudyCount = async (studyUid: string) =>
  Number(
    (
      await gw.services.db.query(
        'SELECT count(*) AS n FROM project_instances WHERE project_id = $1 AND study_uid = $2',
        ['clinic', studyUid],
      )
    ).rows[0].n,
  );

let peerStudies: SyntheticCopy[][];
let qrStudies: SyntheticCopy[][];

beforeAll(async () => {
  await resetStack();
  tmp = mkdtempSync(join(tmpdir(), 'aperture-bridge-'));
  // The second Orthanc, started by the same script as every stack, with an AE title of its own. It knows the
  // gateway's archive as a peer that may query and retrieve, and as the C-MOVE destination APERTURE.
  const peerDir = join(tmp, 'peer');
  peerEnv = {
    ...process.env,
    STACK_DIR: peerDir,
    ORTHANC_AET: 'PACSB',
    ORTHANC_HTTP_PORT: String(await freePort()),
    ORTHANC_DICOM_PORT: String(await freePort()),
  };
  const up = run('bash', [STACK, 'orthanc'], { env: peerEnv, timeout: 180_000, encoding: 'utf8' });
  // dcmqrscp with its own database; it knows APERTURE (the gateway's archive) as a C-MOVE destination.
  const qrPort = await freePort();
  const qrDb = join(tmp, 'qrdb');
  mkdirSync(qrDb);
  const cfg = join(tmp, 'dcmqrscp.cfg');
  writeFileSync(
    cfg,
    [
      `NetworkTCPPort = ${qrPort}`,
      'MaxPDUSize = 16384',
      'MaxAssociations = 16',
      'HostTable BEGIN',
      `aperture = (APERTURE, 127.0.0.1, ${ourDicomPort})`,
      'HostTable END',
      'VendorTable BEGIN',
      'VendorTable END',
      'AETable BEGIN',
      `QRSCP ${qrDb} RW (200, 1024mb) ANY`,
      'AETable END',
      '',
    ].join('\n'),
  );
  // Forking (not -s): in single-process mode dcmqrscp exits after refusing an association.
  const proc = spawn('dcmqrscp', ['-c', cfg, '-dhl', String(qrPort)], { stdio: 'ignore', detached: true });
  qr = { proc, port: qrPort, db: qrDb };
  const kv = Object.fromEntries(
    (await up).stdout
      .split('\n')
      .map((l) => /^([A-Z_]+)=(.*)$/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1], m[2]]),
  );
  peer = {
    url: kv.ORTHANC_URL,
    auth: 'Basic ' + Buffer.from(`${kv.ORTHANC_USERNAME}:${kv.ORTHANC_PASSWORD}`).toString('base64'),
    dicomPort: Number(kv.ORTHANC_DICOM_PORT),
  };
  const put = await fetch(`${peer.url}/modalities/aperture`, {
    method: 'PUT',
    headers: { authorization: peer.auth },
    body: JSON.stringify({
      AET: 'APERTURE',
      Host: '127.0.0.1',
      Port: ourDicomPort,
      AllowFind: true,
      AllowMove: true,
      AllowGet: true,
      AllowEcho: true,
      AllowStore: true,
    }),
  });
  expect(put.ok).toBe(true);

  peerStudies = studies(join(tmp, 'peer-data'), 5, 6);
  for (const s of peerStudies) await toPeer(s);
  qrStudies = studies(join(tmp, 'qr-data'), 2, 3);
  await toQr(join(tmp, 'qr-data'));

  gw = await startGateway({ INDEXER_POLL_MS: '100' });
  initIndexer(gw.services);
  expect((await api('POST', '/api/projects', { id: 'clinic', name: 'Clinic' })).status).toBe(201);
  const node = (aet: string, port: number, extra: Record<string, unknown> = {}) => ({
    aet,
    host: '127.0.0.1',
    port,
    ...extra,
  });
  expect(
    (await api('PUT', '/api/nodes/pacsb', node('PACSB', peer.dicomPort, { max_associations: 1 }))).status,
  ).toBe(201);
  expect(
    (await api('PUT', '/api/nodes/qr', node('QRSCP', qrPort, { allow_get: true, retrieve_method: 'get' })))
      .status,
  ).toBe(201);
  expect((await api('PUT', '/api/nodes/dead', node('DEAD', await freePort()))).status).toBe(201);
  expect((await api('PUT', '/api/nodes/wrong-ae', node('NOTQRSCP', qrPort))).status).toBe(201);
  startWorker();
}, 300_000);

afterAll(async () => {
  await worker?.close();
  await gw?.close();
  if (qr?.proc.pid) process.kill(-qr.proc.pid, 'SIGKILL');
  if (peerEnv) await run('bash', [STACK, 'down'], { env: peerEnv, timeout: 60_000 }).catch(() => undefined);
  if (tmp && !process.env.APERTURE_KEEP_TEST_STACK) rmSync(tmp, { recursive: true, force: true });
});

describe('remote nodes', () => {
  it('checks nodes with C-ECHO and says in words why one is unreachable or refuses the association', async () => {
    const ok = await api('POST', '/api/nodes/pacsb/echo');
    expect(ok.body).toMatchObject({ node: 'pacsb', ok: true });
    expect((await api('POST', '/api/nodes/qr/echo')).body.ok).toBe(true);
    const dead = await api('POST', '/api/nodes/dead/echo');
    expect(dead.body).toEqual({
      node: 'dead',
      ok: false,
      failure: 'unreachable',
      message: 'node dead is unreachable: nothing answers at its address and port',
    });
    const wrong = await api('POST', '/api/nodes/wrong-ae/echo');
    expect(wrong.body).toMatchObject({ ok: false, failure: 'rejected' });
    expect(wrong.body.message).toMatch(/^node wrong-ae rejected the association/);
    // The archive knows the registered nodes as DICOM peers.
    const mods = (await (
      await fetch(`${ours.url}/modalities`, { headers: { authorization: ours.auth } })
    ).json()) as string[];
    expect(mods).toEqual(expect.arrayContaining(['pacsb', 'qr', 'dead', 'wrong-ae']));
  });
});

/** The `aperture` command line on this stack; resolves with its exit code and output. */
function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', join(__dirname, '../src/cli/index.ts'), ...args],
      { cwd: join(__dirname, '..'), env: { ...process.env, LOG_LEVEL: 'silent' }, timeout: 60_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

describe('nodes command line', () => {
  it('adds a node, lists it, and C-ECHOes it, with the reason in words when it fails', async () => {
    const added = await cli('nodes', 'add', 'cli-qr', 'QRSCP', '127.0.0.1', String(qr.port), '--get', 'yes');
    expect(added).toMatchObject({ code: 0 });
    expect(added.stdout).toContain(`registered node cli-qr (QRSCP at 127.0.0.1:${qr.port})`);
    const listed = await cli('nodes', 'list', '--json');
    expect(listed.code).toBe(0);
    const rows = JSON.parse(listed.stdout) as Array<{ id: string; allow_get: boolean }>;
    expect(rows.find((r) => r.id === 'cli-qr')).toMatchObject({ allow_get: true });
    const ok = await cli('nodes', 'echo', 'cli-qr');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^node cli-qr answered C-ECHO in \d+ ms/);
    const dead = await cli('nodes', 'echo', 'dead');
    expect(dead.code).toBe(1);
    expect(dead.stderr).toContain('node dead is unreachable: nothing answers at its address and port');
  });
});

describe('query', () => {
  it('answers C-FIND at study level as DICOM JSON with paging, and at series level', async () => {
    const all = await api('POST', '/api/nodes/pacsb/query?limit=2&offset=1', {
      project: 'clinic',
      level: 'study',
    });
    expect(all.status).toBe(200);
    expect(all.headers.get('content-type')).toMatch(/^application\/dicom\+json/);
    expect(all.headers.get('x-total-count')).toBe('5');
    expect(all.body).toHaveLength(2);
    const study = all.body[0];
    expect(study['0020000D'].vr).toBe('UI');
    expect(study['00201208']).toEqual({ vr: 'IS', Value: [6] });
    expect(study['00100010'].vr).toBe('PN');
    const uids = new Set(peerStudies.map((s) => s[0].studyUid));
    expect(uids.has(study['0020000D'].Value[0])).toBe(true);

    const series = await api('POST', '/api/nodes/qr/query', {
      project: 'clinic',
      level: 'series',
      query: { StudyInstanceUID: qrStudies[1][0].studyUid },
    });
    expect(series.status).toBe(200);
    expect(series.body).toHaveLength(1);
    expect(series.body[0]['0020000E'].Value).toEqual([qrStudies[1][0].seriesUid]);
    expect(series.body[0]['00080060'].Value).toEqual(['CT']);

    // The query is audited with its keys and the number of answers, not their values (the trail is batched).
    const audited = await waitFor('the series query in the audit trail', async () => {
      const r = await gw.services.db.query(
        "SELECT detail FROM audit_events WHERE action = 'node.query' AND detail->>'level' = 'series'",
      );
      return r.rows[0]?.detail;
    });
    expect(audited).toEqual({ node: 'qr', level: 'series', keys: ['StudyInstanceUID'], answers: 1 });

    const bad = await api('POST', '/api/nodes/pacsb/query', {
      project: 'clinic',
      query: { NotAKeyword: 'x' },
    });
    expect(bad.status).toBe(400);
    const down = await api('POST', '/api/nodes/dead/query', { project: 'clinic' });
    expect(down.status).toBe(502);
    expect(down.body.message ?? JSON.stringify(down.body)).toMatch(/node dead is unreachable/);
  });
});

describe('retrieve into a project', () => {
  it('brings a study by C-MOVE from the second Orthanc, linked to the project, not to quarantine', async () => {
    const s = peerStudies[0];
    const done = await retrieve('pacsb', { studies: [s[0].studyUid] });
    expect(done.state).toBe('done');
    expect(done.method).toBe('move');
    expect(done.progress).toMatchObject({ studies: 1, studiesDone: 1, instances: 6 });
    expect(done.progress.bytes).toBeGreaterThan(6 * 1000);
    expect(await projectStudyCount(s[0].studyUid)).toBe(6);
    const q = await gw.services.db.query('SELECT count(*) AS n FROM quarantine WHERE study_uid = $1', [
      s[0].studyUid,
    ]);
    expect(Number(q.rows[0].n)).toBe(0);
  });

  it('brings a study by C-GET from dcmqrscp through the gateway ingest', async () => {
    const s = qrStudies[0];
    const done = await retrieve('qr', { studies: [s[0].studyUid] });
    expect(done.state).toBe('done');
    expect(done.method).toBe('get');
    expect(await projectStudyCount(s[0].studyUid)).toBe(3);
  });

  it('reports a refused association and an unreachable node in words', async () => {
    const refused = await retrieve('wrong-ae', { studies: [qrStudies[1][0].studyUid] });
    expect(refused.state).toBe('failed');
    expect(refused.error).toMatch(/^node wrong-ae rejected the association/);
    const dead = await retrieve('dead', { studies: [qrStudies[1][0].studyUid, peerStudies[1][0].studyUid] });
    expect(dead.state).toBe('failed');
    expect(dead.error).toBe(
      '2 of 2 studies: node dead is unreachable: nothing answers at its address and port',
    );
  });

  it('cancels a C-MOVE mid-study (the association is aborted), and a retry brings the rest once', async () => {
    const big = syntheticCopies(CT, join(tmp, 'peer-big'), 60);
    await toPeer(big);
    const uid = big[0].studyUid;
    const created = await api('POST', '/api/nodes/pacsb/retrieve', { project: 'clinic', studies: [uid] });
    const id = created.body.id as string;
    await waitFor(
      'the first instance of the study in the project',
      async () => ((await projectStudyCount(uid)) > 0 ? true : undefined),
      90_000,
      50,
    );
    expect((await api('POST', `/api/retrieves/${id}/cancel`)).status).toBe(202);
    // The job ends (it frees the node's only association slot) while the study is still being sent.
    await waitFor(
      'the cancelled job to free the node',
      async () => {
        const release = await acquireNodeSlot(gw.services.db, 'pacsb', 1);
        await release?.();
        return release ? true : undefined;
      },
      60_000,
      100,
    );
    const cancelled = await api('GET', `/api/retrieves/${id}`);
    expect(cancelled.body.state).toBe('cancelled');
    expect(cancelled.body.studies[0].state).toBe('pending');
    const held = async () => {
      const r = await fetch(`${ours.url}/tools/lookup`, {
        method: 'POST',
        headers: { authorization: ours.auth },
        body: uid,
      });
      const study = ((await r.json()) as Array<{ ID: string; Type: string }>).find((x) => x.Type === 'Study');
      if (!study) return 0;
      const st = await fetch(`${ours.url}/studies/${study.ID}/statistics`, {
        headers: { authorization: ours.auth },
      });
      return Number(((await st.json()) as { CountInstances: number }).CountInstances);
    };
    expect(await held()).toBeLessThan(60);

    expect((await api('POST', `/api/retrieves/${id}/retry`)).status).toBe(202);
    const done = await waitFor(
      'the retried retrieve',
      async () => {
        const r = await api('GET', `/api/retrieves/${id}`);
        return ['done', 'partial', 'failed'].includes(r.body.state) ? r.body : undefined;
      },
      120_000,
      200,
    );
    expect(done.state).toBe('done');
    expect(await projectStudyCount(uid)).toBe(60);
    expect(await held()).toBe(60);
    const q = await gw.services.db.query('SELECT count(*) AS n FROM quarantine WHERE study_uid = $1', [uid]);
    expect(Number(q.rows[0].n)).toBe(0);
  });

  it('resumes a retrieve whose worker was killed mid-way, with no duplicate', async () => {
    await worker?.close();
    worker = undefined;
    const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, '../src/worker.ts')], {
      cwd: join(__dirname, '..'),
      env: { ...process.env, LOG_LEVEL: 'silent' },
      stdio: 'ignore',
    });
    const exited = new Promise((r) => child.once('exit', r));
    const targets = peerStudies.slice(1, 5).map((s) => s[0].studyUid);
    const created = await api('POST', '/api/nodes/pacsb/retrieve', { project: 'clinic', studies: targets });
    const id = created.body.id as string;
    const mid = await waitFor(
      'the first study of the retrieve to finish',
      async () => {
        const r = await api('GET', `/api/retrieves/${id}`);
        return r.body.progress.studiesDone >= 1 ? r.body : undefined;
      },
      90_000,
      50,
    );
    child.kill('SIGKILL');
    await exited;
    expect(mid.state).toBe('running');
    expect(mid.progress.studiesDone).toBeLessThan(4);
    startWorker();
    const done = await waitFor(
      'the retrieve to resume and finish',
      async () => {
        const r = await api('GET', `/api/retrieves/${id}`);
        return r.body.state === 'done' ? r.body : undefined;
      },
      120_000,
      200,
    );
    expect(done.attempts).toBeGreaterThanOrEqual(2);
    expect(done.progress).toMatchObject({ studies: 4, studiesDone: 4, instances: 24 });
    for (const uid of targets) expect(await projectStudyCount(uid)).toBe(6);
    // Each instance once in the archive and in the index.
    const stats = (await (
      await fetch(`${ours.url}/statistics`, { headers: { authorization: ours.auth } })
    ).json()) as {
      CountInstances: number;
    };
    const indexed = await gw.services.db.query('SELECT count(*) AS n FROM instances');
    expect(stats.CountInstances).toBe(Number(indexed.rows[0].n));
  });
});

describe('anonymise on import', () => {
  it('retrieves into the clinical project and only a de-identified cohort reaches the research project', async () => {
    await withTransaction(gw.services.db, (c) =>
      createResearchProject(c, { id: 'research', name: 'Research' }),
    );
    forgetProjectIds();
    const cohorts = initCohortWorker({ ...gw.services, deid: deidentifier });
    try {
      const s = peerStudies[1];
      // The retrieve must not read `done` before its cohort is planned (a clean-clone run once saw `done` with no
      // cohort). Planning is held at its write into `cohorts` by a lock this test keeps until it has looked.
      const hold = await gw.services.db.connect();
      let done: Record<string, unknown> & { state: string; cohort_id: string | null };
      try {
        await hold.query('BEGIN');
        await hold.query('LOCK TABLE cohorts IN EXCLUSIVE MODE');
        const created = await api('POST', '/api/nodes/pacsb/retrieve', {
          project: 'clinic',
          studies: [s[0].studyUid],
          deidentify: { project: 'research', options: {} },
        });
        expect(created.status).toBe(202);
        await waitFor(
          'the cohort planning to wait on the lock',
          async () => {
            const r = await gw.services.db.query(
              `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE '%cohorts%'`,
            );
            return r.rowCount ? true : undefined;
          },
          90_000,
          100,
        );
        const during = await api('GET', `/api/retrieves/${created.body.id}`);
        expect(during.body.studies[0].state).toBe('done');
        expect(during.body).toMatchObject({ state: 'running', cohort_id: null });
        await hold.query('ROLLBACK');
        done = await waitFor(
          'the retrieve to finish',
          async () => {
            const r = await api('GET', `/api/retrieves/${created.body.id}`);
            return r.body.state !== 'running' && r.body.state !== 'queued' ? r.body : undefined;
          },
          90_000,
          200,
        );
      } finally {
        await hold.query('ROLLBACK').catch(() => undefined);
        hold.release();
      }
      expect(done.state).toBe('done');
      expect(done.cohort_id).toMatch(/^[0-9a-f-]{36}$/);
      const research = await waitFor(
        'the cohort output in the research project',
        async () => {
          const r = await gw.services.db.query(
            `SELECT i.sop_instance_uid, i.study_uid, i.dicom_json->'00100010' AS name FROM project_instances p
             JOIN instances i USING (sop_instance_uid) WHERE p.project_id = 'research'`,
          );
          return r.rows.length === 6 ? r.rows : undefined;
        },
        60_000,
        200,
      );
      const sourceSops = new Set(s.map((c) => c.sopInstanceUid));
      for (const row of research) {
        expect(sourceSops.has(row.sop_instance_uid)).toBe(false);
        expect(row.study_uid).not.toBe(s[0].studyUid);
      }
      const original = readFileSync(CT, 'latin1');
      expect(original).toContain('CompressedSamples');
      expect(JSON.stringify(research.map((r) => r.name))).not.toContain('CompressedSamples');
    } finally {
      await cohorts.close();
    }
  });
});

describe('watchers', () => {
  it('imports exactly the new studies over two runs, and keeps its history', async () => {
    const created = await api('POST', '/api/projects/clinic/watchers', {
      name: 'CT from the QR',
      node: 'qr',
      query: { ModalitiesInStudy: 'CT' },
      interval_s: 3600,
    });
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    /** The newest run once `n` runs have finished and none is under way. */
    const finishedRuns = (n: number) =>
      waitFor(`watcher run ${n}`, async () => {
        const w = await api('GET', `/api/watchers/${id}`);
        const runs = w.body.history as Array<{ finished_at: string | null; retrieve_id: string | null }>;
        return runs.length >= n && runs.every((r) => r.finished_at) ? runs[0] : undefined;
      });
    const runOnce = async (n: number) => {
      expect((await api('POST', `/api/watchers/${id}/run`)).status).toBe(202);
      return finishedRuns(n);
    };
    // The schedule (a BullMQ job scheduler) runs the watcher once at creation, then every interval_s.
    const first = await finishedRuns(1);
    // qrStudies[0] was retrieved by hand before, but this watcher has never seen it: both studies are new to it.
    expect(first).toMatchObject({ matched: 2, new_studies: 2, error: null });
    const r1 = await waitFor(
      'the first watcher retrieve',
      async () => {
        const r = await api('GET', `/api/retrieves/${first.retrieve_id}`);
        return r.body.state === 'done' ? r.body : undefined;
      },
      60_000,
      200,
    );
    expect(r1.progress.instances).toBe(6);

    const later = studies(join(tmp, 'qr-later'), 1, 2);
    await toQr(join(tmp, 'qr-later'));
    const second = await runOnce(2);
    expect(second).toMatchObject({ matched: 3, new_studies: 1 });
    const r2 = await waitFor(
      'the second watcher retrieve',
      async () => {
        const r = await api('GET', `/api/retrieves/${second.retrieve_id}`);
        return r.body.state === 'done' ? r.body : undefined;
      },
      60_000,
      200,
    );
    expect(r2.studies.map((s: { study_uid: string }) => s.study_uid)).toEqual([later[0][0].studyUid]);
    expect(await projectStudyCount(later[0][0].studyUid)).toBe(2);
    // The schedule is a BullMQ job scheduler.
    expect((await api('DELETE', `/api/watchers/${id}`)).status).toBe(204);
  });
});

// After the watchers: this study would be one more CT study of the QR for them.
describe('C-GET streaming', () => {
  it('ingests C-GET objects while getscu runs, with a bounded number waiting on disk', async () => {
    const [big] = studies(join(tmp, 'qr-big'), 1, 40);
    await toQr(join(tmp, 'qr-big'));
    const got = await cgetStudy(
      gw.services,
      { aet: 'QRSCP', host: '127.0.0.1', port: qr.port },
      {
        callingAet: 'APERTURE',
        studyUid: big[0].studyUid,
        projectId: 'clinic',
        timeoutS: 60,
        maxObjectBytes: 64 * 1024 * 1024,
      },
    );
    expect(got).toMatchObject({ stored: 40, refused: 0, ok: true, aborted: false });
    // At most CGET_MAX_BACKLOG answered objects wait (getscu is paused beyond), plus the one being written.
    expect(got.maxBacklog).toBeLessThanOrEqual(CGET_MAX_BACKLOG + 1);
    expect(await projectStudyCount(big[0].studyUid)).toBe(40);
  });
});
