import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { V1Job, V1Pod } from '@kubernetes/client-node';
import { jobOutcome, storeSummary } from './k8s-executor';

/**
 * The Kubernetes executor's reading of Job and pod status, and its behaviour when the API cannot be reached. No
 * cluster is reachable where this is built, so submission and following a live Job are not exercised here.
 */
describe('Kubernetes executor of runs', () => {
  const job = (status: V1Job['status']): V1Job => ({ status });
  const pod = (name: string, terminated: Record<string, unknown>, init = true): V1Pod => ({
    metadata: { name: 'p' },
    status: {
      phase: 'Failed',
      [init ? 'initContainerStatuses' : 'containerStatuses']: [
        { name, state: { terminated }, ready: false, restartCount: 0, image: 'x', imageID: 'x' },
      ],
    },
  });
  const limits = { memory: '1024Mi' };

  it('reads running, succeeded, and the reason a Job failed (OOM kill, exit code, deadline)', () => {
    expect(jobOutcome(job({ active: 1 }), [], limits)).toEqual({ state: 'running' });
    expect(jobOutcome(job({ succeeded: 1 }), [], limits)).toEqual({ state: 'succeeded' });
    const failed = job({
      failed: 1,
      conditions: [{ type: 'Failed', status: 'True', reason: 'BackoffLimitExceeded' }],
    });
    expect(jobOutcome(failed, [pod('tool', { exitCode: 137, reason: 'OOMKilled' })], limits)).toEqual({
      state: 'failed',
      error: 'the tool exceeded its memory limit of 1024Mi and was killed (Kubernetes OOMKilled); exited 137',
    });
    expect(jobOutcome(failed, [pod('fetch-inputs', { exitCode: 1, reason: 'Error' })], limits)).toEqual({
      state: 'failed',
      error: 'the fetch-inputs step exited 1',
    });
    expect(
      jobOutcome(failed, [pod('store-results', { exitCode: 1, reason: 'Error' }, false)], limits),
    ).toEqual({
      state: 'failed',
      error: 'the store-results step exited 1',
    });
    const late = job({ conditions: [{ type: 'Failed', status: 'True', reason: 'DeadlineExceeded' }] });
    expect(jobOutcome(late, [], limits)).toEqual({ state: 'failed', error: 'the Job ran past its deadline' });
  });

  it("takes the stored series from the store step's summary line", () => {
    const log = 'stored 3 instances\n{"run":"r","stored":3,"series":["1.2.3.9"],"other":1}\n';
    expect(storeSummary(log)).toEqual({ series: ['1.2.3.9'] });
    expect(storeSummary('no summary')).toEqual({ series: [] });
  });

  it('an API server that refuses connections is KubernetesUnavailable (retried by the queue), not a run failure', async () => {
    // A port that was free a moment ago and is closed now: a real refused connection, not a stand-in for a cluster.
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    // The client is an ES module that jest's runtime cannot load; Node loads it (require(esm)) in a child process.
    const script = `
      const { kubeClients, submitRunJob, KubernetesUnavailable } = require(${JSON.stringify(join(__dirname, 'k8s-executor.ts'))});
      const kubeconfig = ${JSON.stringify(`apiVersion: v1
kind: Config
clusters: [{ name: c, cluster: { server: 'https://127.0.0.1:${port}', insecure-skip-tls-verify: true } }]
users: [{ name: u, user: { token: t } }]
contexts: [{ name: x, context: { cluster: c, user: u } }]
current-context: x
`)};
      kubeClients(kubeconfig)
        .then((api) => submitRunJob(api, {
          job: { metadata: { name: 'aperture-run-1', namespace: 'aperture' } },
          secret: { metadata: { name: 'aperture-run-1', namespace: 'aperture' } },
        }))
        .then(() => console.log('submitted'), (err) => console.log(err instanceof KubernetesUnavailable, err.message));
    `;
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '-e', script], {
      cwd: join(__dirname, '../..'),
      timeout: 60_000,
    });
    expect(stdout.trim()).toBe(
      `true the Kubernetes API at https://127.0.0.1:${port} could not be reached (create Secret)`,
    );
  }, 90_000);
});
