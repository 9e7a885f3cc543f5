import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Worker } from 'bullmq';
import { mintRunToken } from '../src/auth/run-tokens';
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import { initPipelineRunWorker } from '../src/jobs/pipeline-run';
import { cgroupSupport } from '../src/pipelines/runner';
import { generateInstances } from '../tools/synth';
import { type AuthStack, bearer, startAuthStack } from './helpers/auth';
import { spawnWorker, waitFor } from './helpers/dimse';
import { resetStack } from './helpers/gateway';

/**
 * Boutiques pipelines (issue 19) end to end, against the real stack: descriptors registered by a global admin, runs
 * started by a contributor, executed by the BullMQ worker in bubblewrap on copies fetched through the gateway's own
 * WADO-RS with a run token, results stored back by STOW-RS. Tools really run (dcm2niix, the pydicom threshold tool).
 */

const ROOT = join(__dirname, '..');
const SECRET = 'test-run-token-secret-0123456789abcdef';
const descriptor = (name: string) =>
  JSON.parse(readFileSync(join(ROOT, 'pipelines/descriptors', `${name}.json`), 'utf8')) as Record<
    string,
    unknown
  >;

interface RunView {
  id: string;
  state: string;
  phase: string;
  attempts: number;
  error: string | null;
  outputSeries: string[];
  artefacts?: Array<{ name: string; kind: string; bytes: number; sha256: string }>;
  files?: Array<{
    subject: string;
    id: string;
    path: string;
    sha256: string;
    size: number;
    mediaType: string;
  }>;
}

/** True while some process's command line names the run's folder (the sandbox binds it). */
function sandboxAlive(dir: string): boolean {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) return true;
    } catch {
      // gone meanwhile
    }
  }
  return false;
}

/** The run cgroups (v1 or v2) of this process's worker still on the host: none once a run has finished. */
function leftRunCgroups(): string[] {
  const left: string[] = [];
  const own = readFileSync('/proc/self/cgroup', 'utf8');
  for (const [controller, mount] of [
    ['memory', '/sys/fs/cgroup/memory'],
    ['pids', '/sys/fs/cgroup/pids'],
  ]) {
    const path = new RegExp(`^\\d+:[^:]*\\b${controller}\\b[^:]*:(.*)$`, 'm').exec(own)?.[1];
    if (path === undefined) continue;
    const dir = join(mount, path, 'aperture-runs', `worker-${process.pid}`);
    if (existsSync(dir))
      left.push(
        ...readdirSync(dir)
          .filter((n) => n.startsWith('run-'))
          .map((n) => join(dir, n)),
      );
  }
  return left;
}

