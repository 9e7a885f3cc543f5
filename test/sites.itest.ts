/**
 * Issue 16, backups: a stack is backed up (twice: the second backup copies only the new storage file), wiped,
 * restored into fresh folders and started again; every study answers QIDO and WADO with the very bytes stored, and
 * `aperture verify` passes, then finds a storage file corrupted on disk.
 * Second site: a PostgreSQL standby of the stack's cluster (synchronous replication) and a gateway on it: reads
 * within the stated lag, writes refused with 503 and the reason, a cut link makes primary writes wait (not fail,
 * not lose), promotion makes site 2 writable with every acknowledged instance there.
 */
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { promisify } from 'node:util';
import { freePort, type GatewayChild, spawnGateway } from './helpers/dimse';
import { SAMPLES, startGateway, type TestGateway } from './helpers/gateway';
import { freshStackEnv, parseStackEnv, type PrivateStack, startPrivateStack } from './helpers/private-stack';
import { PG_BIN, seedStandby, startCluster, stopCluster } from '../tools/standby';

jest.setTimeout(300_000);

const ROOT = join(__dirname, '..');
const STACK = join(ROOT, 'scripts/stack.sh');
const run = promisify(execFile);
const BOUNDARY = 'sites-boundary';
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;

const FILES = [
  'ct/CT_small.dcm',
  'ct/LCTSC-CT01.dcm',
  'ct/CT1_J2KI_jpeg2000.dcm',
  'mr/MR_small_bigendian.dcm',
  'mr/emri_small_enhanced-10frames.dcm',
  'us/OBXXXX1A_rle_2frame_palette.dcm',
].map((f) => readFileSync(join(SAMPLES, f)));
const LATE = readFileSync(join(SAMPLES, 'ct/CT2_JLSN_jpegls-near.dcm'));

function multipart(parts: Buffer[]): Buffer {
  return Buffer.concat([
    ...parts.flatMap((p) => [
      Buffer.from(`--${BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n`),
      p,
      Buffer.from('\r\n'),
    ]),
    Buffer.from(`--${BOUNDARY}--\r\n`),
  ]);
}

async function stow(gw: { url: string }, parts: Buffer[]): Promise<number> {
  const res = await fetch(`${gw.url}/projects/bk/dicom-web/studies`, {
    method: 'POST',
    headers: {
      'content-type': `multipart/related; type="application/dicom"; boundary=${BOUNDARY}`,
      accept: 'application/dicom+json',
    },
    body: multipart(parts),
  });
  const text = await res.text();
  // The failure reasons, when some part failed, so that a failing run says why.
  if (res.status !== 200) console.warn(`STOW answered ${res.status}: ${text.slice(0, 2000)}`);
  return res.status;
}

const str = (d: DicomJson, tag: string) => String(d[tag]?.Value?.[0] ?? '');

/** Every instance the project answers by QIDO, with the bytes WADO-RS returns for it (the one part, as stored). */
async function snapshot(gw: { url: string }): Promise<Map<string, { study: string; bytes: Buffer }>> {
  const root = `${gw.url}/projects/bk/dicom-web`;
  const out = new Map<string, { study: string; bytes: Buffer }>();
  const studies = (await (
    await fetch(`${root}/studies`, { headers: { accept: 'application/dicom+json' } })
  ).json()) as DicomJson[];
  for (const s of studies) {
    const study = str(s, '0020000D');
    const instances = (await (
      await fetch(`${root}/studies/${study}/instances`, { headers: { accept: 'application/dicom+json' } })
    ).json()) as DicomJson[];
    for (const i of instances) {
      const sop = str(i, '00080018');
      const res = await fetch(`${root}/studies/${study}/series/${str(i, '0020000E')}/instances/${sop}`, {
        headers: { accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' },
      });
      expect(res.status).toBe(200);
      const body = Buffer.from(await res.arrayBuffer());
      const boundary = /boundary="?([^";]+)"?/.exec(res.headers.get('content-type') ?? '')![1];
      const start = body.indexOf('\r\n\r\n') + 4;
      const end = body.lastIndexOf(`\r\n--${boundary}--`);
      out.set(sop, { study, bytes: body.subarray(start, end) });
    }
  }
  return out;
}

