import Ajv2019 from 'ajv/dist/2019';
import addFormats from 'ajv-formats';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as appsV1 from 'kubernetes-models/apps/v1';
import * as networkingV1 from 'kubernetes-models/networking.k8s.io/v1';
import * as policyV1 from 'kubernetes-models/policy/v1';
import * as coreV1 from 'kubernetes-models/v1';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { GATEWAY_NODE_FLAGS } from '../tools/gateway-node-flags';

/**
 * The deployment artefacts, validated with real tooling: the compose file against the Compose Specification's JSON
 * schema (compose/schema/, vendored), the reverse proxy's configuration with `haproxy -c`, the image's Dockerfile by
 * a lint of what the production image may contain, and the Kubernetes manifests against the Kubernetes API schemas
 * (kubernetes-models), plus the rules no schema expresses (health checks, what is published, who reaches Orthanc).
 * Nothing here needs a container engine or a cluster: none is available where the tests run.
 */

const ROOT = join(__dirname, '..');
const COMPOSE_DIR = join(ROOT, 'compose');
const read = (p: string) => readFileSync(join(ROOT, p), 'utf8');

type Obj = Record<string, unknown>;
const asObj = (v: unknown): Obj => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});
const asArr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

// ---------- Compose ----------

/** What compose does to `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}` and `$$`. */
function interpolate(value: string, env: Record<string, string | undefined>): string {
  return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}/g, (m, name, op, arg) => {
    if (m === '$$') return '$';
    const v = env[name as string];
    const unset = v === undefined || (op?.startsWith(':') && v === '');
    if (op?.endsWith('?') && unset) throw new Error(`required variable ${name} is missing: ${arg}`);
    if (op?.endsWith('-') && unset) return arg as string;
    return v ?? '';
  });
}

function interpolateTree(v: unknown, env: Record<string, string | undefined>): unknown {
  if (typeof v === 'string') return interpolate(v, env);
  if (Array.isArray(v)) return v.map((x) => interpolateTree(x, env));
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, interpolateTree(x, env)]));
  }
  return v;
}

