/**
 * The steps of a run's Kubernetes Job either side of the tool (deploy/pipelines/job-template.yaml), in the Aperture
 * image: `fetch` writes the input series to /data/in through the gateway's WADO-RS, `store` checks what the tool
 * left in /data/out and stores the DICOM results by STOW-RS. Both use the run token (APERTURE_RUN_TOKEN) and the
 * run spec (RUN_SPEC, ids only); the same code as the host runner.
 */
import { join } from 'node:path';
import { fetchSeries, storeFiles } from './gateway-client';
import type { RunSpec } from './k8s';
import { collectOutputs } from './runner';

async function main(step: string | undefined): Promise<void> {
  const spec = JSON.parse(process.env.RUN_SPEC ?? '') as RunSpec;
  const token = process.env.APERTURE_RUN_TOKEN;
  if (!token) throw new Error('APERTURE_RUN_TOKEN is not set');
  const target = { baseUrl: spec.gatewayUrl, projectId: spec.projectId, token, timeoutMs: 300_000 };
  if (step === 'fetch') {
    for (const [n, s] of spec.series.entries())
      await fetchSeries(target, s, join('/data/in', String(n + 1).padStart(2, '0')), {
        maxInstances: 100_000,
        maxPartBytes: 1024 ** 3,
      });
    return;
  }
  if (step === 'store') {
    const { dicom, other } = await collectOutputs('/data/out', spec.inputSeries, spec.maxOutputBytes);
    const stored = dicom.length ? await storeFiles(target, dicom) : { stored: 0, seriesUids: [] };
    // The run's summary for whoever watches the Job (ids only).
    console.log(
      JSON.stringify({
        run: spec.runId,
        stored: stored.stored,
        series: stored.seriesUids,
        other: other.length,
      }),
    );
    return;
  }
  throw new Error('usage: k8s-step fetch|store');
}

main(process.argv[2]).catch((err) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
