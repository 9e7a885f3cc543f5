import { msSince, summarise } from './stats';

/** The five QIDO-RS study queries the benches time, with their latency targets (p95, ms) from issue 15. */
export function qidoShapes(
  studyUid: string,
  patientId: string,
): Array<{ name: string; qs: string; target: number }> {
  return [
    { name: 'exact StudyInstanceUID', qs: `StudyInstanceUID=${studyUid}`, target: 10 },
    { name: 'exact PatientID', qs: `PatientID=${encodeURIComponent(patientId)}`, target: 10 },
    { name: 'wildcard PatientName=M*', qs: 'PatientName=M*', target: 30 },
    { name: 'date range StudyDate=2018', qs: 'StudyDate=20180101-20181231', target: 30 },
    { name: 'modality ModalitiesInStudy=MR', qs: 'ModalitiesInStudy=MR', target: 30 },
  ];
}

/**
 * Times `reps` sequential requests of one QIDO-RS URL after 3 that warm caches and connections, bodies read to the
 * end; answers the latency summary and the number of results of the last answer. A non-2xx answer stops the bench.
 */
export async function timeQido(
  url: string,
  reps: number,
  headers: Record<string, string> = {},
): Promise<ReturnType<typeof summarise> & { results: number }> {
  const ms: number[] = [];
  let results = 0;
  for (let i = 0; i < reps + 3; i++) {
    const s = process.hrtime.bigint();
    const res = await fetch(url, { headers: { accept: 'application/dicom+json', ...headers } });
    const body = await res.text();
    if (!res.ok) throw new Error(`QIDO ${url}: HTTP ${res.status}`);
    if (i >= 3) ms.push(msSince(s));
    results = body ? (JSON.parse(body) as unknown[]).length : 0;
  }
  return { ...summarise(ms), results };
}