/** The CLI as an operator runs it, against a stack's settings. */
async function cli(
  env: Record<string, string>,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(
      join(ROOT, 'node_modules/.bin/tsx'),
      [join(ROOT, 'src/cli/index.ts'), ...args],
      {
        env: { ...process.env, ...env, LOG_LEVEL: 'warn' },
        timeout: 180_000,
        maxBuffer: 16 * 1024 ** 2,
      },
    );
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

describe('backup, wipe, restore into fresh folders, verify (issue 16)', () => {
  let stack: PrivateStack | undefined;
  let gw: TestGateway | undefined;
  let restoredEnv: NodeJS.ProcessEnv | undefined;
  const tmp = mkdtempSync(join(tmpdir(), 'aperture-sites-'));
  // As root, the restored cluster runs as the postgres user, who must be able to walk down to it.
  chmodSync(tmp, 0o711);
  const backups = join(tmp, 'backups');
  const into = join(tmp, 'restored');

  afterAll(async () => {
    await gw?.close();
    await stack?.destroy();
    if (restoredEnv) execFileSync('bash', [STACK, 'down'], { env: restoredEnv, stdio: 'ignore' });
    rmSync(tmp, { recursive: true, force: true });
  });

  it('restores every study byte-identical, and verify finds a planted corruption', async () => {
    stack = await startPrivateStack('aperture-sites-primary-');
    const siteEnv = (s: Record<string, string>, dir: string) => ({
      ...s,
      ORTHANC_STORAGE_DIR: join(dir, 'orthanc/storage'),
      BACKUP_CONFIG_PATHS: join(dir, 'orthanc/credentials'),
    });
    const env1 = siteEnv(stack.env, stack.dir);
    gw = await startGateway(stack.env);
    expect(
      (
        await fetch(`${gw.url}/api/projects`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ id: 'bk', name: 'bk' }),
        })
      ).status,
    ).toBe(201);
    expect(await stow(gw, FILES)).toBe(200);
    const before = await snapshot(gw);
    expect(before.size).toBe(FILES.length);
    // WADO answers Part 10 objects (what the restore must give back byte for byte).
    for (const v of before.values()) expect(v.bytes.subarray(128, 132).toString('latin1')).toBe('DICM');

    const first = await cli(env1, ['backup', '--to', backups, '--json', '--quiet']);
    expect(first).toMatchObject({ code: 0 });
    const m1 = JSON.parse(first.stdout) as {
      storageFiles: number;
      copiedFiles: number;
      configFiles: string[];
    };
    expect(m1).toMatchObject({
      storageFiles: FILES.length,
      copiedFiles: FILES.length,
      configFiles: ['credentials'],
    });

    // One more object; the next backup copies it alone and links the rest.
    expect(await stow(gw, [LATE])).toBe(200);
    const expected = await snapshot(gw);
    expect(expected.size).toBe(FILES.length + 1);
    await gw.close();
    gw = undefined;
    // Backup names have a one-second resolution.
    await new Promise((r) => setTimeout(r, 1100));
    const second = await cli(env1, ['backup', '--to', backups, '--json', '--quiet', '--no-prune']);
    expect(second).toMatchObject({ code: 0 });
    const m2 = JSON.parse(second.stdout) as {
      name: string;
      path: string;
      storageFiles: number;
      copiedFiles: number;
    };
    expect(m2).toMatchObject({ storageFiles: FILES.length + 1, copiedFiles: 1 });

    // Wipe the whole stack: services, database folder, storage, credentials.
    await stack.destroy();
    stack = undefined;

    expect((await cli({}, ['restore', m2.path, '--into', into, '--quiet'])).code).toBe(0);
    // A restore never writes over a folder that holds something.
    const again = await cli({}, ['restore', m2.path, '--into', into, '--quiet']);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/not empty/);

    restoredEnv = { ...process.env, ...(await freshStackEnv(into)) };
    const up = await run('bash', [STACK, 'up'], { env: restoredEnv, timeout: 300_000, encoding: 'utf8' });
    const env2 = siteEnv(parseStackEnv(up.stdout), into);
    gw = await startGateway(env2);
    const after = await snapshot(gw);
    expect([...after.keys()].sort()).toEqual([...expected.keys()].sort());
    for (const [sop, v] of expected) {
      expect(after.get(sop)?.study).toBe(v.study);
      expect(md5(after.get(sop)!.bytes)).toBe(md5(v.bytes));
    }

    const ok = await cli(env2, ['verify', '--json', '--quiet']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({
      indexed: 7,
      archived: 7,
      checked: 7,
      ok: 7,
      differences: [],
    });

    // Corrupt one archived file on disk (same size, one byte flipped), as a failing disk would.
    const victim = [...expected.entries()].find(([, v]) => v.bytes.length > 50_000)!;
    const storage = join(into, 'orthanc/storage');
    const files: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) walk(join(d, e.name));
        else files.push(join(d, e.name));
      }
    };
    walk(storage);
    const path = files.find(
      (f) => statSync(f).size === victim[1].bytes.length && md5(readFileSync(f)) === md5(victim[1].bytes),
    );
    expect(path && existsSync(path)).toBeTruthy();
    const bytes = readFileSync(path!);
    bytes[bytes.length - 10] ^= 0xff;
    writeFileSync(path!, bytes);

    const bad = await cli(env2, ['verify', '--json', '--quiet']);
    expect(bad.code).toBe(2);
    const report = JSON.parse(bad.stdout) as {
      ok: number;
      differences: Array<{ sopInstanceUid: string; problem: string }>;
    };
    expect(report.ok).toBe(6);
    expect(report.differences).toEqual([
      expect.objectContaining({ sopInstanceUid: victim[0], problem: 'md5' }),
    ]);
  });
});

