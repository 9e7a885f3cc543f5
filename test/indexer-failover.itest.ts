import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'pg';
import { loadConfig } from '../src/config';
import { INDEXER_LOCK_KEY } from '../src/ingest/change-feed';
import { cstore, freePort, type GatewayChild, spawnGateway, syntheticCopies, waitFor } from './helpers/dimse';
import { orthancEndpoint, resetStack, SAMPLES } from './helpers/gateway';

const TEMPLATE = `${SAMPLES}/hierarchy/77654033/CT2/17106`;

/**
 * The indexer as it runs in production: gateway processes (src/main.ts) started and killed like real ones, while
 * DCMTK sends to Orthanc. Only PostgreSQL tells who leads; the counts come from the index.
 */
describe('change-feed indexer across crashes and processes', () => {
  let db: Pool;
  let tmp: string;
  const children: GatewayChild[] = [];
  const start = async () => {
    // Holes in Orthanc's change log (numbers burnt by retried transactions) hold the stored cursor below them for
    // INDEXER_GAP_WAIT_MS: short here, so that the cursor's catching up can be checked.
    const child = await spawnGateway(await freePort(), { INDEXER_GAP_WAIT_MS: '2000' });
    children.push(child);
    return child;
  };
  const countIn = async (project: string) =>
    (
      await db.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM project_instances WHERE project_id = $1',
        [project],
      )
    ).rows[0].n;
  /** SOP Instance UIDs an indexer process logged as newly placed. */
  const placedBy = (child: GatewayChild) =>
    child.lines('instance indexed').map((l) => String(l.sopInstanceUid));

  beforeAll(async () => {
    await resetStack();
    db = new Pool({ connectionString: loadConfig(process.env).DATABASE_URL, max: 2 });
    tmp = mkdtempSync(join(tmpdir(), 'aperture-failover-'));
  }, 120_000);
  afterAll(async () => {
    await Promise.all(children.map((c) => c.stop('SIGKILL')));
    await db?.end();
    rmSync(tmp, { recursive: true, force: true });
  }, 300_000);

  it('resumes after being killed mid-way through a 300-instance C-STORE batch: each instance indexed exactly once', async () => {
    const first = await start();
    await waitFor(
      'the first process to lead',
      async () => first.lines('change feed: leadership acquired').length === 1,
    );
    for (const [path, body] of [
      ['/api/projects', { id: 'bulk', name: 'Bulk' }],
      ['/api/projects/bulk/routing', { kind: 'called_aet', value: 'BULK' }],
    ] as const) {
      const res = await fetch(`${first.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      expect(res.status).toBe(201);
    }
    const copies = syntheticCopies(TEMPLATE, join(tmp, 'batch'), 300, { perSeries: 50 });
    const sending = cstore([join(tmp, 'batch')], { calledAet: 'BULK', callingAet: 'BULKSCU' });

    await waitFor(
      'a first part of the batch to be indexed',
      async () => (await countIn('bulk')) >= 60,
      120_000,
      20,
    );
    await first.stop('SIGKILL');
    const atKill = await countIn('bulk');
    await sending;
    expect(atKill).toBeLessThan(300);

    const second = await start();
    await waitFor(
      'the rest of the batch to be indexed',
      async () => (await countIn('bulk')) === 300,
      120_000,
    );
    // Settle: a replay or a double count would show up after the last instance, not before.
    await new Promise((r) => setTimeout(r, 1000));

    const uids = copies.map((c) => c.sopInstanceUid).sort();
    const inProject = await db.query<{ sop_instance_uid: string }>(
      "SELECT sop_instance_uid FROM project_instances WHERE project_id = 'bulk' ORDER BY 1",
    );
    expect(inProject.rows.map((r) => r.sop_instance_uid)).toEqual(uids);
    const totals = await db.query(
      `SELECT (SELECT count(*)::int FROM instances) AS instances,
              (SELECT count(*)::int FROM quarantine) AS quarantined,
              (SELECT count(*)::int FROM index_failures) AS failures,
              (SELECT sum(num_instances)::int FROM project_series WHERE project_id = 'bulk') AS series_sum,
              (SELECT count(*)::int FROM project_series WHERE project_id = 'bulk') AS series,
              (SELECT num_instances FROM project_studies WHERE project_id = 'bulk') AS study_instances,
              (SELECT num_series FROM project_studies WHERE project_id = 'bulk') AS study_series`,
    );
    expect(totals.rows[0]).toEqual({
      instances: 300,
      quarantined: 0,
      failures: 0,
      series_sum: 300,
      series: 6,
      study_instances: 300,
      study_series: 6,
    });
    // Nobody routed an instance twice; the second process picked up exactly where the first stopped (a crash may
    // replay the events of one unfinished step, which then change nothing and are not placed again).
    const all = [...placedBy(first), ...placedBy(second)];
    expect(new Set(all).size).toBe(all.length);
    expect(placedBy(second).length).toBeGreaterThanOrEqual(300 - atKill);
    // The cursor caught up with Orthanc's log.
    const { url, auth } = orthancEndpoint();
    const last = (
      (await (await fetch(`${url}/changes?last`, { headers: { authorization: auth } })).json()) as {
        Last: number;
      }
    ).Last;
    const cursor = async () =>
      Number(
        (
          await db.query<{ last_change: string }>(
            "SELECT last_change FROM indexer_state WHERE name = 'orthanc-changes'",
          )
        ).rows[0].last_change,
      );
    await waitFor(
      'the stored cursor to catch up with the log',
      async () => (await cursor()) >= last - 10,
      20_000,
    );
    await second.stop();
  }, 300_000);

  it('runs one indexer among two gateway processes, and the other takes over within seconds of a SIGKILL', async () => {
    const a = await start();
    const b = await start();
    const leader = await waitFor('one process to lead', async () => {
      const leaders = [a, b].filter((c) => c.lines('change feed: leadership acquired').length > 0);
      return leaders.length === 1 && leaders[0];
    });
    const follower = leader === a ? b : a;
    const locks = await db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted",
      [INDEXER_LOCK_KEY],
    );
    expect(locks.rows[0].n).toBe(1);

    const before = await countIn('bulk');
    const one = syntheticCopies(TEMPLATE, join(tmp, 'two-a'), 100, { perSeries: 25 });
    await cstore([join(tmp, 'two-a')], { calledAet: 'BULK' });
    await waitFor('the first batch indexed', async () => (await countIn('bulk')) === before + 100, 120_000);
    expect(placedBy(leader).sort()).toEqual(one.map((c) => c.sopInstanceUid).sort());
    expect(placedBy(follower)).toEqual([]);

    await leader.stop('SIGKILL');
    const killedAt = Date.now();
    await waitFor(
      'the follower to take over',
      async () => follower.lines('change feed: leadership acquired').length === 1,
      15_000,
      50,
    );
    const takeoverMs = Date.now() - killedAt;
    expect(takeoverMs).toBeLessThan(5000);

    const two = syntheticCopies(TEMPLATE, join(tmp, 'two-b'), 50, { perSeries: 25 });
    await cstore([join(tmp, 'two-b')], { calledAet: 'BULK' });
    await waitFor('the second batch indexed', async () => (await countIn('bulk')) === before + 150, 120_000);
    expect(placedBy(follower).sort()).toEqual(two.map((c) => c.sopInstanceUid).sort());
    const dup = await db.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM (SELECT sop_instance_uid FROM project_instances GROUP BY 1 HAVING count(*) > 1) d',
    );
    expect(dup.rows[0].n).toBe(0);
    await follower.stop();
  }, 300_000);
});
