/**
 * The Kubernetes executor of runs (PIPELINE_EXECUTOR=kubernetes): instead of the host sandbox, the worker submits the
 * run's Job and Secret (src/pipelines/k8s.ts, deploy/pipelines/job-template.yaml) through the Kubernetes API with
 * @kubernetes/client-node, polls the Job until it ends or the run is cancelled, and reads the store step's summary
 * (the derived series it stored) from that container's log. The Job fetches its inputs and stores its DICOM results
 * through the gateway itself, with the run token from the Secret; the Secret is deleted once the Job has ended, the
 * Job by the cluster (ttlSecondsAfterFinished). Non-DICOM outputs of a Job are not collected yet.
 *
 * The API is reached with the in-cluster service account when the worker runs in a pod, else the usual kubeconfig
 * (KUBECONFIG, ~/.kube/config). A worker killed mid-run leaves its Job running; the next attempt finds it by name
 * (409 on create) and follows it rather than starting the tool twice.
 */
import type { BatchV1Api, CoreV1Api, KubeConfig, V1Job, V1Pod } from '@kubernetes/client-node';

/** How a Job ended, in the run's words. */
export type JobOutcome = { state: 'running' } | { state: 'succeeded' } | { state: 'failed'; error: string };

/** The Kubernetes API could not be reached or refused the worker: worth a retry by the queue, not the run's fault. */
export class KubernetesUnavailable extends Error {}

/** The clients of the API, from the in-cluster account or the kubeconfig. */
export interface KubeClients {
  batch: BatchV1Api;
  core: CoreV1Api;
  server: string;
}

/** Loads the client (an ES module, loaded only in this mode) and the cluster's configuration. */
export async function kubeClients(kubeconfigYaml?: string): Promise<KubeClients> {
  const k8s = await import('@kubernetes/client-node');
  const kc: KubeConfig = new k8s.KubeConfig();
  if (kubeconfigYaml) kc.loadFromString(kubeconfigYaml);
  else kc.loadFromDefault();
  const server = kc.getCurrentCluster()?.server;
  if (!server)
    throw new KubernetesUnavailable('no Kubernetes cluster is configured (in-cluster account or kubeconfig)');
  return { batch: kc.makeApiClient(k8s.BatchV1Api), core: kc.makeApiClient(k8s.CoreV1Api), server };
}

const statusOf = (err: unknown): number | undefined =>
  typeof (err as { code?: unknown })?.code === 'number' ? (err as { code: number }).code : undefined;

/** Wraps an API call: a transport failure or 5xx/401/403 becomes KubernetesUnavailable (retried by the queue). */
async function call<T>(what: string, server: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const status = statusOf(err);
    if (status === undefined || status >= 500 || status === 401 || status === 403)
      throw new KubernetesUnavailable(
        `the Kubernetes API at ${server} ${status ? `answered ${status}` : 'could not be reached'} (${what})`,
        { cause: err },
      );
    throw err;
  }
}

/** Creates the run's Secret and Job; an existing Job of the same run (an earlier attempt's) is followed instead. */
export async function submitRunJob(
  api: KubeClients,
  manifests: { job: Record<string, unknown>; secret: Record<string, unknown> },
): Promise<{ name: string; namespace: string; adopted: boolean }> {
  const meta = manifests.job.metadata as { name: string; namespace: string };
  const { name, namespace } = meta;
  try {
    await call('create Secret', api.server, () =>
      api.core.createNamespacedSecret({ namespace, body: manifests.secret as never }),
    );
  } catch (err) {
    if (statusOf(err) !== 409) throw err;
  }
  try {
    await call('create Job', api.server, () =>
      api.batch.createNamespacedJob({ namespace, body: manifests.job as never }),
    );
    return { name, namespace, adopted: false };
  } catch (err) {
    if (statusOf(err) === 409) return { name, namespace, adopted: true };
    throw err;
  }
}