describe('processing pipelines (Boutiques descriptors run sandboxed on authorised copies)', () => {
  let stack: AuthStack;
  let url: string;
  let carol: string; // global admin
  let bob: string; // contributor of demo
  let work: string;
  let hostDir: string; // a host folder no tool may read
  let filesDir: string; // the records' FileStore, shared by the gateway and the workers
  let worker: Worker | undefined;
  const mr = { study: '', series: '', count: 12 };
  const ct = { study: '', series: '' };

  const api = async (method: string, path: string, token: string, body?: unknown) => {
    const res = await fetch(`${url}${path}`, {
      method,
      headers: bearer(token, body === undefined ? {} : { 'content-type': 'application/json' }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: res.status, json: json as Record<string, unknown> & RunView & unknown[] };
  };

  const finished = (id: string, timeoutMs = 60_000) =>
    waitFor(
      `run ${id} to finish`,
      async () => {
        const r = await api('GET', `/api/projects/demo/runs/${id}`, bob);
        return ['succeeded', 'failed', 'cancelled'].includes(r.json.state) ? r.json : undefined;
      },
      timeoutMs,
      200,
    );

  const startRun = async (pipeline: string, params: Record<string, unknown>, series = [mr.series]) => {
    const r = await api('POST', '/api/projects/demo/runs', bob, { pipeline, params, series });
    expect(r.status).toBe(201);
    return r.json.id;
  };

  const seriesInDemo = async (): Promise<string[]> => {
    const r = await api('GET', `/projects/demo/dicom-web/studies/${mr.study}/series`, bob);
    return (r.json as unknown as Array<Record<string, { Value: string[] }>>).map(
      (s) => s['0020000E'].Value[0],
    );
  };

  beforeAll(async () => {
    await resetStack();
    work = mkdtempSync(join(tmpdir(), 'runs-'));
    hostDir = mkdtempSync(join(tmpdir(), 'host-'));
    filesDir = mkdtempSync(join(tmpdir(), 'record-files-'));
    stack = await startAuthStack({
      PIPELINE_RUN_TOKEN_SECRET: SECRET,
      PIPELINE_WORK_DIR: work,
      RECORDS_FILES_DIR: filesDir,
      // Low enough for the fork bomb to meet quickly, high enough for the threads of numpy and dcm2niix.
      PIPELINE_PIDS_MAX: '64',
    });
    url = stack.gw.url;
    const { db } = stack.gw.services;
    await ensureProject(db, { id: 'demo', name: 'Demo' });
    await ensureProject(db, { id: 'other', name: 'Other' });
    // One synthetic MR series of 12 slices and one CT series of the same study; a CT in another project.
    const mrs = [
      ...generateInstances({
        patients: 1,
        studiesPerPatient: 1,
        seriesPerStudy: 2,
        instancesPerSeries: mr.count,
        modalities: ['MR'],
        seed: 'pipelines',
      }),
    ];
    mr.study = mrs[0].studyInstanceUid;
    mr.series = mrs[0].seriesInstanceUid;
    ct.study = mrs[mrs.length - 1].studyInstanceUid;
    ct.series = mrs[mrs.length - 1].seriesInstanceUid;
    expect(ct.series).not.toBe(mr.series);
    for (const i of mrs)
      expect((await ingestInstance(stack.gw.services, i.buffer, ['demo'], 'stow')).ok).toBe(true);
    for (const i of generateInstances({
      patients: 1,
      instancesPerSeries: 2,
      modalities: ['CT'],
      seed: 'other',
    }))
      expect((await ingestInstance(stack.gw.services, i.buffer, ['other'], 'stow')).ok).toBe(true);
    carol = await stack.issuer.userToken('carol');
    bob = await stack.issuer.userToken('bob');
    worker = startWorker();
  }, 120_000);

  const startWorker = (overrides: Partial<typeof stack.gw.config> = {}) =>
    initPipelineRunWorker({
      db: stack.gw.services.db,
      logger: stack.gw.services.logger,
      config: { ...stack.gw.config, PIPELINE_GATEWAY_URL: url, ...overrides },
    });

  /** Kernel limits must be there: on a host without them this fails (in CI too), it does not skip. */
  const requireKernelLimits = async () => {
    const support = await cgroupSupport(stack.gw.config);
    if (!support.available)
      throw new Error(
        `these tests need kernel limits for tool runs and this host gives none: ${support.reason}. ` +
          'Run as root on a host with the cgroup v1 memory and pids hierarchies mounted read-write, or give the ' +
          'worker a delegated cgroup v2 folder in PIPELINE_CGROUP_DIR.',
      );
    if (support.version === 1 && !support.dirs.pids)
      throw new Error(
        'the cgroup v1 pids hierarchy is not mounted or not writable: pids.max cannot be tested',
      );
    return support;
  };

  afterAll(async () => {
    await worker?.close();
    await stack?.close();
    rmSync(work, { recursive: true, force: true });
    rmSync(hostDir, { recursive: true, force: true });
    rmSync(filesDir, { recursive: true, force: true });
  });

  it('registers versioned descriptors validated against the Boutiques schema (global admins only)', async () => {
    expect((await api('POST', '/api/pipelines', bob, descriptor('dcm2niix'))).status).toBe(403);
    const bad = await api('POST', '/api/pipelines', carol, {
      ...descriptor('dcm2niix'),
      'schema-version': '0.4',
    });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.json)).toMatch(/schema-version/);
    const noFile = { ...descriptor('threshold'), inputs: [{ id: 't', name: 'T', type: 'Number' }] };
    expect((await api('POST', '/api/pipelines', carol, noFile)).status).toBe(400);
    const v1 = await api('POST', '/api/pipelines', carol, descriptor('dcm2niix'));
    const v2 = await api('POST', '/api/pipelines', carol, descriptor('dcm2niix'));
    expect([v1.status, v1.json.version, v2.json.version]).toEqual([201, 1, 2]);
    expect((await api('POST', '/api/pipelines', carol, descriptor('threshold'))).status).toBe(201);
    const list = await api('GET', '/api/pipelines', bob);
    expect(
      (list.json as unknown as Array<{ name: string; version: number }>).map((p) => [p.name, p.version]),
    ).toEqual([
      ['dcm2niix', 2],
      ['threshold', 1],
    ]);
    // Parameters are checked against the descriptor; series outside the project do not exist for the run.
    const badParam = await api('POST', '/api/projects/demo/runs', bob, {
      pipeline: 'threshold',
      params: { threshold: 'high' },
      series: [mr.series],
    });
    expect([badParam.status, JSON.stringify(badParam.json)]).toEqual([400, expect.stringMatching(/number/)]);
    const elsewhere = await api('POST', '/api/projects/demo/runs', bob, {
      pipeline: 'threshold',
      params: { threshold: 1 },
      series: [mr.series, '1.2.3.4.5'],
    });
    expect(elsewhere.status).toBe(404);
  });

  it('dcm2niix on the MR series writes a NIfTI whose dimensions match the series, kept as an artefact', async () => {
    const id = await startRun('dcm2niix', {});
    const run = await finished(id);
    expect([run.state, run.error, run.attempts]).toEqual(['succeeded', null, 1]);
    const detail = await api('GET', `/api/projects/demo/runs/${id}`, bob);
    const names = detail.json.artefacts!.map((a) => a.name);
    const nii = names.find((n) => n.endsWith('.nii'));
    expect(nii).toBeDefined();
    expect(names).toEqual(
      expect.arrayContaining(['stdout.txt', 'stderr.txt', nii!.replace(/\.nii$/, '.json')]),
    );
    const res = await fetch(`${url}/api/projects/demo/runs/${id}/artefacts/${nii}`, { headers: bearer(bob) });
    expect(res.status).toBe(200);
    const hdr = Buffer.from(await res.arrayBuffer());
    // NIfTI-1 header: sizeof_hdr = 348, dim[0..3] at byte 40, magic "n+1" at 344.
    expect(hdr.readInt32LE(0)).toBe(348);
    expect(hdr.toString('latin1', 344, 347)).toBe('n+1');
    const dims = [1, 2, 3].map((k) => hdr.readInt16LE(40 + 2 * k));
    const meta = await api(
      'GET',
      `/projects/demo/dicom-web/studies/${mr.study}/series/${mr.series}/metadata`,
      bob,
    );
    const first = (meta.json as unknown as Array<Record<string, { Value: number[] }>>)[0];
    expect(dims).toEqual([first['00280011'].Value[0], first['00280010'].Value[0], mr.count]);
    const log = await fetch(`${url}/api/projects/demo/runs/${id}/artefacts/stdout.txt`, {
      headers: bearer(bob),
    });
    expect(await log.text()).toMatch(new RegExp(`Found ${mr.count} DICOM file`));
    // The private folder is gone.
    expect(existsSync(join(work, id))).toBe(false);
  });

  it("a run's NIfTI, JSON and logs become files of the input series' subject, downloadable with checksums", async () => {
    const id = await startRun('dcm2niix', {});
    const run = await finished(id);
    expect(run.state).toBe('succeeded');
    const detail = (await api('GET', `/api/projects/demo/runs/${id}`, bob)).json;
    const files = detail.files!;
    // One synthetic patient: every file hangs under one subject, under runs/<run id>/.
    const subjects = [...new Set(files.map((f) => f.subject))];
    expect(subjects).toHaveLength(1);
    const nii = detail.artefacts!.find((a) => a.name.endsWith('.nii'))!;
    expect(files.map((f) => f.path).sort()).toEqual(
      [
        `runs/${id}/${nii.name}`,
        `runs/${id}/${nii.name.replace(/\.nii$/, '.json')}`,
        `runs/${id}/logs/stderr.txt`,
        `runs/${id}/logs/stdout.txt`,
      ].sort(),
    );
    // The records API lists them like uploaded files, naming the run, with the same checksums as the artefacts.
    const listed = (await api('GET', `/api/projects/demo/subjects/${subjects[0]}/files`, bob))
      .json as unknown as Array<{
      id: string;
      path: string;
      sha256: string;
      size: number;
      media_type: string;
      run: string | null;
    }>;
    const mine = listed.filter((f) => f.path.startsWith(`runs/${id}/`));
    expect(mine).toHaveLength(4);
    for (const f of mine) expect(f.run).toBe(id);
    const niiFile = mine.find((f) => f.path.endsWith('.nii'))!;
    expect([niiFile.sha256, niiFile.size, niiFile.media_type]).toEqual([
      nii.sha256,
      nii.bytes,
      'application/x-nifti',
    ]);
    expect(mine.find((f) => f.path.endsWith('.json'))!.media_type).toBe('application/json');
    // Downloaded bytes hash to the listed SHA-256, and the NIfTI is the real one.
    for (const f of mine) {
      const res = await fetch(`${url}/api/projects/demo/subjects/${subjects[0]}/files/${f.id}`, {
        headers: bearer(bob),
      });
      expect(res.status).toBe(200);
      const body = Buffer.from(await res.arrayBuffer());
      expect(createHash('sha256').update(body).digest('hex')).toBe(f.sha256);
      expect(body.length).toBe(f.size);
      if (f.path.endsWith('.nii')) expect(body.toString('latin1', 344, 347)).toBe('n+1');
      if (f.path.endsWith('stdout.txt')) expect(body.toString()).toMatch(/Found \d+ DICOM file/);
    }
    // A user of another project sees neither the run nor the subject's files.
    const dave = await stack.issuer.userToken('dave');
    expect((await api('GET', `/api/projects/demo/subjects/${subjects[0]}/files`, dave)).status).toBe(404);
    // The worker audited the hand-over under the requester.
    const { db } = stack.gw.services;
    const audit = await db.query(
      `SELECT principal, detail FROM audit_events WHERE action = 'run.results' AND detail->>'run' = $1`,
      [id],
    );
    expect(audit.rows).toHaveLength(1);
    expect(audit.rows[0].detail).toMatchObject({ files: 4, pipeline: 'dcm2niix', subjects });
  });

  it('the threshold tool stores a derived series that is retrievable and references its source series', async () => {
    const before = await seriesInDemo();
    const run = await finished(await startRun('threshold', { threshold: 1 }));
    expect([run.state, run.outputSeries.length]).toEqual(['succeeded', 1]);
    const out = run.outputSeries[0];
    expect(before).not.toContain(out);
    expect(await seriesInDemo()).toContain(out);
    const meta = await api('GET', `/projects/demo/dicom-web/studies/${mr.study}/series/${out}/metadata`, bob);
    const instances = meta.json as unknown as Array<
      Record<string, { Value: Array<Record<string, { Value: string[] }> | string> }>
    >;
    expect(instances).toHaveLength(mr.count);
    for (const i of instances) {
      expect(i['00080016'].Value[0]).toBe('1.2.840.10008.5.1.4.1.1.7');
      const refSeries = i['00081115'].Value[0] as Record<string, { Value: string[] }>;
      expect(refSeries['0020000E'].Value[0]).toBe(mr.series);
      expect((i['00082112'].Value[0] as Record<string, { Value: string[] }>)['00081150'].Value[0]).toBe(
        '1.2.840.10008.5.1.4.1.1.4',
      );
    }
    const frame = await fetch(
      `${url}/projects/demo/dicom-web/studies/${mr.study}/series/${out}/instances/${
        instances[0]['00080018'].Value[0] as string
      }`,
      { headers: bearer(bob, { accept: 'multipart/related; type="application/dicom"' }) },
    );
    expect(frame.status).toBe(200);
  });

  it('a run token reads exactly its input series and writes only into its project', async () => {
    const token = await mintRunToken(
      SECRET,
      {
        runId: '00000000-0000-4000-8000-000000000001',
        projectId: 'demo',
        series: [{ studyUid: mr.study, seriesUid: mr.series }],
      },
      60,
    );
    const get = (path: string) => fetch(`${url}${path}`, { headers: bearer(token) });
    expect(
      (await get(`/projects/demo/dicom-web/studies/${mr.study}/series/${mr.series}/metadata`)).status,
    ).toBe(200);
    // Another series of the same study and project: 404, as for anything the caller cannot see.
    expect(
      (await get(`/projects/demo/dicom-web/studies/${ct.study}/series/${ct.series}/metadata`)).status,
    ).toBe(404);
    const union = (await (await get('/dicom-web/series')).json()) as Array<
      Record<string, { Value: string[] }>
    >;
    expect(union.map((s) => s['0020000E'].Value[0])).toEqual([mr.series]);
    // STOW into another project: 404; the API is closed to run tokens.
    const stow = await fetch(`${url}/projects/other/dicom-web/studies`, {
      method: 'POST',
      headers: bearer(token, { 'content-type': 'multipart/related; type="application/dicom"; boundary=x' }),
      body: '--x\r\nContent-Type: application/dicom\r\n\r\n\r\n--x--\r\n',
    });
    expect(stow.status).toBe(404);
    expect((await get('/api/projects/demo')).status).toBe(401);
    expect((await get('/api/projects/demo/runs')).status).toBe(401);
    const forged = await mintRunToken(
      'another-secret-of-at-least-32-bytes!!',
      { runId: 'x', projectId: 'demo', series: [] },
      60,
    );
    expect((await fetch(`${url}/dicom-web/studies`, { headers: bearer(forged) })).status).toBe(401);
  });

  it('a descriptor that reads outside its folder or reaches the network fails inside the sandbox', async () => {
    const secretFile = join(hostDir, 'host-secret.txt');
    writeFileSync(secretFile, 'not for tools');
    expect(readFileSync(secretFile, 'utf8')).toBe('not for tools');
    expect((await fetch(`${url}/healthz`)).status).toBe(200); // reachable from the host
    const { port } = new URL(url);
    const probe = (name: string, command: string) => ({
      name,
      'tool-version': '1',
      description: 'sandbox probe',
      'schema-version': '0.5',
      'command-line': `${command} [IN]`,
      inputs: [{ id: 'in', name: 'in', type: 'File', 'value-key': '[IN]' }],
    });
    for (const [name, command] of [
      ['read-host-file', `cat ${secretFile} > copy.txt; test -s copy.txt && echo`],
      ['read-relative', `cat ../../../${secretFile} > copy.txt; test -s copy.txt && echo`],
      ['write-usr', 'touch /usr/aperture-probe && echo'],
      [
        'reach-gateway',
        `python3 -c "import socket; socket.create_connection(('127.0.0.1', ${port}), timeout=3)" && echo`,
      ],
    ]) {
      expect((await api('POST', '/api/pipelines', carol, probe(name, command))).status).toBe(201);
      const run = await finished(await startRun(name, {}));
      expect({ name, state: run.state, error: run.error }).toEqual({
        name,
        state: 'failed',
        error: expect.stringMatching(/the tool exited [1-9]/),
      });
      // A failed run's logs stay run artefacts; nothing reaches the subject's files.
      expect((await api('GET', `/api/projects/demo/runs/${run.id}`, bob)).json.files).toEqual([]);
      const err = await fetch(`${url}/api/projects/demo/runs/${run.id}/artefacts/stderr.txt`, {
        headers: bearer(bob),
      });
      expect(await err.text()).toMatch(
        /No such file|Read-only file system|Connection refused|Network is unreachable/,
      );
    }
    expect(existsSync('/usr/aperture-probe')).toBe(false);
  });

  it('a tool that allocates past its memory limit is killed by the kernel: the run fails saying so, nothing kept', async () => {
    await requireKernelLimits();
    // suggested-resources.ram (GB) lowers the site's limit for this tool to 256 MiB.
    const hog = {
      name: 'memory-hog',
      'tool-version': '1',
      description: 'allocates [MB] MiB',
      'schema-version': '0.5',
      'command-line':
        'python3 -c "import sys; b = bytearray(int(sys.argv[1]) * 1024 * 1024); print(len(b))" [MB] [IN]',
      inputs: [
        { id: 'in', name: 'in', type: 'File', 'value-key': '[IN]' },
        {
          id: 'mb',
          name: 'MiB',
          type: 'Number',
          integer: true,
          minimum: 1,
          maximum: 4096,
          'value-key': '[MB]',
        },
      ],
      'suggested-resources': { ram: 0.25 },
    };
    expect((await api('POST', '/api/pipelines', carol, hog)).status).toBe(201);
    const before = await seriesInDemo();
    const big = await finished(await startRun('memory-hog', { mb: 1024 }));
    expect(big.state).toBe('failed');
    // The allocation itself succeeds (resident memory is not address space); the kernel kills the tool as it fills it.
    expect(big.error).toMatch(
      /^the tool exceeded its memory limit of 256 MiB and was killed by the kernel's OOM killer \(cgroup (memory\.max|memory\.limit_in_bytes)\); exited 137$/,
    );
    const err = await fetch(`${url}/api/projects/demo/runs/${big.id}/artefacts/stderr.txt`, {
      headers: bearer(bob),
    });
    expect(await err.text()).not.toMatch(/MemoryError/);
    expect((await api('GET', `/api/projects/demo/runs/${big.id}`, bob)).json.files).toEqual([]);
    expect(await seriesInDemo()).toEqual(before);
    expect(existsSync(join(work, big.id))).toBe(false);
    expect(leftRunCgroups()).toEqual([]);
    // Under the limit the same tool runs, on the same worker, right after.
    const small = await finished(await startRun('memory-hog', { mb: 32 }));
    expect([small.state, small.error]).toEqual(['succeeded', null]);
    const out = await fetch(`${url}/api/projects/demo/runs/${small.id}/artefacts/stdout.txt`, {
      headers: bearer(bob),
    });
    expect((await out.text()).trim()).toBe(String(32 * 1024 * 1024));

    // Without kernel limits (PIPELINE_CGROUP=off) the rlimit fallback: the allocation itself fails in the tool.
    await worker?.close();
    worker = startWorker({ PIPELINE_CGROUP: 'off' });
    try {
      const capped = await finished(await startRun('memory-hog', { mb: 1024 }));
      expect([capped.state, capped.error]).toEqual([
        'failed',
        'the tool ran out of memory: its limit is 256 MiB (address space, RLIMIT_AS); exited 1',
      ]);
      const stderr = await fetch(`${url}/api/projects/demo/runs/${capped.id}/artefacts/stderr.txt`, {
        headers: bearer(bob),
      });
      expect(await stderr.text()).toMatch(/MemoryError/);
    } finally {
      await worker.close();
      worker = startWorker();
    }
  });

  it('a fork bomb is stopped by the kernel at pids.max and the run fails saying so', async () => {
    await requireKernelLimits();
    // Every process forks as fast as it can and never exits; the first one reports the refusal and exits 1, which
    // ends the sandbox's pid namespace and with it every process of the bomb.
    const bomb = {
      name: 'fork-bomb',
      'tool-version': '1',
      description: 'forks without end',
      'schema-version': '0.5',
      'command-line': `python3 -c "${[
        'import os, sys, time',
        'first = os.getpid()',
        'n = 0',
        'while True:',
        '    try:',
        '        os.fork()',
        '        n += 1',
        '    except OSError as e:',
        '        if os.getpid() == first:',
        "            print('fork refused after', n, 'forks:', e.strerror, file=sys.stderr)",
        '            sys.exit(1)',
        '        time.sleep(0.05)',
      ].join('\n')}" [IN]`,
      inputs: [{ id: 'in', name: 'in', type: 'File', 'value-key': '[IN]' }],
    };
    expect((await api('POST', '/api/pipelines', carol, bomb)).status).toBe(201);
    const run = await finished(await startRun('fork-bomb', {}));
    expect([run.state, run.error]).toEqual([
      'failed',
      'the tool reached its limit of 64 processes: the kernel refused its forks (cgroup pids.max); exited 1',
    ]);
    const stderr = await fetch(`${url}/api/projects/demo/runs/${run.id}/artefacts/stderr.txt`, {
      headers: bearer(bob),
    });
    expect(await stderr.text()).toMatch(/^fork refused after \d+ forks: Resource temporarily unavailable$/m);
    // Nothing of the bomb is left running, and its cgroup is gone.
    await waitFor('the bomb to be gone', async () => !sandboxAlive(join(work, run.id)), 10_000, 100);
    expect(leftRunCgroups()).toEqual([]);
  });

  it('cancels a running run and retries it', async () => {
    const id = await startRun('threshold', { threshold: 1, delay: 30 });
    await waitFor(
      'the run to start',
      async () => (await api('GET', `/api/projects/demo/runs/${id}`, bob)).json.phase === 'running',
      30_000,
      200,
    );
    expect((await api('POST', `/api/projects/demo/runs/${id}/cancel`, bob)).status).toBe(202);
    const cancelled = await finished(id, 15_000);
    expect([cancelled.state, cancelled.outputSeries]).toEqual(['cancelled', []]);
    const alice = await stack.issuer.userToken('alice'); // a reader of demo
    expect((await api('POST', `/api/projects/demo/runs/${id}/retry`, alice)).status).toBe(403);
    expect((await api('POST', `/api/projects/demo/runs/${id}/retry`, bob)).status).toBe(202);
    await waitFor(
      'the retry to start',
      async () => (await api('GET', `/api/projects/demo/runs/${id}`, bob)).json.phase === 'running',
      30_000,
      200,
    );
    await api('POST', `/api/projects/demo/runs/${id}/cancel`, bob);
    expect((await finished(id, 15_000)).attempts).toBe(2);
  });

  it('a worker killed mid-run leaves no stored result, and the run completes on the next worker', async () => {
    await worker?.close();
    worker = undefined;
    const spawnPipelineWorker = async () =>
      (
        await spawnWorker({
          PIPELINE_RUN_TOKEN_SECRET: SECRET,
          PIPELINE_GATEWAY_URL: url,
          PIPELINE_WORK_DIR: work,
          RECORDS_FILES_DIR: filesDir,
        })
      ).child;
    const before = await seriesInDemo();
    const first = await spawnPipelineWorker();
    const id = await startRun('threshold', { threshold: 1, delay: 4 });
    await waitFor(
      'the tool to run',
      async () => (await api('GET', `/api/projects/demo/runs/${id}`, bob)).json.phase === 'running',
      60_000,
      100,
    );
    const exited = new Promise((r) => first.once('exit', r));
    first.kill('SIGKILL');
    await exited;
    // The sandbox dies with its worker (--die-with-parent), and nothing reached the project.
    await waitFor(
      'the sandbox to die with its worker',
      async () => !sandboxAlive(join(work, id)),
      10_000,
      100,
    );
    expect(await seriesInDemo()).toEqual(before);
    expect((await api('GET', `/api/projects/demo/runs/${id}`, bob)).json.state).toBe('running');
    const second = await spawnPipelineWorker();
    try {
      const run = await finished(id, 90_000);
      expect([run.state, run.attempts, run.outputSeries.length]).toEqual(['succeeded', 2, 1]);
      const after = await seriesInDemo();
      expect(after.filter((s) => !before.includes(s))).toEqual(run.outputSeries);
      const meta = await api(
        'GET',
        `/projects/demo/dicom-web/studies/${mr.study}/series/${run.outputSeries[0]}/metadata`,
        bob,
      );
      expect(meta.json).toHaveLength(mr.count);
    } finally {
      const gone = new Promise((r) => second.once('exit', r));
      second.kill('SIGTERM');
      await gone;
    }
  });
});
