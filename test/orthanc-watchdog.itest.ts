/**
 * Issue 16 / 15: Orthanc 1.10's PostgreSQL plugin (4.0) never reconnects once its index went away. The health checks
 * of compose/ and deploy/ must therefore see an Orthanc that is alive but has lost its index, and something must
 * restart it: the kubelet on the liveness probe (Kubernetes), the watchdog entrypoint plus the restart policy
 * (compose, where a failing health check restarts nothing). Here both probe commands, exactly as the files write them
 * (only the REST port is the test Orthanc's), run against a real Orthanc whose PostgreSQL is killed and started again,
 * and compose/orthanc-watchdog.sh runs the real Orthanc binary.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { type PrivateStack, processRuns, startPrivateStack } from './helpers/private-stack';

jest.setTimeout(240_000);

const ROOT = join(__dirname, '..');
const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Resolves 'timeout' after `ms` without holding the test process open. */
const timeout = (ms: number) => new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms).unref());
const PG_BIN = `/usr/lib/postgresql/${readdirSync('/usr/lib/postgresql').sort().at(-1)}/bin`;

type Obj = Record<string, unknown>;

/** compose's Orthanc health check command (`$$` is compose's escape of `$`). */
function composeProbe(): string {
  const doc = parseYaml(readFileSync(join(ROOT, 'compose/docker-compose.yml'), 'utf8')) as Obj;
  const test = ((doc.services as Obj).orthanc as { healthcheck: { test: string[] } }).healthcheck.test;
  expect(test.slice(0, 3)).toEqual(['CMD', 'bash', '-c']);
  return test[3].replace(/\$\$/g, '$');
}

/** deploy/'s Orthanc liveness probe command. */
function k8sProbe(): string {
  const docs = parseAllDocuments(readFileSync(join(ROOT, 'deploy/base/orthanc.yaml'), 'utf8')).map(
    (d) => d.toJSON() as Obj,
  );
  const dep = docs.find((d) => d.kind === 'Deployment') as {
    spec: { template: { spec: { containers: Array<{ livenessProbe: { exec: { command: string[] } } }> } } };
  };
  const cmd = dep.spec.template.spec.containers[0].livenessProbe.exec.command;
  expect(cmd.slice(0, 2)).toEqual(['bash', '-c']);
  return cmd[2];
}

