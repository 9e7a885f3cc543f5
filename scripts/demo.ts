/**
 * `npm run demo`: the whole stack with sample data, in the foreground.
 *
 * scripts/demo.sh has installed npm dependencies and started PostgreSQL, Redis and Orthanc (.stack/dev). This
 * starts the local Keycloak-compatible issuer, the gateway and the job worker, creates the demo projects and a
 * routing rule, loads sample studies (STOW-RS for most, DIMSE C-STORE for one so routing shows), and prints the
 * URLs, tokens and curl lines to try. Ctrl-C stops the processes it started; the data stays in .stack/dev
 * (`npm run stack:down` stops the services, `bash scripts/stack.sh wipe` deletes everything).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { generateInstances } from '../tools/synth';
import { stowInstances } from '../tools/stow-client';
import { readEnvFile } from '../bench/lib/stack';
import { GATEWAY_NODE_FLAGS } from '../tools/gateway-node-flags';

const ROOT = join(__dirname, '..');
const SAMPLES = process.env.APERTURE_SAMPLES_DIR ?? join(ROOT, '../shared/dicom-samples');
const PORT = Number(process.env.PORT ?? 8080);
const ISSUER_PORT = Number(process.env.ISSUER_PORT ?? 8180);
const VIEWER_PORT = Number(process.env.VIEWER_PORT ?? 3000);
const GATEWAY = `http://127.0.0.1:${PORT}`;
const ISSUER = `http://127.0.0.1:${ISSUER_PORT}/realms/aperture`;

const children: ChildProcess[] = [];

function start(name: string, script: string, args: string[], env: Record<string, string>): ChildProcess {
  // `node --import tsx`, not the tsx CLI: signals then reach the program itself, not a wrapper.
  const flags = script === 'src/main.ts' ? GATEWAY_NODE_FLAGS : [];
  const child = spawn(process.execPath, [...flags, '--import', 'tsx', join(ROOT, script), ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const prefix = (line: string) => (line.trim() ? `[${name}] ${line}\n` : '');
  child.stdout!.on('data', (d: Buffer) => {
    if (process.env.DEMO_VERBOSE) process.stdout.write(d.toString().split('\n').map(prefix).join(''));
  });
  child.stderr!.on('data', (d: Buffer) =>
    process.stderr.write(d.toString().split('\n').map(prefix).join('')),
  );
  child.on('exit', (code, signal) => {
    if (!stopping) {
      console.error(`[demo] ${name} exited (${signal ?? code}); stopping the demo`);
      void stopAll(1);
    }
  });
  children.push(child);
  return child;
}

let stopping = false;
async function stopAll(code = 0): Promise<void> {
  if (stopping) return;
  stopping = true;
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  await Promise.all(
    children.map((c) => (c.exitCode !== null ? Promise.resolve() : new Promise((r) => c.once('exit', r)))),
  );
  console.log(
    '\n[demo] gateway, worker and issuer stopped; services keep running (npm run stack:down stops them).',
  );
  process.exit(code);
}

async function waitFor(url: string, what: string, seconds = 90): Promise<void> {
  for (let i = 0; i < seconds * 5; i++) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what} did not come up at ${url}`);
}

async function portInUse(port: number): Promise<boolean> {
  try {
    await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(1000) });
    return true;
  } catch (err) {
    return !/ECONNREFUSED/.test(String((err as { cause?: unknown }).cause ?? err));
  }
}

async function token(form: Record<string, string>): Promise<string> {
  const res = await fetch(`${ISSUER}/protocol/openid-connect/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form),
  });
  if (!res.ok) throw new Error(`token request failed: HTTP ${res.status}`);
  return ((await res.json()) as { access_token: string }).access_token;
}
const userToken = (username: string) =>
  token({ grant_type: 'password', client_id: 'aperture-viewer', username, password: `${username}-demo` });

async function api(method: string, path: string, bearer: string, body?: unknown): Promise<Response> {
  return fetch(`${GATEWAY}${path}`, {
    method,
    headers: { authorization: `Bearer ${bearer}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out;
}

async function loadSamples(scriptsToken: string, stack: Record<string, string>): Promise<void> {
  // A cross-section of real objects; UID-colliding variants of the same instance are left out on purpose.
  const picks = [
    'ct/CT_small.dcm',
    'ct/eCT_Supplemental_enhanced-2frames.dcm',
    'mr/MR_small.dcm',
    'mr/emri_small_enhanced-10frames.dcm',
    'us/examples_ybr_color_multiframe-jpeg.dcm',
    'us/US1_J2KR_jpeg2000-lossless.dcm',
    'sc/SC_rgb.dcm',
    'cr/RG3_J2KI_jpeg2000.dcm',
    'rt-sr-seg/TCGA-GBM_DicomSeg_96frames.dcm',
    'rt-sr-seg/test-SR_comprehensive.dcm',
    'charset/chrGerm.dcm',
    'charset/chrH31.dcm',
  ].map((p) => join(SAMPLES, p));
  const files = [...filesUnder(join(SAMPLES, 'hierarchy')), ...picks].filter((f) => {
    try {
      return statSync(f).isFile();
    } catch {
      return false;
    }
  });
  const real = await stowInstances(
    files.map((f) => readFileSync(f)),
    { baseUrl: `${GATEWAY}/projects/demo/dicom-web`, token: scriptsToken, batch: 8 },
  );
  console.log(
    `[demo] STOW-RS: ${real.instances} sample objects into project 'demo' (${JSON.stringify(real.statuses)})`,
  );

  const synthetic = await stowInstances(
    generateInstances({
      patients: 6,
      studiesPerPatient: 2,
      seriesPerStudy: 2,
      instancesPerSeries: 12,
      rows: 128,
      cols: 128,
      seed: 'aperture-demo',
    }),
    { baseUrl: `${GATEWAY}/projects/demo/dicom-web`, token: scriptsToken, batch: 'study', concurrency: 2 },
  );
  console.log(
    `[demo] STOW-RS: ${synthetic.instances} synthetic CT/MR/CR images (${synthetic.requests} studies) into 'demo'`,
  );

  // One study arrives like a modality would send it: C-STORE to called AE LUNGSTUDY, routed to 'lung-study'.
  try {
    execFileSync(
      'dcmsend',
      [
        '-aet',
        'CTSCANNER',
        '-aec',
        'LUNGSTUDY',
        '127.0.0.1',
        stack.ORTHANC_DICOM_PORT,
        join(SAMPLES, 'ct/LCTSC-CT01.dcm'),
        join(SAMPLES, 'rt-sr-seg/LCTSC-RTSTRUCT.dcm'),
      ],
      { stdio: 'ignore' },
    );
    console.log(
      `[demo] C-STORE: 2 objects to AE LUNGSTUDY on port ${stack.ORTHANC_DICOM_PORT} (routed to 'lung-study')`,
    );
  } catch {
    console.log('[demo] dcmsend not available or failed; skipped the C-STORE example');
  }
}

/**
 * pipelines (issue 19): registers the shipped Boutiques descriptors (pipelines/descriptors: dcm2niix and the
 * threshold tool) once; a restarted demo finds them registered and adds no new version.
 */
