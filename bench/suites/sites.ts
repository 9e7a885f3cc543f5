/**
 * Two sites (issue 16): replication lag and storage sync backlog under a STOW-RS ingest load. Site 1 is the bench
 * stack; site 2 is a hot standby of its PostgreSQL cluster (pg_basebackup -R, synchronous replication by default)
 * plus `aperture storage-sync` copying Orthanc's files to site 2's storage folder. For every acknowledged instance:
 * the time until its index row is readable at site 2 (replication) and until its file is on site 2's disk (sync).
 * Sampled every 250 ms: site 2's replay lag (bytes) and the sync's backlog from its status file. Orthanc direct: the
 * same number of instances posted to Orthanc's REST API in the same run (the ingest rate without gateway and standby),
 * and the gateway's ingest rate with synchronous replication against that.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Pool } from 'pg';
import { seedStandby, startCluster, stopCluster } from '../../tools/standby';
import { generateInstances } from '../../tools/synth';
import { freePort } from '../../tools/net';
import { replicationState } from '../../src/index-db/sites';
import { readSyncStatus } from '../../src/sites/storage-sync';
import type { BenchRow, SuiteResult } from '../lib/report';
import { createProject, orthancAuth, type StackEnv, startGatewayProcess } from '../lib/stack';
import { percentile, round } from '../lib/stats';

const ROOT = join(__dirname, '../..');
const exec = promisify(execFile);
const SECONDS = Number(process.env.BENCH_SITES_SECONDS ?? 300);
const CONCURRENCY = Number(process.env.BENCH_SITES_CONCURRENCY ?? 2);
const SYNC_MODE = process.env.BENCH_SITES_SYNC === 'async' ? 'async' : 'sync';
const ORTHANC_N = Number(process.env.BENCH_SITES_ORTHANC_N ?? 300);
const BOUNDARY = 'bench-sites';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function* instances(seed: string) {
  for (let p = 0; ; p++)
    yield* generateInstances({
      patients: 50,
      studiesPerPatient: 1,
      seriesPerStudy: 1,
      instancesPerSeries: 4,
      rows: 64,
      cols: 64,
      seed: `${seed}-${p}`,
    });
}

function part(b: Buffer): Buffer {
  return Buffer.concat([
    Buffer.from(`--${BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n`),
    b,
    Buffer.from(`\r\n--${BOUNDARY}--\r\n`),
  ]);
}

const ms = (xs: number[]) =>
  `p50 ${round(percentile(xs, 50))}, p95 ${round(percentile(xs, 95))}, max ${round(Math.max(...xs))}`;

export async function run(stack: StackEnv): Promise<SuiteResult> {
  const tmp = mkdtempSync(join(tmpdir(), 'aperture-bench-site2-'));
  if (process.getuid?.() === 0) await exec('chown', ['postgres', tmp]);
  const data = join(tmp, 'pg');
  const storage2 = join(tmp, 'storage');
  const port2 = await freePort();
  let sync: ChildProcess | undefined;
  let gw: Awaited<ReturnType<typeof startGatewayProcess>> | undefined;
  const psql1 = new Pool({ connectionString: stack.DATABASE_URL, max: 2 });
  let site2: Pool | undefined;
  let site2Orthanc: Pool | undefined;
  try {
    await seedStandby(stack.DATABASE_URL, data, 'site2');
    await startCluster({ dataDir: data, port: port2, socketDir: tmp, logFile: join(tmp, 'postgres.log') });
    await psql1.query(
      `ALTER SYSTEM SET synchronous_standby_names = '${SYNC_MODE === 'sync' ? 'site2' : ''}'`,
    );
    await psql1.query('SELECT pg_reload_conf()');
    const site2Url = `postgres://aperture@127.0.0.1:${port2}/aperture`;
    site2 = new Pool({ connectionString: site2Url, max: 2 });
    site2Orthanc = new Pool({ connectionString: `postgres://aperture@127.0.0.1:${port2}/orthanc`, max: 2 });

    gw = await startGatewayProcess(stack, await freePort(), {
      AUTH_ENABLED: 'false',
      INDEXER_ENABLED: 'false',
    });
    await createProject(gw.url, 'sites', 'Sites');
    const syncEnv = {
      ...process.env,
      DATABASE_URL: site2Url,
      ORTHANC_STORAGE_DIR: storage2,
      STORAGE_SYNC_SOURCE_URL: stack.ORTHANC_URL,
      STORAGE_SYNC_SOURCE_USERNAME: stack.ORTHANC_USERNAME,
      STORAGE_SYNC_SOURCE_PASSWORD: stack.ORTHANC_PASSWORD,
      STORAGE_SYNC_INTERVAL_MS: process.env.STORAGE_SYNC_INTERVAL_MS ?? '500',
      LOG_LEVEL: 'warn',
    };
    sync = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/index.ts'), 'storage-sync'], {
      cwd: ROOT,
      env: syncEnv,
      stdio: 'inherit',
    });

    // The sync process has made its first pass (tsx start-up on a loaded machine takes seconds).
    for (let i = 0; !(await readSyncStatus(`${storage2}-sync`)); i++) {
      if (i > 600 || sync.exitCode !== null) throw new Error('storage-sync did not start');
      await sleep(200);
    }

    // The load: CONCURRENCY uploaders, single-instance STOW-RS, for SECONDS.
    const acked = new Map<string, number>(); // SOP Instance UID -> ack time
    const replicated: number[] = [];
    const filed: number[] = [];
    const pendingRow = new Set<string>();
    const pendingFile = new Map<string, { at: number; path?: string }>();
    const lagBytes: number[] = [];
    const backlog: number[] = [];
    let failed = 0;
    const gen = instances('sites');
    const end = Date.now() + SECONDS * 1000;
    const t0 = Date.now();
    const uploaders = Array.from({ length: CONCURRENCY }, async () => {
      while (Date.now() < end) {
        const inst = gen.next().value!;
        const res = await fetch(`${gw!.url}/projects/sites/dicom-web/studies`, {
          method: 'POST',
          headers: { 'content-type': `multipart/related; type="application/dicom"; boundary=${BOUNDARY}` },
          body: part(inst.buffer),
        }).catch(() => undefined);
        await res?.arrayBuffer();
        if (res?.status !== 200) {
          failed++;
          continue;
        }
        const at = Date.now();
        acked.set(inst.sopInstanceUid, at);
        pendingRow.add(inst.sopInstanceUid);
        pendingFile.set(inst.sopInstanceUid, { at });
      }
    });
    const loadDone = Promise.all(uploaders).then(() => Date.now());
    let stopWatch = false;
    // Watchers: which acknowledged instances are readable at site 2, and whose files are on its disk.
    const watch = (async () => {
      while (!stopWatch || pendingRow.size || pendingFile.size) {
        const now = Date.now();
        if (pendingRow.size) {
          const r = await site2!.query<{ sop_instance_uid: string }>(
            'SELECT sop_instance_uid FROM instances WHERE sop_instance_uid = ANY($1)',
            [[...pendingRow]],
          );
          for (const { sop_instance_uid: sop } of r.rows) {
            replicated.push(now - acked.get(sop)!);
            pendingRow.delete(sop);
          }
        }
        const needPath = [...pendingFile].filter(([, v]) => !v.path).map(([k]) => k);
        if (needPath.length) {
          const rows = await site2!.query<{ sop_instance_uid: string; orthanc_id: string }>(
            'SELECT sop_instance_uid, orthanc_id FROM instances WHERE sop_instance_uid = ANY($1)',
            [needPath],
          );
          if (rows.rows.length) {
            const files = await site2Orthanc!.query<{ public_id: string; uuid: string }>(
              `SELECT r.publicid AS public_id, a.uuid FROM attachedfiles a JOIN resources r ON r.internalid = a.id
                WHERE a.filetype = 1 AND r.publicid = ANY($1)`,
              [rows.rows.map((x) => x.orthanc_id)],
            );
            const uuidOf = new Map(files.rows.map((f) => [f.public_id, f.uuid]));
            for (const x of rows.rows) {
              const u = uuidOf.get(x.orthanc_id);
              if (u)
                pendingFile.get(x.sop_instance_uid)!.path = join(storage2, u.slice(0, 2), u.slice(2, 4), u);
            }
          }
        }
        for (const [sop, v] of pendingFile) {
          if (v.path && existsSync(v.path) && statSync(v.path).size > 0) {
            filed.push(now - v.at);
            pendingFile.delete(sop);
          }
        }
        if (Date.now() - now > 0 && Date.now() - t0 > SECONDS * 1000 + 300_000) break; // give up 5 min after the load
        await sleep(100);
      }
    })();
    const sampler = (async () => {
      while (!stopWatch) {
        const r = await replicationState(site2!).catch(() => undefined);
        if (r?.replayLagBytes !== undefined) lagBytes.push(r.replayLagBytes);
        const s = await readSyncStatus(`${storage2}-sync`);
        if (s) backlog.push(s.backlogFiles);
        await sleep(250);
      }
    })();
    const loadEnd = await loadDone;
    stopWatch = true;
    await Promise.all([watch, sampler]);
    const gwRate = acked.size / ((loadEnd - t0) / 1000);

    // Orthanc direct, same run: the same kind of instances straight into Orthanc's REST API.
    const orGen = instances('sites-orthanc');
    const orSet = Array.from({ length: ORTHANC_N }, () => orGen.next().value!.buffer);
    let next = 0;
    const o0 = Date.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < orSet.length) {
          const b = orSet[next++];
          const res = await fetch(`${stack.ORTHANC_URL}/instances`, {
            method: 'POST',
            headers: { authorization: orthancAuth(stack), 'content-type': 'application/dicom' },
            body: b,
          });
          await res.arrayBuffer();
        }
      }),
    );
    const orRate = orSet.length / ((Date.now() - o0) / 1000);

    const rows: BenchRow[] = [
      {
        metric: `STOW-RS single instances, ${CONCURRENCY} in flight, ${SECONDS} s, ${SYNC_MODE}hronous standby (${acked.size} acknowledged, ${failed} failed)`,
        unit: 'inst/s',
        gateway: gwRate,
        orthanc: orRate,
        ratio: gwRate / orRate,
        ratioMeaning: 'gateway with standby / Orthanc REST alone',
        note: `Orthanc: ${ORTHANC_N} instances POST /instances after the load, same run`,
      },
      {
        metric: `replication: STOW acknowledged → index row readable at site 2 (p95; ${ms(replicated)} ms; ${replicated.length} of ${acked.size})`,
        unit: 'ms',
        gateway: percentile(replicated, 95),
        target: 'p95 reported (issue 16)',
      },
      {
        metric: `replication lag at site 2, sampled every 250 ms (p95; max ${round(Math.max(0, ...lagBytes))} bytes, ${lagBytes.length} samples)`,
        unit: 'bytes',
        gateway: percentile(lagBytes, 95),
      },
      {
        metric: `storage sync: STOW acknowledged → file on site 2's disk (p95; ${ms(filed)} ms; ${filed.length} of ${acked.size})`,
        unit: 'ms',
        gateway: percentile(filed, 95),
        note: `sync pass every ${syncEnv.STORAGE_SYNC_INTERVAL_MS} ms`,
      },
      {
        metric: `storage sync backlog, sampled every 250 ms (p95; max ${Math.max(0, ...backlog)}, ${backlog.length} samples)`,
        unit: 'files',
        gateway: percentile(backlog, 95),
      },
    ];
    return {
      suite: 'Two sites: replication lag and storage sync backlog under STOW load',
      setup:
        `Site 1: the bench stack (Orthanc on its PostgreSQL index) and one gateway (auth off). Site 2: a hot standby of ` +
        `site 1's cluster on the same machine (${SYNC_MODE}hronous replication) and \`aperture storage-sync\` copying ` +
        `Orthanc's files from site 1's Orthanc into site 2's folder. Everything shares the machine's 2 cores; load average ` +
        `at the end of the run: ${(await import('node:os'))
          .loadavg()
          .map((x) => x.toFixed(2))
          .join(', ')}.`,
      rows,
    };
  } finally {
    sync?.kill('SIGTERM');
    await gw?.stop();
    await site2?.end().catch(() => undefined);
    await site2Orthanc?.end().catch(() => undefined);
    await psql1.query("ALTER SYSTEM SET synchronous_standby_names = ''").catch(() => undefined);
    await psql1.query('SELECT pg_reload_conf()').catch(() => undefined);
    await psql1.end().catch(() => undefined);
    await stopCluster(data);
    rmSync(tmp, { recursive: true, force: true });
  }
}