describe('Orthanc that lost its PostgreSQL index is found by the health checks and restarted (compose, deploy)', () => {
  let stack: PrivateStack | undefined;
  let watchdog: ChildProcess | undefined;

  afterAll(async () => {
    watchdog?.kill('SIGTERM');
    await stack?.destroy();
  });

  it('probes fail while the index is lost and after PostgreSQL returns; the watchdog exits so that Orthanc is restarted', async () => {
    stack = await startPrivateStack('aperture-watchdog-');
    const port = new URL(stack.env.ORTHANC_URL).port;
    const pgPort = new URL(stack.env.DATABASE_URL).port;
    const probes = { compose: composeProbe(), k8s: k8sProbe() };
    const probe = async (name: keyof typeof probes): Promise<boolean> =>
      run('bash', ['-c', probes[name].replace(/8042/g, port)], {
        env: { ...process.env, ORTHANC_PASSWORD: stack!.env.ORTHANC_PASSWORD },
        timeout: 10_000,
      }).then(
        () => true,
        () => false,
      );
    const both = async () => [await probe('compose'), await probe('k8s')];
    const until = async (want: boolean[], ms: number) => {
      const t0 = Date.now();
      let got = await both();
      while (JSON.stringify(got) !== JSON.stringify(want) && Date.now() - t0 < ms) {
        await sleep(500);
        got = await both();
      }
      return got;
    };
    const startPostgres = async () => {
      const root = process.getuid?.() === 0;
      const args = [
        ...['-D', join(stack!.dir, 'pg'), '-l', join(stack!.dir, 'log/postgres.log'), '-w', '-t', '60', '-o'],
        `-p ${pgPort} -k ${join(stack!.dir, 'run')} -c listen_addresses=127.0.0.1 -c fsync=off`,
        'start',
      ];
      // The killed postmaster's children leave within a moment; until then a new one refuses to start.
      for (let i = 0; ; i++) {
        try {
          await run(
            root ? 'runuser' : join(PG_BIN, 'pg_ctl'),
            root ? ['-u', 'postgres', '--', join(PG_BIN, 'pg_ctl'), ...args] : args,
          );
          return;
        } catch (err) {
          if (i >= 10) throw err;
          await sleep(1000);
        }
      }
    };

    expect(await both()).toEqual([true, true]);

    // PostgreSQL killed, then back: Orthanc lives on but never reconnects, and both probes say so.
    const orthancPid = stack.pidOf('orthanc')!;
    await stack.kill('postgres');
    expect(await until([false, false], 15_000)).toEqual([false, false]);
    await startPostgres();
    await sleep(5000);
    expect(processRuns(orthancPid)).toBe(true);
    expect(await both()).toEqual([false, false]);
    // What the kubelet does on a failed liveness probe: a fresh Orthanc, which connects again.
    await stack.kill('orthanc');

    // compose: Orthanc under the watchdog entrypoint, on the stack's own configuration.
    const preload = join(ROOT, 'scripts/loopback-bind.so');
    const startWatchdog = () => {
      let stderr = '';
      const child = spawn(
        'bash',
        [
          join(ROOT, 'compose/orthanc-watchdog.sh'),
          'Orthanc',
          `--logdir=${join(stack!.dir, 'log')}`,
          join(stack!.dir, 'orthanc/orthanc.json'),
        ],
        {
          env: {
            ...process.env,
            ORTHANC_PASSWORD: stack!.env.ORTHANC_PASSWORD,
            WATCHDOG_PORT: port,
            WATCHDOG_INTERVAL: '1',
            WATCHDOG_FAILURES: '3',
            WATCHDOG_GRACE: '5',
            WATCHDOG_STOP_GRACE: '5',
            ...(existsSync(preload) ? { LD_PRELOAD: preload, APERTURE_LOOPBACK_PORTS: port } : {}),
          },
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
      child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      return { child, exited, stderr: () => stderr };
    };
    let w = startWatchdog();
    watchdog = w.child;
    const up = await until([true, true], 60_000);
    if (!up[0])
      console.warn(
        `watchdog: ${w.stderr()}\n${readFileSync(join(stack.dir, 'log/orthanc.out'), 'utf8').slice(-3000)}`,
      );
    expect(up).toEqual([true, true]);

    // Index lost: after three failed probes a second apart the wrapper stops Orthanc and exits, the restart policy's
    // cue. (PostgreSQL stays down meanwhile: in one run here a restart within 2 s left the plugin working after a single
    // failed probe, so only a lasting failure is a restart's reason, and the test does not race that.)
    await stack.kill('postgres');
    const code = await Promise.race([w.exited, timeout(90_000)]);
    if (code !== 75) console.warn(`watchdog: ${w.stderr()}`);
    expect(code).toBe(75);
    expect(w.stderr()).toMatch(/lost its index/);
    expect(await both()).toEqual([false, false]);

    // PostgreSQL back, and the restart (what `restart: unless-stopped` does): a fresh Orthanc answers again.
    await startPostgres();
    w = startWatchdog();
    watchdog = w.child;
    expect(await until([true, true], 60_000)).toEqual([true, true]);
    // SIGTERM (docker stop) reaches Orthanc through the wrapper.
    w.child.kill('SIGTERM');
    const stopped = await Promise.race([w.exited, timeout(30_000)]);
    expect(stopped).not.toBe('timeout');
    watchdog = undefined;
    expect(await both()).toEqual([false, false]);
  });
});
