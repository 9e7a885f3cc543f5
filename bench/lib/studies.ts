import { generateInstances } from '../../tools/synth';

/**
 * `n` synthetic single-instance studies (64x64 CT/MR/CR, five per patient) as DICOM files, disjoint per seed and the
 * same for the same seed. A generator: a large fill is made as it is sent, not held in memory.
 */
export function* singleInstanceStudies(seed: string, n: number): Generator<Buffer> {
  let i = 0;
  for (const s of generateInstances({
    patients: Math.ceil(n / 5),
    studiesPerPatient: 5,
    seriesPerStudy: 1,
    instancesPerSeries: 1,
    rows: 64,
    cols: 64,
    seed,
  })) {
    if (i++ >= n) return;
    yield s.buffer;
  }
}