async function registerPipelines(admin: string): Promise<void> {
  const dir = join(ROOT, 'pipelines/descriptors');
  const known = (await (await api('GET', '/api/pipelines', admin)).json()) as Array<{ name: string }>;
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.json'))) {
    const descriptor = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { name: string };
    if (known.some((p) => p.name === descriptor.name)) continue;
    const res = await api('POST', '/api/pipelines', admin, descriptor);
    if (res.status !== 201) throw new Error(`registering pipeline ${descriptor.name}: HTTP ${res.status}`);
    console.log(`[demo] pipeline ${descriptor.name} registered`);
  }
}

async function main(): Promise<void> {
  const stack = readEnvFile(join(ROOT, '.stack/dev/env'));
  if (await portInUse(PORT))
    throw new Error(`port ${PORT} is busy (is a demo already running?); set PORT=...`);

  start(
    'issuer',
    'tools/oidc-issuer/issuer.ts',
    ['--port', String(ISSUER_PORT), '--token-lifetime', '3600'],
    {},
  );
  await waitFor(`${ISSUER}/.well-known/openid-configuration`, 'OIDC issuer');
  const gatewayEnv = {
    ...stack,
    PORT: String(PORT),
    AUTH_ENABLED: 'true',
    OIDC_ISSUER: ISSUER,
    INDEXER_ENABLED: 'true',
    CORS_ORIGINS: `http://localhost:${VIEWER_PORT},http://127.0.0.1:${VIEWER_PORT}`,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
    // pipelines (issue 19): the run-token key gateway and worker share, and where the worker finds the gateway.
    PIPELINE_RUN_TOKEN_SECRET: process.env.PIPELINE_RUN_TOKEN_SECRET ?? randomBytes(32).toString('hex'),
    PIPELINE_GATEWAY_URL: GATEWAY,
  };
  start('gateway', 'src/main.ts', [], gatewayEnv);
  start('worker', 'src/worker.ts', [], gatewayEnv);
  await waitFor(`${GATEWAY}/healthz`, 'gateway');

  const admin = await userToken('carol');
  for (const p of [
    { id: 'demo', name: 'Demo', description: 'Public sample data and synthetic studies' },
    { id: 'lung-study', name: 'Lung study', description: 'Routed from modalities calling AE LUNGSTUDY' },
  ]) {
    const res = await api('POST', '/api/projects', admin, p);
    if (res.status !== 201 && res.status !== 409)
      throw new Error(`creating project ${p.id}: HTTP ${res.status}`);
  }
  const rules = (await (await api('GET', '/api/projects/lung-study/routing', admin)).json()) as unknown[];
  if (Array.isArray(rules) && rules.length === 0) {
    await api('POST', '/api/projects/lung-study/routing', admin, { kind: 'called_aet', value: 'LUNGSTUDY' });
  }
  const scripts = await token({
    grant_type: 'client_credentials',
    client_id: 'aperture-scripts',
    client_secret: 'aperture-scripts-demo-secret',
  });
  const projects = (await (await api('GET', '/api/projects', admin)).json()) as Array<{
    id: string;
    num_studies: number;
  }>;
  if ((projects.find((p) => p.id === 'demo')?.num_studies ?? 0) === 0) {
    await loadSamples(scripts, stack);
  } else {
    console.log('[demo] sample data already loaded (bash scripts/stack.sh wipe starts over)');
  }

  await registerPipelines(admin);

  const alice = await userToken('alice');
  const bob = await userToken('bob');
  console.log(`
Aperture demo is running.

  Gateway            ${GATEWAY}   (DICOMweb roots: /projects/{project}/dicom-web and /dicom-web)
  OIDC issuer        ${ISSUER}   (Keycloak-compatible, realm from keycloak/realm-export.json)
  Orthanc DICOM port ${stack.ORTHANC_DICOM_PORT}   (any called AE; AE LUNGSTUDY routes to project lung-study)
  Orthanc REST       ${stack.ORTHANC_URL}   (loopback only, password in .stack/dev/env; the gateway is the door)

Demo users (password = <name>-demo): alice (reader of demo, curator of lung-study), bob (contributor of demo),
carol (global admin), dave (admin of lung-study), erin (reader of demo); service account aperture-scripts.

Tokens valid for one hour:
  export ALICE=${alice}
  export BOB=${bob}
  export CAROL=${admin}

Try:
  curl -s -H "Authorization: Bearer $ALICE" '${GATEWAY}/projects/demo/dicom-web/studies?limit=5' | head -c 600; echo
  curl -s -H "Authorization: Bearer $ALICE" '${GATEWAY}/dicom-web/studies?PatientName=doe*&fuzzymatching=true&includefield=all' | head -c 600; echo
  curl -s -H "Authorization: Bearer $CAROL" ${GATEWAY}/api/projects
  curl -s -H "Authorization: Bearer $BOB" ${GATEWAY}/api/pipelines | head -c 300; echo
  npm run synth -- --patients 2 --stow ${GATEWAY}/projects/demo/dicom-web --token "$BOB"
  dcmsend -aec LUNGSTUDY 127.0.0.1 ${stack.ORTHANC_DICOM_PORT} some-file.dcm
  A fresh token: curl -s ${ISSUER}/protocol/openid-connect/token -d grant_type=password -d client_id=aperture-viewer -d username=alice -d password=alice-demo

Web application: ${GATEWAY}/ (log in as a demo user; studies open in OHIF under ${GATEWAY}/viewer/).
Standalone viewer: npx tsx scripts/viewer.ts serves OHIF on http://127.0.0.1:${VIEWER_PORT} against this gateway (see README).
Ctrl-C stops the gateway, worker and issuer.
`);
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));
}

main().catch((err) => {
  console.error(`[demo] ${err instanceof Error ? err.message : err}`);
  void stopAll(1);
});
