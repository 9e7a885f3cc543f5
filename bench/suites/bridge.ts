/**
 * The PACS bridge (issue 14): retrieve throughput from a second Orthanc ("the clinical PACS", AE PACSB) into a
 * project through the gateway (a retrieve job: C-MOVE through the archive, arrivals indexed by the change feed and
 * linked to the project) vs Orthanc's own `/modalities/{id}/move` between the same two Orthancs, in the same run.
 * Both move equal-sized sets of studies (different studies, so neither finds the other's objects archived).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateInstances, groupByStudy } from '../../tools/synth';
import { freePort } from '../../tools/net';
import type { SuiteResult } from '../lib/report';
import { createProject, orthancAuth, parseEnv, type StackEnv, startGatewayProcess } from '../lib/stack';
import { msSince, round } from '../lib/stats';

const ROOT = join(__dirname, '../..');
const STUDIES = Number(process.env.BENCH_BRIDGE_STUDIES ?? 4);
const PER_STUDY = Number(process.env.BENCH_BRIDGE_INSTANCES ?? 50);

export async function run(stack: StackEnv): Promise<SuiteResult> {
  const tmp = mkdtempSync(join(tmpdir(), 'aperture-bench-bridge-'));
  const peerEnv = {
    ...process.env,
    STACK_DIR: tmp,
    ORTHANC_AET: 'PACSB',
    ORTHANC_HTTP_PORT: String(await freePort()),
    ORTHANC_DICOM_PORT: String(await freePort()),
  };
  const peer = parseEnv(
    execFileSync('bash', [join(ROOT, 'scripts/stack.sh'), 'orthanc'], { env: peerEnv, encoding: 'utf8' }),
  );
  const peerAuth = orthancAuth(peer);
  const ours = { url: stack.ORTHANC_URL, auth: orthancAuth(stack) };
  const gw = await startGatewayProcess(stack, await freePort(), {
    AUTH_ENABLED: 'false',
    INDEXER_ENABLED: 'true',
    INDEXER_POLL_MS: '100',
  });
  const worker = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/worker.ts')], {
    cwd: ROOT,
    env: { ...process.env, ...stack, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const loads: number[] = [loadavg()[0]];
  try {
    const req = (url: string, auth: string, method: string, body?: unknown) =>
      fetch(url, {
        method,
        headers: { authorization: auth, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    // The peer knows the archive as APERTURE (move destination); the archive knows the peer for its own move.
    await req(`${peer.ORTHANC_URL}/modalities/aperture`, peerAuth, 'PUT', {
      AET: 'APERTURE',
      Host: '127.0.0.1',
      Port: Number(stack.ORTHANC_DICOM_PORT),
      AllowFind: true,
      AllowMove: true,
    });
    await req(`${ours.url}/modalities/pacsb-direct`, ours.auth, 'PUT', {
      AET: 'PACSB',
      Host: '127.0.0.1',
      Port: Number(peer.ORTHANC_DICOM_PORT),
    });
    const studyUids: string[] = [];
    let bytes = 0;
    const gen = generateInstances({
      patients: 2 * STUDIES,
      studiesPerPatient: 1,
      seriesPerStudy: 1,
      instancesPerSeries: PER_STUDY,
      rows: 256,
      cols: 256,
      modalities: ['CT'],
      seed: 'bench-bridge',
    });
    for (const study of groupByStudy(gen)) {
      studyUids.push(study[0].studyInstanceUid);
      for (const inst of study) {
        bytes += inst.buffer.length;
        const r = await fetch(`${peer.ORTHANC_URL}/instances`, {
          method: 'POST',
          headers: { authorization: peerAuth },
          body: inst.buffer,
        });
        if (!r.ok) throw new Error(`loading the peer: HTTP ${r.status}`);
      }
    }
    const half = Math.floor(studyUids.length / 2);
    const direct = studyUids.slice(0, half);
    const bridged = studyUids.slice(half);
    const n = (uids: string[]) => uids.length * PER_STUDY;

    // Orthanc's own C-MOVE, study by study, as its REST API does it.
    let t = process.hrtime.bigint();
    for (const uid of direct) {
      const r = await req(`${ours.url}/modalities/pacsb-direct/move`, ours.auth, 'POST', {
        Level: 'Study',
        Resources: [{ StudyInstanceUID: uid }],
        TargetAet: 'APERTURE',
      });
      if (!r.ok) throw new Error(`Orthanc move: HTTP ${r.status} ${await r.text()}`);
      await r.arrayBuffer();
    }
    const orthancS = msSince(t) / 1000;
    loads.push(loadavg()[0]);

    await createProject(gw.url, 'bench-bridge', 'Bench bridge');
    const j = (method: string, path: string, body?: unknown) =>
      fetch(gw.url + path, {
        method,
        headers: { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    await (
      await j('PUT', '/api/nodes/pacsb', {
        aet: 'PACSB',
        host: '127.0.0.1',
        port: Number(peer.ORTHANC_DICOM_PORT),
        max_associations: 2,
      })
    ).arrayBuffer();
    t = process.hrtime.bigint();
    const created = (await (
      await j('POST', '/api/nodes/pacsb/retrieve', { project: 'bench-bridge', studies: bridged })
    ).json()) as { id: string };
    let state = '';
    let instances = 0;
    for (;;) {
      const r = (await (await j('GET', `/api/retrieves/${created.id}`)).json()) as {
        state: string;
        progress: { instances: number };
      };
      state = r.state;
      instances = r.progress.instances;
      if (!['queued', 'running'].includes(state)) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const gatewayS = msSince(t) / 1000;
    loads.push(loadavg()[0]);
    if (state !== 'done' || instances !== n(bridged))
      throw new Error(`bridge retrieve ended ${state} with ${instances} instances`);

    const gwRate = n(bridged) / gatewayS;
    const orRate = n(direct) / orthancS;
    return {
      suite: 'bridge',
      setup: `${STUDIES} studies of ${PER_STUDY} synthetic 256x256 CT instances (${round(bytes / 2 / 1024 / 1024)} MB per side) moved from a second Orthanc (AE PACSB) to the archive: through the gateway (POST /api/nodes/pacsb/retrieve, one job; done when every instance is indexed and linked to the project) vs Orthanc's own POST /modalities/{id}/move of the other ${STUDIES} studies, same run. Load average (1 min) during the run: ${loads.map((l) => round(l)).join(' → ')} on ${cpus().length} cores.`,
      rows: [
        {
          metric: 'retrieve throughput (C-MOVE study by study)',
          unit: 'instances/s',
          gateway: round(gwRate),
          orthanc: round(orRate),
          ratio: round(gwRate / orRate),
          ratioMeaning: 'gateway / Orthanc (higher is better)',
          note: `gateway ${round(gatewayS)} s for ${n(bridged)} instances incl. indexing; Orthanc ${round(orthancS)} s for ${n(direct)}`,
        },
      ],
    };
  } finally {
    worker.kill('SIGTERM');
    await gw.stop();
    execFileSync('bash', [join(ROOT, 'scripts/stack.sh'), 'down'], { env: peerEnv, stdio: 'ignore' });
    rmSync(tmp, { recursive: true, force: true });
  }
}
