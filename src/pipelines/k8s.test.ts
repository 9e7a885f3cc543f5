import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Job } from 'kubernetes-models/batch/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { Secret } from 'kubernetes-models/v1';
import { parse as parseYaml } from 'yaml';
import { validateDescriptor, validateParams } from './descriptor';
import { kubernetesRunManifests } from './k8s';

const ROOT = join(__dirname, '../..');
const spec = {
  runId: '4f7c1a52-4a8a-4c4e-9d2e-2b1f0f3a9b10',
  projectId: 'demo',
  gatewayUrl: 'http://gateway.aperture.svc:8080',
  series: [{ studyUid: '1.2.3', seriesUid: '1.2.3.4' }],
  inputSeries: ['1.2.3.4'],
  maxOutputBytes: 1e9,
};
type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describe('Kubernetes Job of a run (deploy/pipelines/job-template.yaml)', () => {
  const d = validateDescriptor(
    JSON.parse(readFileSync(join(ROOT, 'pipelines/descriptors/dcm2niix.json'), 'utf8')) as unknown,
  );
  const { job, secret } = kubernetesRunManifests(d, validateParams(d, {}), spec, 'aprun_x');

  it('validates against the Kubernetes API schemas (Job, Secret, NetworkPolicy)', () => {
    expect(() => new Job(job as never).validate()).not.toThrow();
    expect(() => new Secret(secret as never).validate()).not.toThrow();
    const policy = parseYaml(readFileSync(join(ROOT, 'deploy/pipelines/network-policy.yaml'), 'utf8')) as Obj;
    expect(() => new NetworkPolicy(policy as never).validate()).not.toThrow();
    const bad = structuredClone(job) as Obj;
    bad.spec.backoffLimit = 'none';
    expect(() => new Job(bad as never).validate()).toThrow(/backoffLimit/);
  });

  it('runs the descriptor image between the fetch and store steps; only those steps hold the run token', () => {
    const pod = (job as Obj).spec.template.spec;
    const [fetch, tool] = pod.initContainers as Obj[];
    const [store] = pod.containers as Obj[];
    expect([fetch.name, tool.name, store.name]).toEqual(['fetch-inputs', 'tool', 'store-results']);
    expect(tool.image).toBe('ghcr.io/rordenlab/dcm2niix:v1.0.20220720');
    expect(tool.command).toEqual(['/bin/sh', '-c', "dcm2niix -b y -z n -f 'volume_%s' -o . /data/in"]);
    expect(JSON.stringify(tool)).not.toMatch(/APERTURE_RUN_TOKEN/);
    expect(tool.volumeMounts).toContainEqual({ name: 'inputs', mountPath: '/data/in', readOnly: true });
    for (const c of [fetch, tool, store])
      expect(c.securityContext).toMatchObject({
        allowPrivilegeEscalation: false,
        capabilities: { drop: ['ALL'] },
      });
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(JSON.parse(fetch.env[0].value)).toEqual(spec);
    expect(fetch.env[1].valueFrom.secretKeyRef.name).toBe((secret as Obj).metadata.name);
    expect(tool.resources.limits).toEqual({ cpu: '1', memory: '1024Mi' });
  });

  it('refuses a descriptor without a docker image', () => {
    const noImage = { ...d, 'container-image': undefined };
    expect(() => kubernetesRunManifests(noImage, {}, spec, 't')).toThrow(/no docker container image/);
  });
});
