/**
 * The Kubernetes form of a run (production): a Job from deploy/pipelines/job-template.yaml with the descriptor's
 * container image and command line, and a Secret holding the run token. The steps either side of the tool are
 * src/pipelines/k8s-step.ts in the Aperture image. This module only builds the manifests; submitting them to a
 * cluster is the operator's (or a future worker mode's) part.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { type BoutiquesDescriptor, buildCommandLine, type RunParams } from './descriptor';

const TEMPLATE = join(__dirname, '../../deploy/pipelines/job-template.yaml');

/** What the fetch and store steps need: ids and UIDs only (no PHI), read from RUN_SPEC. */
export interface RunSpec {
  runId: string;
  projectId: string;
  gatewayUrl: string;
  series: Array<{ studyUid: string; seriesUid: string }>;
  inputSeries: string[];
  maxOutputBytes: number;
}

function fill(node: unknown, values: Record<string, string>): unknown {
  if (typeof node === 'string') {
    const whole = /^\{\{(\w+)\}\}$/.exec(node);
    if (whole) {
      if (!(whole[1] in values)) throw new Error(`job template: no value for {{${whole[1]}}}`);
      return values[whole[1]];
    }
    return node.replace(/\{\{(\w+)\}\}/g, (_, k: string) => {
      if (!(k in values)) throw new Error(`job template: no value for {{${k}}}`);
      return values[k];
    });
  }
  if (Array.isArray(node)) return node.map((x) => fill(x, values));
  if (node && typeof node === 'object')
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, fill(v, values)]));
  return node;
}

/** The Job and its Secret for a run; the image comes from the descriptor's container-image (docker). */
export function kubernetesRunManifests(
  d: BoutiquesDescriptor,
  params: RunParams,
  spec: RunSpec,
  token: string,
): { job: Record<string, unknown>; secret: Record<string, unknown> } {
  const image = d['container-image'];
  if (!image || image.type !== 'docker' || !image.image)
    throw new Error('the descriptor names no docker container image: it cannot run as a Kubernetes Job');
  const name = `aperture-run-${spec.runId.slice(0, 8)}`;
  const res = d['suggested-resources'] ?? {};
  const job = fill(parseYaml(readFileSync(TEMPLATE, 'utf8')), {
    name,
    runId: spec.runId,
    image: image.image,
    commandLine: buildCommandLine(d, params),
    cpu: String(res['cpu-cores'] ?? 1),
    // Boutiques gives RAM in GB.
    memory: `${Math.max(128, Math.ceil((res.ram ?? 2) * 1024))}Mi`,
    runSpec: JSON.stringify(spec),
  }) as Record<string, unknown>;
  const secret = {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name, namespace: 'aperture', labels: { 'aperture/run': spec.runId } },
    type: 'Opaque',
    stringData: { token },
  };
  return { job, secret };
}