/** What a Job's status and its pods say: still running, succeeded, or failed and why (OOM kill, deadline, exit). */
export function jobOutcome(job: V1Job, pods: V1Pod[], limits: { memory: string }): JobOutcome {
  const st = job.status ?? {};
  if ((st.succeeded ?? 0) > 0) return { state: 'succeeded' };
  const failed = (st.conditions ?? []).find((c) => c.type === 'Failed' && c.status === 'True');
  if (!failed && (st.failed ?? 0) === 0) return { state: 'running' };
  for (const pod of pods)
    for (const c of [
      ...(pod.status?.initContainerStatuses ?? []),
      ...(pod.status?.containerStatuses ?? []),
    ]) {
      const t = c.state?.terminated;
      if (!t || t.exitCode === 0) continue;
      if (t.reason === 'OOMKilled')
        return {
          state: 'failed',
          error: `the ${c.name === 'tool' ? 'tool' : `${c.name} step`} exceeded its memory limit of ${limits.memory} and was killed (Kubernetes OOMKilled); exited ${t.exitCode}`,
        };
      return {
        state: 'failed',
        error: `the ${c.name === 'tool' ? 'tool' : `${c.name} step`} exited ${t.exitCode}${t.reason && t.reason !== 'Error' ? ` (${t.reason})` : ''}`,
      };
    }
  if (failed?.reason === 'DeadlineExceeded')
    return { state: 'failed', error: 'the Job ran past its deadline' };
  return { state: 'failed', error: `the Job failed${failed?.reason ? ` (${failed.reason})` : ''}` };
}

/** The derived series the store step reports on its last log line (ids only). */
export function storeSummary(log: string): { series: string[] } {
  const lines = log.trim().split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    try {
      const v = JSON.parse(lines[i]) as { series?: unknown };
      if (Array.isArray(v.series) && v.series.every((s) => typeof s === 'string'))
        return { series: v.series as string[] };
    } catch {
      // not the summary line
    }
  }
  return { series: [] };
}

/**
 * Follows a submitted Job until it ends or `shouldCancel` says so (then the Job and its pods are deleted); the
 * Secret is removed at the end either way. Returns the outcome and, on success, the stored series.
 */
export async function followRunJob(
  api: KubeClients,
  ref: { name: string; namespace: string },
  opts: { memory: string; pollMs?: number; shouldCancel: () => Promise<boolean> },
): Promise<{ outcome: JobOutcome | { state: 'cancelled' }; outputSeries: string[] }> {
  const { name, namespace } = ref;
  try {
    for (;;) {
      if (await opts.shouldCancel()) {
        await call('delete Job', api.server, () =>
          api.batch.deleteNamespacedJob({ name, namespace, propagationPolicy: 'Background' }),
        ).catch((err: unknown) => {
          if (statusOf(err) !== 404) throw err;
        });
        return { outcome: { state: 'cancelled' }, outputSeries: [] };
      }
      const job = await call('read Job', api.server, () =>
        api.batch.readNamespacedJobStatus({ name, namespace }),
      );
      const pods = (
        await call('list pods', api.server, () =>
          api.core.listNamespacedPod({ namespace, labelSelector: `job-name=${name}` }),
        )
      ).items;
      const outcome = jobOutcome(job, pods, { memory: opts.memory });
      if (outcome.state === 'running') {
        await new Promise((r) => setTimeout(r, opts.pollMs ?? 2000));
        continue;
      }
      if (outcome.state === 'failed') return { outcome, outputSeries: [] };
      const pod = pods.find((p) => p.status?.phase === 'Succeeded')?.metadata?.name;
      const log = pod
        ? await call('read log', api.server, () =>
            api.core.readNamespacedPodLog({ name: pod, namespace, container: 'store-results' }),
          )
        : '';
      return { outcome, outputSeries: storeSummary(log).series };
    }
  } finally {
    await api.core.deleteNamespacedSecret({ name, namespace }).catch(() => undefined);
  }
}