describe('a second site on a streaming standby (issue 16)', () => {
  let stack: PrivateStack | undefined;
  let gw1: TestGateway | undefined;
  let gw2: GatewayChild | undefined;
  let gw3: GatewayChild | undefined;
  let syncLoop: ChildProcess | undefined;
  /** Site 2's stack folder, in scripts/stack.sh's layout: pg/ (the standby), orthanc/storage/ (synced files). */
  const tmp = mkdtempSync(join(tmpdir(), 'aperture-site2-'));
  chmodSync(tmp, 0o755);
  const data = join(tmp, 'pg');
  const storage2 = join(tmp, 'orthanc/storage');
  let standbyUp = false;
  let site1StandbyUp = false;
  let site2StackEnv: NodeJS.ProcessEnv | undefined;
  /** Stated lag: a study stored at site 1 answers QIDO at site 2 within this time. */
  const LAG_MS = 5000;

  afterAll(async () => {
    syncLoop?.kill('SIGTERM');
    await gw3?.stop();
    await gw2?.stop();
    await gw1?.close();
    if (site2StackEnv) execFileSync('bash', [STACK, 'down'], { env: site2StackEnv, stdio: 'ignore' });
    else if (standbyUp) await stopCluster(data);
    if (site1StandbyUp && stack) await stopCluster(join(stack.dir, 'pg'));
    await stack?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('reads at site 2 within the lag, syncs its storage, refuses writes there, waits on a cut link, and fails over with nothing lost', async () => {
    stack = await startPrivateStack('aperture-site1-');
    const primary = new URL(stack.env.DATABASE_URL);
    const port2 = String(await freePort());
    if (process.getuid?.() === 0) execFileSync('chown', ['postgres', tmp]);
    await seedStandby(stack.env.DATABASE_URL, data, 'site2');
    const startStandby = async () => {
      await startCluster({
        dataDir: data,
        port: port2,
        socketDir: tmp,
        logFile: join(tmp, 'postgres.log'),
        settings: ['fsync=off'],
      });
      standbyUp = true;
    };
    await startStandby();
    const psql1 = (sql: string) =>
      run(
        join(PG_BIN, 'psql'),
        ['-h', '127.0.0.1', '-p', primary.port, '-U', 'aperture', '-d', 'postgres', '-tAc', sql],
        { encoding: 'utf8' },
      );
    // Synchronous: a commit at site 1 returns once site 2 has it on disk.
    await psql1("ALTER SYSTEM SET synchronous_standby_names = 'site2'");
    await psql1('SELECT pg_reload_conf()');
    const site2Db = `postgres://aperture@127.0.0.1:${port2}/aperture`;

    gw1 = await startGateway(stack.env);
    // Site 2 has no Orthanc of its own here: Orthanc's PostgreSQL plugin cannot run on a hot standby (see
    // docs/two-sites.md); its gateway reads the index from the standby and the bytes from site 1's archive.
    // Its own process: the database pool is one per process.
    gw2 = await spawnGateway(await freePort(), {
      ...stack.env,
      DATABASE_URL: site2Db,
      ORTHANC_STORAGE_DIR: storage2,
      SITE_ROLE_CACHE_MS: '200',
      INDEXER_ENABLED: 'false',
      LOG_LEVEL: 'warn',
    });
    const post = (gw: { url: string }, path: string, body: unknown) =>
      fetch(`${gw.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    expect((await post(gw1, '/api/projects', { id: 'bk', name: 'bk' })).status).toBe(201);
    const stowTo = (gw: { url: string }, files: Buffer[]) => stow(gw, files);

    // Store at site 1, read at site 2.
    expect(await stowTo(gw1, [FILES[0]])).toBe(200);
    const study = (await snapshot(gw1)).values().next().value!.study;
    const t0 = Date.now();
    let seen = false;
    while (!seen && Date.now() - t0 < LAG_MS) {
      const r = await fetch(`${gw2.url}/projects/bk/dicom-web/studies?StudyInstanceUID=${study}`, {
        headers: { accept: 'application/dicom+json' },
      });
      seen = r.status === 200 && ((await r.json()) as unknown[]).length === 1;
      if (!seen) await new Promise((r2) => setTimeout(r2, 100));
    }
    expect(seen).toBe(true);

    // Storage sync: site 2's disk gets every file its replicated Orthanc index names, fetched from site 1's Orthanc.
    const syncEnv = {
      DATABASE_URL: site2Db,
      ORTHANC_STORAGE_DIR: storage2,
      STORAGE_SYNC_SOURCE_URL: stack.env.ORTHANC_URL,
      STORAGE_SYNC_SOURCE_USERNAME: stack.env.ORTHANC_USERNAME,
      STORAGE_SYNC_SOURCE_PASSWORD: stack.env.ORTHANC_PASSWORD,
      STORAGE_SYNC_INTERVAL_MS: '200',
    };
    const storage1 = join(stack.dir, 'orthanc/storage');
    const files1 = filesUnder(storage1);
    expect(files1.length).toBeGreaterThan(0);
    const pass1 = await cli(syncEnv, ['storage-sync', '--once', '--json']);
    expect(pass1).toMatchObject({ code: 0 });
    expect(JSON.parse(pass1.stdout)).toMatchObject({
      indexedFiles: files1.length,
      presentFiles: 0,
      copiedFiles: files1.length,
      failedFiles: 0,
    });
    for (const f of files1)
      expect(md5(readFileSync(join(storage2, f)))).toBe(md5(readFileSync(join(storage1, f))));
    // Idempotent: a second pass finds everything in place and copies nothing.
    const pass2 = await cli(syncEnv, ['storage-sync', '--once', '--json']);
    expect(JSON.parse(pass2.stdout)).toMatchObject({ presentFiles: files1.length, copiedFiles: 0 });
    const syncMetrics = await (await fetch(`${gw2.url}/metrics`)).text();
    expect(syncMetrics).toMatch(/^aperture_storage_sync_backlog_files 0$/m);
    expect(syncMetrics).toMatch(/^aperture_storage_sync_corrupt_files 0$/m);
    expect(await (await fetch(`${gw2.url}/readyz`)).json()).toMatchObject({
      storageSync: { backlogFiles: 0, corruptFiles: 0, running: false },
    });

    // A copy at site 2 goes bad on disk (same size, one byte flipped): the verify pass finds it and fetches it again.
    const victim = files1[0];
    const bad = readFileSync(join(storage2, victim));
    bad[bad.length - 3] ^= 0xff;
    writeFileSync(join(storage2, victim), bad);
    const plain = await cli(syncEnv, ['storage-sync', '--once', '--json']);
    // Without --verify only sizes are checked (a stat per file), so the flipped byte is not seen.
    expect(JSON.parse(plain.stdout)).toMatchObject({ copiedFiles: 0, corruptFiles: 0 });
    const verified = await cli(syncEnv, ['storage-sync', '--once', '--verify', '--json']);
    expect(verified.code).toBe(2);
    expect(JSON.parse(verified.stdout)).toMatchObject({
      corruptFiles: 1,
      copiedFiles: 1,
      failedFiles: 0,
      differences: [{ uuid: basename(victim), problem: 'corrupt-copy' }],
    });
    expect(md5(readFileSync(join(storage2, victim)))).toBe(md5(readFileSync(join(storage1, victim))));
    expect(await (await fetch(`${gw2.url}/metrics`)).text()).toMatch(
      /^aperture_storage_sync_corrupt_files 1$/m,
    );

    // The sync loop, as site 2 runs it: new objects stored at site 1 reach site 2's disk.
    syncLoop = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/index.ts'), 'storage-sync'], {
      cwd: ROOT,
      env: { ...process.env, ...syncEnv, LOG_LEVEL: 'warn' },
      stdio: 'ignore',
    });
    expect(await stowTo(gw1, [FILES[2], FILES[3]])).toBe(200);
    await untilSynced(storage1, storage2, 30_000);

    // Writes at the standby site: refused with the reason, before anything is stored.
    const refused = await fetch(`${gw2.url}/projects/bk/dicom-web/studies`, {
      method: 'POST',
      headers: { 'content-type': `multipart/related; type="application/dicom"; boundary=${BOUNDARY}` },
      body: multipart([FILES[1]]),
    });
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(await refused.text()).toMatch(/read-only standby/);
    expect(await (await fetch(`${gw2.url}/readyz`)).json()).toMatchObject({
      status: 'ready',
      site: { role: 'standby' },
    });
    expect(await (await fetch(`${gw1.url}/readyz`)).json()).toMatchObject({
      site: { role: 'primary', standbys: 1 },
    });
    const metrics = await (await fetch(`${gw2.url}/metrics`)).text();
    expect(metrics).toMatch(/^aperture_site_standby 1$/m);
    expect(metrics).toMatch(/^aperture_replication_lag_bytes \d+$/m);

    // Cut the link (site 2's PostgreSQL gone): under synchronous replication a write at site 1 waits.
    await stopCluster(data);
    standbyUp = false;
    let settled: number | undefined;
    const pending = stowTo(gw1, [FILES[1]]).then((status) => (settled = status));
    await new Promise((r) => setTimeout(r, 3000));
    expect(settled).toBeUndefined();
    // Link back: the write completes, acknowledged only now.
    await startStandby();
    expect(await pending).toBe(200);
    const acked = await snapshot(gw1);
    expect(acked.size).toBe(4);

    // The object stored during the cut reaches site 2's disk too, before site 1 is lost.
    await untilSynced(join(stack.dir, 'orthanc/storage'), storage2, 30_000);
    syncLoop.kill('SIGTERM');
    syncLoop = undefined;

    // Failover. While site 1's PostgreSQL still answers as a primary, the command refuses (two writers).
    const failoverEnv = { DATABASE_URL: site2Db, ORTHANC_STORAGE_DIR: storage2 };
    const fenced = await cli(failoverEnv, ['failover', '--old-primary', stack.env.DATABASE_URL, '--json']);
    expect(fenced.code).toBe(1);
    expect(fenced.stderr).toMatch(/still answers as a primary/);
    // Failback refuses as well while site 1 accepts writes (and before it touches the folder).
    const pg1 = join(stack.dir, 'pg');
    const early = await cli({ DATABASE_URL: stack.env.DATABASE_URL }, [
      ...['failback', '--pgdata', pg1, '--new-primary', site2Db, '--name', 'site1'],
    ]);
    expect(early.code).toBe(1);
    expect(early.stderr).toMatch(/still running|still answers as a primary/);
    // Site 1 is lost.
    await gw1.close();
    gw1 = undefined;
    await stack.kill('postgres');
    const failover = await cli(failoverEnv, [
      'failover',
      '--old-primary',
      stack.env.DATABASE_URL,
      '--gateway-url',
      gw2.url,
      '--json',
    ]);
    expect(failover).toMatchObject({ code: 0 });
    expect(JSON.parse(failover.stdout)).toMatchObject({
      promoted: true,
      wasPrimary: false,
      oldPrimary: 'down',
      storage: { missingFiles: 0 },
      gateway: { role: 'primary' },
    });
    expect(await (await fetch(`${gw2.url}/readyz`)).json()).toMatchObject({ site: { role: 'primary' } });

    // Site 2's own Orthanc, on the promoted index and the synced files (it cannot start on a standby).
    const up = await run('bash', [STACK, 'up'], {
      env: (site2StackEnv = { ...process.env, ...(await freshStackEnv(tmp)), PG_PORT: port2 }),
      timeout: 300_000,
      encoding: 'utf8',
    });
    const site2 = parseStackEnv(up.stdout);
    const check = await cli({ ...failoverEnv, ...site2 }, ['failover', '--orthanc', '--json']);
    expect(check).toMatchObject({ code: 0 });
    expect(JSON.parse(check.stdout)).toMatchObject({
      promoted: false,
      wasPrimary: true,
      orthanc: { up: true, instances: acked.size, indexedInstances: acked.size },
    });
    // A gateway on site 2's own archive: writable, and every acknowledged instance byte-identical.
    await gw2.stop();
    gw2 = undefined;
    gw3 = await spawnGateway(await freePort(), {
      ...site2,
      ORTHANC_STORAGE_DIR: storage2,
      INDEXER_ENABLED: 'false',
      LOG_LEVEL: 'warn',
    });
    const atSite2 = await snapshot(gw3);
    expect([...atSite2.keys()].sort()).toEqual([...acked.keys()].sort());
    for (const [sop, v] of acked) expect(md5(atSite2.get(sop)!.bytes)).toBe(md5(v.bytes));
    expect(await stowTo(gw3, [LATE])).toBe(200);

    // Failback: site 1's old folder becomes a standby of site 2. pg_rewind needs wal_log_hints or data checksums,
    // which scripts/stack.sh's clusters do not have: the command says so and re-seeds with a base backup instead.
    const back = await cli({ DATABASE_URL: stack.env.DATABASE_URL }, [
      ...['failback', '--pgdata', pg1, '--new-primary', site2Db, '--name', 'site1', '--json'],
    ]);
    expect(back).toMatchObject({ code: 0 });
    const backReport = JSON.parse(back.stdout) as {
      method: string;
      rewindError?: string;
      keptOldFolder: string;
    };
    expect(backReport).toMatchObject({ method: 'basebackup' });
    expect(backReport.rewindError).toMatch(/wal_log_hints|checksums/);
    expect(existsSync(join(backReport.keptOldFolder, 'PG_VERSION'))).toBe(true);
    expect(existsSync(join(pg1, 'standby.signal'))).toBe(true);
    await startCluster({ dataDir: pg1, port: primary.port, socketDir: tmp, logFile: join(tmp, 'site1.log') });
    site1StandbyUp = true;
    const site1Count = async () =>
      Number(
        (
          await run(
            join(PG_BIN, 'psql'),
            ['-h', '127.0.0.1', '-p', primary.port, '-U', 'aperture', '-d', 'aperture', '-tAc'].concat(
              "SELECT pg_is_in_recovery()::text || ' ' || count(*) FROM instances",
            ),
            { encoding: 'utf8' },
          )
        ).stdout
          .trim()
          .replace(/^true /, ''),
      );
    const untilCount = async (n: number) => {
      const t0 = Date.now();
      while ((await site1Count().catch(() => -1)) !== n) {
        if (Date.now() - t0 > 30_000) throw new Error(`site 1 did not reach ${n} instances as a standby`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    // A standby of site 2 (the count parses only while pg_is_in_recovery() is true), with site 2's latest write.
    await untilCount(acked.size + 1);

    // The storage sync the other way round: site 1 gets the files site 2's index names, from site 2's Orthanc.
    const backEnv = {
      DATABASE_URL: stack.env.DATABASE_URL,
      ORTHANC_STORAGE_DIR: storage1,
      STORAGE_SYNC_SOURCE_URL: site2.ORTHANC_URL,
      STORAGE_SYNC_SOURCE_USERNAME: site2.ORTHANC_USERNAME,
      STORAGE_SYNC_SOURCE_PASSWORD: site2.ORTHANC_PASSWORD,
      STORAGE_SYNC_PRUNE_GRACE_MS: '0',
      STORAGE_SYNC_CHANGES_LOOKBACK: '0',
    };
    const full = await cli(backEnv, ['storage-sync', '--once', '--full', '--json']);
    expect(full).toMatchObject({ code: 0 });
    expect(JSON.parse(full.stdout)).toMatchObject({ mode: 'full', failedFiles: 0 });
    expect(JSON.parse(full.stdout).copiedFiles).toBeGreaterThanOrEqual(1);
    await untilSynced(storage2, storage1, 1000);

    // Incremental: a pass after one more STOW at site 2 looks only at the files of the new change log entries.
    const orthanc2 = (path: string, init: RequestInit = {}) =>
      fetch(`${site2.ORTHANC_URL}${path}`, {
        ...init,
        headers: {
          authorization: `Basic ${Buffer.from(`${site2.ORTHANC_USERNAME}:${site2.ORTHANC_PASSWORD}`).toString('base64')}`,
        },
      });
    const idsBefore = new Set((await (await orthanc2('/instances')).json()) as string[]);
    expect(await stowTo(gw3, [FILES[4]])).toBe(200);
    const added = ((await (await orthanc2('/instances')).json()) as string[]).filter(
      (i) => !idsBefore.has(i),
    );
    expect(added).toHaveLength(1);
    await untilCount(acked.size + 2);
    const inc = await cli(backEnv, ['storage-sync', '--once', '--json']);
    expect(inc).toMatchObject({ code: 0 });
    const incReport = JSON.parse(inc.stdout) as { mode: string; indexedFiles: number; copiedFiles: number };
    expect(incReport).toMatchObject({ mode: 'changes', copiedFiles: incReport.indexedFiles });
    expect(incReport.indexedFiles).toBeGreaterThanOrEqual(1);
    expect(incReport.indexedFiles).toBeLessThan(filesUnder(storage2).length);
    await untilSynced(storage2, storage1, 1000);

    // Deleted at site 2: once the deletion has replicated, a full pass at site 1 prunes its files (grace 0 here), and
    // site 1's folder holds exactly what site 2's does.
    expect((await orthanc2(`/instances/${added[0]}`, { method: 'DELETE' })).status).toBe(200);
    const t0p = Date.now();
    let pruned = 0;
    while (pruned === 0) {
      if (Date.now() - t0p > 30_000) throw new Error('the deleted file was not pruned at site 1');
      const p = await cli(backEnv, ['storage-sync', '--once', '--full', '--json']);
      pruned = (JSON.parse(p.stdout) as { prunedFiles: number }).prunedFiles;
    }
    expect(filesUnder(storage1)).toEqual(filesUnder(storage2));
  });
});

/** Files under a folder, as paths relative to it (Orthanc's storage: <2 hex>/<2 hex>/<uuid>). */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else if (!e.name.startsWith('.')) out.push(relative(dir, join(d, e.name)));
    }
  };
  if (existsSync(dir)) walk(dir);
  return out.sort();
}

/** Waits until every file of site 1's storage is at site 2, byte-identical. */
async function untilSynced(from: string, to: string, ms: number): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const want = filesUnder(from);
    const missing = want.filter(
      (f) => !existsSync(join(to, f)) || md5(readFileSync(join(to, f))) !== md5(readFileSync(join(from, f))),
    );
    if (missing.length === 0) return;
    if (Date.now() - t0 > ms)
      throw new Error(`not synced within ${ms} ms: ${missing.length} of ${want.length}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