const composeText = read('compose/docker-compose.yml');
/** Variables compose asks for with `${VAR:?…}`, i.e. that have no default. */
const requiredVars = [...new Set([...composeText.matchAll(/\$\{([A-Z0-9_]+):\?/g)].map((m) => m[1]))];
/** Every required variable set, as a filled-in `.env` would. */
const filledEnv = Object.fromEntries(requiredVars.map((v) => [v, `test-${v.toLowerCase()}`]));

function loadCompose(env: Record<string, string | undefined> = filledEnv): Obj {
  return asObj(interpolateTree(parseYaml(composeText, { merge: true }), env));
}

function composeValidator() {
  // This revision still carries draft-04 `id` members (fragment names no $ref uses); ajv, strict about 2019-09,
  // refuses them, so they are dropped on load. Every $ref is a JSON pointer and resolves the same without them.
  const schema = JSON.parse(
    readFileSync(join(COMPOSE_DIR, 'schema/compose-spec.json'), 'utf8'),
    (key, v: unknown) =>
      key === 'id' && typeof v === 'string' && (v.startsWith('#') || v.endsWith('.json')) ? undefined : v,
  ) as Obj;
  // The schema names its own formats (compose's loader checks them in Go); their syntax is checked below instead.
  const ajv = new Ajv2019({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addFormat('expose', /^\d+(-\d+)?(\/(tcp|udp))?$/);
  ajv.addFormat('ports', true);
  ajv.addFormat('duration', /^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$/);
  return ajv.compile(schema);
}

const services = () => asObj(loadCompose().services);
const service = (name: string) => asObj(services()[name]);

/** Published `ports` entries as { host, container }. */
function publishedPorts(svc: Obj): { host: string; container: string }[] {
  return asArr(svc.ports).map((p) => {
    if (typeof p === 'object' && p) {
      const o = p as Obj;
      return { host: String(o.published ?? ''), container: String(o.target) };
    }
    const parts = String(p).split('/')[0].split(':');
    return { host: parts.length > 1 ? parts[parts.length - 2] : '', container: parts[parts.length - 1] };
  });
}

describe('compose stack (compose/docker-compose.yml)', () => {
  const validate = composeValidator();

  it('validates against the Compose Specification JSON schema', () => {
    const ok = validate(loadCompose());
    expect(validate.errors ?? []).toEqual([]);
    expect(ok).toBe(true);
  });

  it('the schema validator rejects a malformed service (unknown key, wrong type)', () => {
    const broken = loadCompose();
    asObj(broken.services).gateway = { ...service('gateway'), restartt: 'always', healthcheck: { test: 5 } };
    expect(validate(broken)).toBe(false);
    const messages = (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);
    expect(messages.join('\n')).toMatch(/additional properties/);
    expect(messages.join('\n')).toMatch(/healthcheck\/test/);
  });

  it('every service has a health check', () => {
    for (const [name, svc] of Object.entries(services())) {
      const hc = asObj(asObj(svc).healthcheck);
      expect({ name, test: asArr(hc.test).length > 1, disabled: hc.disable === true }).toEqual({
        name,
        test: true,
        disabled: false,
      });
    }
  });

  it('never publishes Orthanc REST, PostgreSQL or Redis on the host; only the proxy serves HTTP(S)', () => {
    const published = Object.entries(services()).flatMap(([name, s]) =>
      publishedPorts(asObj(s)).map((p) => ({ name, ...p })),
    );
    expect(published.filter((p) => ['8042', '5432', '6379'].includes(p.container))).toEqual([]);
    expect(published.filter((p) => p.name === 'orthanc').map((p) => p.container)).toEqual(['4242']);
    expect(published.filter((p) => !['orthanc', 'proxy'].includes(p.name))).toEqual([]);
    // The archive's REST API sits on the internal network only.
    expect(asArr(service('orthanc').networks).sort()).toEqual(['backend', 'dimse']);
    expect(asObj(asObj(loadCompose().networks).backend).internal).toBe(true);
  });

  it('takes every secret from the environment with no default, and refuses to start without one', () => {
    const secretLike = /PASSWORD|SECRET|TOKEN|CERT_FILE/;
    const uses = [...composeText.matchAll(/\$\{([A-Z0-9_]+)([^}]*)\}/g)];
    const secretUses = uses.filter((m) => secretLike.test(m[1]));
    expect(secretUses.length).toBeGreaterThan(5);
    for (const m of secretUses)
      expect({ use: m[0], required: m[2].startsWith(':?') }).toEqual({ use: m[0], required: true });
    // No literal secret in any service's environment.
    for (const [name, svc] of Object.entries(asObj(parseYaml(composeText, { merge: true }).services))) {
      for (const [key, value] of Object.entries(asObj(asObj(svc).environment))) {
        if (secretLike.test(key) && !/_USERNAME$/.test(key)) {
          expect({ name, key, value: String(value).startsWith('${') }).toEqual({ name, key, value: true });
        }
      }
    }
    const { POSTGRES_PASSWORD: _omitted, ...withoutOne } = filledEnv;
    expect(() => loadCompose(withoutOne)).toThrow(/POSTGRES_PASSWORD/);
    // The env example names every variable that has no default, secrets left empty.
    const example = read('compose/.env.example');
    for (const v of requiredVars)
      expect({ v, listed: new RegExp(`^${v}=`, 'm').test(example) }).toEqual({ v, listed: true });
    for (const m of example.matchAll(/^([A-Z0-9_]*(?:PASSWORD|SECRET|TOKEN)[A-Z0-9_]*)=(.*)$/gm)) {
      expect({ key: m[1], value: m[2] }).toEqual({ key: m[1], value: '' });
    }
  });

  it('runs Redis with an append-only file and noeviction, as BullMQ requires', () => {
    const cmd = asArr(service('redis').command).map(String).join(' ');
    expect(cmd).toMatch(/--appendonly yes/);
    expect(cmd).toMatch(/--maxmemory-policy noeviction/);
    expect(asArr(service('redis').volumes).some((v) => String(v).endsWith(':/data'))).toBe(true);
  });

  it('runs two or more gateway and worker replicas, neither bound to a fixed host port', () => {
    for (const name of ['gateway', 'worker']) {
      const replicas = Number(asObj(service(name).deploy).replicas);
      expect({ name, replicas: replicas >= 2 }).toEqual({ name, replicas: true });
      expect(publishedPorts(service(name))).toEqual([]);
    }
    expect(asArr(service('worker').command)).toEqual(['node', 'dist/worker.js']);
    expect(asObj(service('worker').environment).INDEXER_ENABLED).toBe('false');
  });

  it('gives gateways and workers the run-token key and one shared FileStore volume; workers reach the gateway', () => {
    for (const name of ['gateway', 'worker']) {
      const env = asObj(service(name).environment);
      expect({ name, key: env.PIPELINE_RUN_TOKEN_SECRET }).toEqual({
        name,
        key: filledEnv.PIPELINE_RUN_TOKEN_SECRET,
      });
      expect(asArr(service(name).volumes)).toContain(`record-files:${String(env.RECORDS_FILES_DIR)}`);
    }
    expect(Object.keys(asObj(loadCompose().volumes))).toContain('record-files');
    const { PIPELINE_RUN_TOKEN_SECRET: _omitted, ...withoutKey } = filledEnv;
    expect(() => loadCompose(withoutKey)).toThrow(/PIPELINE_RUN_TOKEN_SECRET/);
    const worker = asObj(service('worker').environment);
    expect(String(worker.PIPELINE_GATEWAY_URL)).toMatch(/^http:\/\/gateway:8080$/);
    // bubblewrap needs user namespaces inside the worker's container: the one service without Docker's profiles.
    expect(asArr(service('worker').security_opt)).toEqual(['seccomp=unconfined', 'apparmor=unconfined']);
    expect(asArr(service('gateway').security_opt)).toEqual([]);
  });

  it('runs Orthanc on its PostgreSQL index with only that plugin (no DICOMweb on the request path)', () => {
    // orthanc.json allows // comments (Orthanc's reader does); none of its strings holds "//".
    const cfg = JSON.parse(read('compose/orthanc.json').replace(/^\s*\/\/.*$/gm, '')) as Obj;
    expect(cfg.Plugins).toEqual(['/usr/local/share/orthanc/plugins/libOrthancPostgreSQLIndex.so']);
    expect(asObj(cfg.PostgreSQL)).toMatchObject({
      EnableIndex: true,
      EnableStorage: false,
      Host: 'postgres',
      Lock: false,
    });
    expect(cfg.IndexDirectory).toBeUndefined();
    expect(read('compose/postgres-init/20-orthanc.sh')).toMatch(/CREATE DATABASE orthanc OWNER orthanc/);
    expect(asObj(service('orthanc').depends_on).postgres).toEqual({ condition: 'service_healthy' });
  });

  it('restarts an Orthanc that lost its PostgreSQL index: the health check reads the index, a watchdog exits (orthanc-watchdog.itest runs both)', () => {
    const orthanc = service('orthanc');
    // /statistics reads the index; /system would answer while every index call fails.
    expect(asArr(asObj(orthanc.healthcheck).test).join(' ')).toMatch(/GET \/statistics /);
    expect(asArr(orthanc.entrypoint)).toEqual(['bash', '/usr/local/bin/orthanc-watchdog.sh', 'Orthanc']);
    expect(asArr(orthanc.volumes)).toContain('./orthanc-watchdog.sh:/usr/local/bin/orthanc-watchdog.sh:ro');
    expect(orthanc.restart).toBe('unless-stopped');
    const syntax = spawnSync('bash', ['-n', join(COMPOSE_DIR, 'orthanc-watchdog.sh')], { encoding: 'utf8' });
    expect(syntax.stderr).toBe('');
    expect(syntax.status).toBe(0);
  });

  it('has Keycloak import the realm and report its health', () => {
    const kc = service('keycloak');
    expect(asArr(kc.command)).toEqual(expect.arrayContaining(['start', '--import-realm']));
    expect(
      asArr(kc.volumes).some((v) => /:\/opt\/keycloak\/data\/import\/[^:]+\.json(:ro)?$/.test(String(v))),
    ).toBe(true);
    expect(asObj(kc.environment).KC_HEALTH_ENABLED).toBe('true');
  });

  it('terminates TLS at an HAProxy whose configuration `haproxy -c` accepts', () => {
    const proxy = service('proxy');
    expect(String(proxy.image)).toMatch(/^haproxy:/);
    expect(publishedPorts(proxy).map((p) => p.container)).toContain('8443');
    expect(asArr(proxy.volumes)).toContain('./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro');
    const cfg = read('compose/haproxy.cfg');
    expect(cfg).toMatch(/bind :8443 ssl crt "\$\{TLS_CERT\}"/);
    expect(cfg).toMatch(/server-template gw \d+ gateway:8080/);

    const dir = mkdtempSync(join(tmpdir(), 'aperture-haproxy-'));
    try {
      const key = join(dir, 'key.pem');
      const cert = join(dir, 'cert.pem');
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'rsa:2048',
          '-nodes',
          '-keyout',
          key,
          '-out',
          cert,
          '-days',
          '1',
          '-subj',
          '/CN=pacs.test',
        ],
        { stdio: 'ignore' },
      );
      const pem = join(dir, 'aperture.pem');
      writeFileSync(pem, readFileSync(cert, 'utf8') + readFileSync(key, 'utf8'));
      const env = { ...process.env, TLS_CERT: pem, PUBLIC_HOST: 'pacs.test', KEYCLOAK_HOST: 'auth.test' };
      const good = spawnSync('haproxy', ['-c', '-f', join(COMPOSE_DIR, 'haproxy.cfg')], {
        env,
        encoding: 'utf8',
      });
      expect({ status: good.status, out: good.stdout + good.stderr }).toMatchObject({ status: 0 });
      // The same check refuses a broken file: it is a real parse, not a formality.
      const broken = join(dir, 'broken.cfg');
      writeFileSync(broken, cfg.replace('balance leastconn', 'balance leastconnections'));
      expect(spawnSync('haproxy', ['-c', '-f', broken], { env, encoding: 'utf8' }).status).not.toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------- Dockerfile ----------

interface Instruction {
  op: string;
  args: string;
}

/** Instructions of a Dockerfile grouped by stage (line continuations joined, comments dropped). */
function parseDockerfile(text: string): { name?: string; instructions: Instruction[] }[] {
  const lines = text.replace(/\\\r?\n/g, ' ').split(/\r?\n/);
  const stages: { name?: string; instructions: Instruction[] }[] = [];
  for (const raw of lines) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^(\w+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const op = m[1].toUpperCase();
    if (op === 'FROM') stages.push({ name: /\sAS\s+(\S+)/i.exec(m[2])?.[1], instructions: [] });
    stages[stages.length - 1]?.instructions.push({ op, args: m[2] });
  }
  return stages;
}

/** What must not be true of the production image; an empty list means the Dockerfile passes. */
function lintDockerfile(text: string, dockerignore: string): string[] {
  const problems: string[] = [];
  const stages = parseDockerfile(text);
  const final = stages[stages.length - 1];
  if (!final) return ['no FROM'];
  const users = final.instructions.filter((i) => i.op === 'USER');
  const user = users[users.length - 1]?.args.split(':')[0];
  if (!user) problems.push('final stage has no USER: it would run as root');
  else if (user === 'root' || user === '0') problems.push('final stage runs as root');
  else if (!/^\d+$/.test(user)) problems.push('USER is not numeric: runAsNonRoot cannot verify it');
  for (const st of stages) {
    for (const i of st.instructions) {
      if ((i.op === 'ENV' || i.op === 'ARG') && /PASSWORD|SECRET|TOKEN|KEY/i.test(i.args.split(/[=\s]/)[0])) {
        problems.push(`${i.op} ${i.args.split(/[=\s]/)[0]} bakes a secret into the image`);
      }
    }
  }
  for (const i of final.instructions) {
    if (i.op !== 'COPY' && i.op !== 'ADD') continue;
    if (/realm|keycloak|\.env\b|secret/i.test(i.args)) problems.push(`final stage copies ${i.args}`);
    const from = /--from=(\S+)/.exec(i.args)?.[1];
    if (/node_modules/.test(i.args)) {
      const source = stages.find((s) => s.name === from);
      const runs = (source?.instructions ?? []).filter((x) => x.op === 'RUN').map((x) => x.args);
      const prodOnly = runs.some((r) => /npm (ci|install|prune)\b[^&;]*--omit=dev/.test(r));
      const devInstall = runs.some((r) => /npm (ci|install)\b(?![^&;]*--omit=dev)/.test(r));
      if (!prodOnly || devInstall)
        problems.push(`node_modules come from stage ${from}, which installs dev dependencies`);
    } else if (!from && !/^(--\S+\s+)*package(-lock)?\.json/.test(i.args)) {
      problems.push(`final stage copies from the build context: ${i.args}`);
    }
  }
  const allowed = dockerignore.split('\n').filter((l) => l.startsWith('!'));
  if (!dockerignore.split('\n').includes('**'))
    problems.push('.dockerignore does not start from excluding everything');
  for (const a of allowed)
    if (/keycloak|realm|\.env|test/.test(a)) problems.push(`.dockerignore lets in ${a}`);
  return problems;
}

describe('production image (compose/gateway.Dockerfile)', () => {
  const dockerignore = read('compose/gateway.Dockerfile.dockerignore');

  it('runs as a numeric non-root user, with production dependencies only, no realm and no secrets', () => {
    expect(lintDockerfile(read('compose/gateway.Dockerfile'), dockerignore)).toEqual([]);
    // The gateway's Node flags (its heap bound) are spelled in each production launcher as tools/ says them.
    const argv = ['node', ...GATEWAY_NODE_FLAGS, 'dist/main.js'];
    expect(read('compose/gateway.Dockerfile').split('\n')).toContain(
      `CMD [${argv.map((a) => JSON.stringify(a)).join(', ')}]`,
    );
    expect(read('deploy/base/gateway.yaml')).toContain(`args: [${argv.map((a) => `'${a}'`).join(', ')}]`);
    const start = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts.start;
    expect(start).toContain(`node ${GATEWAY_NODE_FLAGS.join(' ')} --import tsx src/main.ts`);
  });

  it("carries the pipeline runner's Debian tools and the shipped tools, from a build stage", () => {
    const stages = parseDockerfile(read('compose/gateway.Dockerfile'));
    const final = stages[stages.length - 1].instructions;
    const installs = final
      .filter((i) => i.op === 'RUN')
      .map((i) => /apt-get install\s+(.*?)(&&|$)/.exec(i.args)?.[1] ?? '')
      .join(' ')
      .split(/\s+/);
    expect(installs).toEqual(
      expect.arrayContaining([
        '--no-install-recommends',
        'bubblewrap',
        'dcm2niix',
        'python3-pydicom',
        'python3-numpy',
      ]),
    );
    expect(final).toContainEqual({ op: 'COPY', args: '--from=build /app/pipelines pipelines' });
    for (const d of ['pipelines/bin', 'pipelines/descriptors'])
      expect(read('compose/gateway.Dockerfile.dockerignore').split('\n')).toContain(`!${d}`);
    // SHIPPED_TOOLS_DIR (dist/jobs/../../pipelines/bin) is where the image puts them.
    expect(read('src/jobs/pipeline-run.ts')).toMatch(/join\(__dirname, '\.\.\/\.\.\/pipelines\/bin'\)/);
  });

  it('the lint catches a root image that copies the demo realm and dev dependencies', () => {
    const bad = [
      'FROM node:20 AS build',
      'RUN npm ci',
      'FROM node:20',
      'ENV KEYCLOAK_ADMIN_PASSWORD=admin',
      'COPY --from=build /app/node_modules node_modules',
      'COPY keycloak keycloak',
      'CMD ["node", "dist/main.js"]',
    ].join('\n');
    const problems = lintDockerfile(bad, '**\n!src\n!keycloak\n');
    expect(problems).toEqual(
      expect.arrayContaining([
        'final stage has no USER: it would run as root',
        'ENV KEYCLOAK_ADMIN_PASSWORD bakes a secret into the image',
        'final stage copies keycloak keycloak',
        'node_modules come from stage build, which installs dev dependencies',
        '.dockerignore lets in !keycloak',
      ]),
    );
  });
});

// ---------- Kubernetes ----------

type K8sObject = Obj & {
  apiVersion: string;
  kind: string;
  metadata: Obj & { name: string; namespace?: string };
};

/** The kustomize fields deploy/ uses; the renderer below implements exactly these, and refuses any other. */
const KUSTOMIZE_FIELDS = new Set(['apiVersion', 'kind', 'namespace', 'resources', 'images', 'replicas']);

/** Renders a kustomization (the subset above) into its objects. */
function kustomize(dir: string): K8sObject[] {
  const k = asObj(parseYaml(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')));
  const unknown = Object.keys(k).filter((f) => !KUSTOMIZE_FIELDS.has(f));
  if (unknown.length)
    throw new Error(`${dir}: kustomize fields this renderer does not implement: ${unknown}`);
  let objects: K8sObject[] = [];
  for (const r of asArr(k.resources).map(String)) {
    const p = join(dir, r);
    if (statSync(p).isDirectory()) objects.push(...kustomize(p));
    else {
      for (const doc of parseAllDocuments(readFileSync(p, 'utf8'))) {
        if (doc.errors.length) throw new Error(`${p}: ${doc.errors[0].message}`);
        const o = doc.toJS() as K8sObject | null;
        if (o) objects.push(o);
      }
    }
  }
  objects = structuredClone(objects);
  if (typeof k.namespace === 'string') {
    for (const o of objects) if (o.kind !== 'Namespace') o.metadata.namespace = k.namespace;
  }
  for (const img of asArr(k.images).map(asObj)) {
    for (const c of objects.flatMap(containersOf)) {
      const [name] = String(c.image).split(':');
      if (name === img.name) c.image = `${String(img.newName ?? name)}:${String(img.newTag ?? 'latest')}`;
    }
  }
  for (const rep of asArr(k.replicas).map(asObj)) {
    const target = objects.find((o) => o.kind === 'Deployment' && o.metadata.name === rep.name);
    if (!target) throw new Error(`replicas: no Deployment ${String(rep.name)}`);
    asObj(target.spec).replicas = rep.count;
  }
  return objects;
}

const podSpecOf = (o: Obj): Obj => asObj(asObj(asObj(o.spec).template).spec);
const podLabelsOf = (o: Obj): Record<string, string> =>
  asObj(asObj(asObj(asObj(o.spec).template).metadata).labels) as Record<string, string>;
const containersOf = (o: Obj): Obj[] => asArr(podSpecOf(o).containers).map(asObj);

/** Label selector semantics (matchLabels AND matchExpressions with In/NotIn/Exists/DoesNotExist). */
function selects(selector: Obj, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(asObj(selector.matchLabels))) if (labels[k] !== v) return false;
  for (const e of asArr(selector.matchExpressions).map(asObj)) {
    const key = String(e.key);
    const values = asArr(e.values).map(String);
    const has = key in labels;
    if (e.operator === 'In' && !(has && values.includes(labels[key]))) return false;
    if (e.operator === 'NotIn' && has && values.includes(labels[key])) return false;
    if (e.operator === 'Exists' && !has) return false;
    if (e.operator === 'DoesNotExist' && has) return false;
  }
  return true;
}

const MODELS: Record<string, { validate(): void } & (new (data: never) => { validate(): void })> = {};
function model(apiVersion: string, kind: string): (new (data: never) => { validate(): void }) | undefined {
  const groups: Record<string, Record<string, unknown>> = {
    v1: coreV1,
    'apps/v1': appsV1,
    'policy/v1': policyV1,
    'networking.k8s.io/v1': networkingV1,
  };
  return (MODELS[`${apiVersion}/${kind}`] ??= groups[apiVersion]?.[kind] as never);
}

describe('Kubernetes manifests (deploy/, kustomize base + production overlay)', () => {
  const objects = kustomize(join(ROOT, 'deploy/overlays/production'));
  const find = (kind: string, name: string) => {
    const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
    if (!o) throw new Error(`no ${kind} ${name}`);
    return o;
  };
  const deployments = objects.filter((o) => o.kind === 'Deployment');

  it('every object validates against the Kubernetes API schema of its kind', () => {
    expect(objects.length).toBeGreaterThanOrEqual(15);
    for (const o of objects) {
      const Model = model(o.apiVersion, o.kind);
      expect({ kind: `${o.apiVersion}/${o.kind}`, known: Boolean(Model) }).toEqual({
        kind: `${o.apiVersion}/${o.kind}`,
        known: true,
      });
      expect(() => new Model!(o as never).validate()).not.toThrow();
      expect(o.metadata.namespace ?? (o.kind === 'Namespace' ? 'aperture' : undefined)).toBe('aperture');
    }
  });

  it('the schema validation rejects a malformed Deployment', () => {
    const bad = structuredClone(find('Deployment', 'gateway'));
    asObj(bad.spec).replicas = 'three';
    expect(() => new appsV1.Deployment(bad as never).validate()).toThrow(/replicas/);
  });

  it('runs stateless gateways behind a Service and a TLS Ingress, probed on /healthz and /readyz', () => {
    const gw = find('Deployment', 'gateway');
    expect(Number(asObj(gw.spec).replicas)).toBeGreaterThanOrEqual(2);
    const [c] = containersOf(gw);
    expect(String(c.image)).toBe('registry.example.org/aperture/gateway:0.1.0');
    expect(asObj(asObj(c.livenessProbe).httpGet).path).toBe('/healthz');
    expect(asObj(asObj(c.readinessProbe).httpGet).path).toBe('/readyz');
    // No state of its own: the one claim it mounts is the FileStore every gateway and worker shares.
    expect(
      asArr(gw.spec && asObj(podSpecOf(gw)).volumes)
        .map((v) => asObj(asObj(v).persistentVolumeClaim).claimName)
        .filter(Boolean),
    ).toEqual(['aperture-files']);
    const svc = find('Service', 'gateway');
    expect(selects({ matchLabels: asObj(svc.spec).selector }, podLabelsOf(gw))).toBe(true);
    const ing = asObj(find('Ingress', 'gateway').spec);
    expect(asArr(ing.tls).length).toBe(1);
    const backend = asObj(asObj(asArr(asObj(asObj(asArr(ing.rules)[0]).http).paths)[0]).backend);
    expect(asObj(backend.service).name).toBe('gateway');
  });

  it('runs two or more workers and two or more Orthancs sharing one ReadWriteMany volume and one index', () => {
    const worker = find('Deployment', 'worker');
    expect(Number(asObj(worker.spec).replicas)).toBeGreaterThanOrEqual(2);
    expect(asArr(containersOf(worker)[0].args)).toEqual(['node', 'dist/worker.js']);
    const orthanc = find('Deployment', 'orthanc');
    expect(Number(asObj(orthanc.spec).replicas)).toBeGreaterThanOrEqual(2);
    const claim = asArr(podSpecOf(orthanc).volumes)
      .map((v) => asObj(asObj(v).persistentVolumeClaim).claimName)
      .find(Boolean);
    expect(asArr(asObj(find('PersistentVolumeClaim', String(claim)).spec).accessModes)).toEqual([
      'ReadWriteMany',
    ]);
    const cfg = JSON.parse(String(asObj(find('ConfigMap', 'orthanc-config').data)['orthanc.json'])) as Obj;
    expect(asObj(cfg.PostgreSQL)).toMatchObject({ EnableIndex: true, Lock: false });
    // The kubelet restarts an Orthanc that lost its index (plugin 4.0 never reconnects): liveness reads the index.
    const [c] = containersOf(orthanc);
    expect(asArr(asObj(asObj(c.livenessProbe).exec).command).join(' ')).toMatch(/GET \/statistics /);
    expect(asObj(c.startupProbe).tcpSocket).toBeDefined();
  });

  it('uses external PostgreSQL and Redis through the aperture-secrets Secret, never a literal', () => {
    expect(objects.filter((o) => /postgres|redis/i.test(o.metadata.name))).toEqual([]);
    expect(objects.filter((o) => o.kind === 'Secret' || o.kind === 'StatefulSet')).toEqual([]);
    const config = asObj(find('ConfigMap', 'aperture-config').data);
    expect(Object.keys(config).filter((k) => /URL$/.test(k) && k !== 'ORTHANC_URL')).toEqual([]);
    expect(Object.keys(config).filter((k) => /PASSWORD|SECRET|TOKEN/.test(k))).toEqual([]);
    const example = read('deploy/secrets.env.example');
    const keys = new Set([...example.matchAll(/^([A-Z0-9_]+)=/gm)].map((m) => m[1]));
    expect([...keys]).toEqual(expect.arrayContaining(['DATABASE_URL', 'REDIS_URL']));
    for (const d of deployments) {
      for (const c of containersOf(d)) {
        for (const e of asArr(c.env).map(asObj)) {
          const ref = asObj(asObj(e.valueFrom).secretKeyRef);
          if (ref.name) expect({ ref, listed: keys.has(String(ref.key)) }).toEqual({ ref, listed: true });
          if (/PASSWORD|SECRET|TOKEN/.test(String(e.name))) expect(e.value).toBeUndefined();
        }
        const secretRefs = asArr(c.envFrom)
          .map((f) => asObj(asObj(f).secretRef).name)
          .filter(Boolean);
        if (d.metadata.name !== 'orthanc') expect(secretRefs).toEqual(['aperture-secrets']);
      }
    }
  });

  it('gives every container resource requests and limits and a non-root, unprivileged context', () => {
    for (const d of deployments) {
      expect(asObj(podSpecOf(d).securityContext).runAsNonRoot).toBe(true);
      for (const c of containersOf(d)) {
        const r = asObj(c.resources);
        for (const part of ['requests', 'limits']) {
          expect({
            d: d.metadata.name,
            part,
            cpu: 'cpu' in asObj(r[part]),
            memory: 'memory' in asObj(r[part]),
          }).toEqual({
            d: d.metadata.name,
            part,
            cpu: true,
            memory: true,
          });
        }
        expect(asObj(c.securityContext)).toMatchObject({
          allowPrivilegeEscalation: false,
          capabilities: { drop: ['ALL'] },
        });
      }
    }
  });

  it('covers every Deployment with a PodDisruptionBudget that selects its pods', () => {
    const pdbs = objects.filter((o) => o.kind === 'PodDisruptionBudget');
    for (const d of deployments) {
      const covering = pdbs.filter((p) => selects(asObj(asObj(p.spec).selector), podLabelsOf(d)));
      expect({ d: d.metadata.name, covered: covering.length }).toEqual({ d: d.metadata.name, covered: 1 });
    }
  });

  it('lets only gateway and worker pods reach Orthanc REST (8042), by NetworkPolicy semantics', () => {
    const orthanc = find('Deployment', 'orthanc');
    const policies = objects
      .filter((o) => o.kind === 'NetworkPolicy')
      .filter((p) => selects(asObj(asObj(p.spec).podSelector), podLabelsOf(orthanc)));
    expect(policies.length).toBeGreaterThan(0);
    const rules = policies.flatMap((p) => asArr(asObj(p.spec).ingress).map(asObj));
    /** Whether a pod with these labels (in this namespace) may open this port on an Orthanc pod. */
    const allowed = (labels: Record<string, string>, port: number) =>
      rules.some((rule) => {
        const ports = asArr(rule.ports).map((p) => Number(asObj(p).port));
        if (ports.length && !ports.includes(port)) return false;
        const from = asArr(rule.from).map(asObj);
        if (!from.length) return true;
        return from.some((f) => !f.ipBlock && !f.namespaceSelector && selects(asObj(f.podSelector), labels));
      });
    for (const d of deployments) {
      const component = podLabelsOf(d)['app.kubernetes.io/component'];
      expect({ component, rest: allowed(podLabelsOf(d), 8042) }).toEqual({
        component,
        rest: component === 'gateway' || component === 'worker',
      });
    }
    // Any other pod (an ingress controller, a compromised neighbour): no REST, DIMSE yes (modalities).
    expect(allowed({ app: 'something-else' }, 8042)).toBe(false);
    expect(allowed({ app: 'something-else' }, 4242)).toBe(true);
  });

  it('mounts one ReadWriteMany FileStore volume in gateways and workers and gives both the run-token key', () => {
    const claim = find('PersistentVolumeClaim', 'aperture-files');
    expect(asArr(asObj(claim.spec).accessModes)).toEqual(['ReadWriteMany']);
    const config = asObj(find('ConfigMap', 'aperture-config').data);
    for (const name of ['gateway', 'worker']) {
      const d = find('Deployment', name);
      const vol = asArr(podSpecOf(d).volumes)
        .map(asObj)
        .find((v) => asObj(v.persistentVolumeClaim).claimName === 'aperture-files');
      expect({ name, mounted: Boolean(vol) }).toEqual({ name, mounted: true });
      const mount = asArr(containersOf(d)[0].volumeMounts)
        .map(asObj)
        .find((m) => m.name === vol!.name);
      expect(mount?.mountPath).toBe(config.RECORDS_FILES_DIR);
      expect(asObj(podSpecOf(d).securityContext).fsGroup).toBe(1000);
      // The key reaches both through aperture-secrets (checked above), whose example lists it.
      expect(asArr(containersOf(d)[0].envFrom).map((f) => asObj(asObj(f).secretRef).name)).toContain(
        'aperture-secrets',
      );
    }
    expect(read('deploy/secrets.env.example')).toMatch(/^PIPELINE_RUN_TOKEN_SECRET=$/m);
    const workerEnv = asArr(containersOf(find('Deployment', 'worker'))[0].env).map(asObj);
    expect(workerEnv).toContainEqual({ name: 'PIPELINE_GATEWAY_URL', value: 'http://gateway:8080' });
    find('Service', 'gateway');
  });

  it('the base kustomization lists every manifest file in deploy/base', () => {
    const base = asObj(parseYaml(read('deploy/base/kustomization.yaml')));
    const files = readdirSync(join(ROOT, 'deploy/base')).filter(
      (f) => f.endsWith('.yaml') && f !== 'kustomization.yaml',
    );
    expect(asArr(base.resources).map(String).sort()).toEqual(files.sort());
  });
});

describe('the storage sync of a standby site (issue 16; compose profile and Kubernetes overlay)', () => {
  it('compose: a storage-sync service in the standby profile, on the archive volume, reporting to the gateways', () => {
    const svc = service('storage-sync');
    expect(svc.profiles).toEqual(['standby']);
    expect(asArr(svc.command)).toEqual(['node', 'dist/cli/index.js', 'storage-sync']);
    const env = asObj(svc.environment);
    expect(env.ORTHANC_STORAGE_DIR).toBe('/var/lib/orthanc/db');
    expect(asArr(svc.volumes)).toContain('orthanc-data:/var/lib/orthanc/db');
    // The state it writes is the folder every gateway reads (read-only) for /metrics and /readyz.
    const stateDir = String(env.STORAGE_SYNC_STATE_DIR);
    expect(asArr(svc.volumes)).toContain(`storage-sync-state:${stateDir}`);
    expect(asArr(service('gateway').volumes)).toContain(`storage-sync-state:${stateDir}:ro`);
    expect(asObj(asObj(svc.deploy)).replicas).toBe(1);
    // Not on the proxy's path and publishing nothing.
    expect(svc.ports).toBeUndefined();
  });

  it('Kubernetes: none at the primary site; the standby overlay runs one sync and no Orthanc', () => {
    const primary = kustomize(join(ROOT, 'deploy/overlays/production'));
    const standby = kustomize(join(ROOT, 'deploy/overlays/standby'));
    const dep = (objs: K8sObject[], name: string) =>
      objs.find((o) => o.kind === 'Deployment' && o.metadata.name === name)!;
    expect(asObj(dep(primary, 'storage-sync').spec).replicas).toBe(0);
    expect(asObj(dep(standby, 'storage-sync').spec).replicas).toBe(1);
    expect(asObj(dep(standby, 'orthanc').spec).replicas).toBe(0);
    for (const o of standby)
      expect(() => new (model(o.apiVersion, o.kind)!)(o as never).validate()).not.toThrow();
    const sync = dep(standby, 'storage-sync');
    expect(asObj(asObj(sync.spec).strategy).type).toBe('Recreate');
    const [c] = containersOf(sync);
    expect(asArr(c.args)).toEqual(['node', 'dist/cli/index.js', 'storage-sync']);
    const claims = asArr(podSpecOf(sync).volumes).map((v) => asObj(asObj(v).persistentVolumeClaim).claimName);
    expect(claims).toEqual(expect.arrayContaining(['orthanc-storage', 'aperture-files']));
    // Its state folder is on the FileStore the gateways mount (so they report it), not in Orthanc's folder.
    const config = asObj(
      primary.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'aperture-config')!.data,
    );
    expect(String(config.STORAGE_SYNC_STATE_DIR).startsWith(`${String(config.RECORDS_FILES_DIR)}/`)).toBe(
      true,
    );
    const mounts = asArr(c.volumeMounts).map((m) => String(asObj(m).mountPath));
    expect(mounts).toEqual(expect.arrayContaining(['/var/lib/orthanc/db', String(config.RECORDS_FILES_DIR)]));
    const keys = read('deploy/secrets.env.example');
    for (const k of ['STORAGE_SYNC_SOURCE_URL', 'STORAGE_SYNC_SOURCE_PASSWORD', 'STORAGE_SYNC_INDEX_URL'])
      expect(keys).toMatch(new RegExp(`^${k}=`, 'm'));
  });
});
