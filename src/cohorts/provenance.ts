/**
 * Provenance exports of a cohort: the UID and patient-ID mappings as the MIDI-B scorer reads them
 * (`id_old,id_new`, one pair a line). Both link research identifiers to source ones: source curators only.
 */
import type { Pool } from 'pg';
import { streamOutputs } from '../index-db/cohorts';
import { cohortPatientMapping } from '../index-db/pseudonyms';

/** A CSV field: quoted when it holds a comma, quote or line break (RFC 4180). */
function csvField(s: string): string {
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** `uid_mapping.csv`: every replaced Study, Series and SOP Instance UID of the stored outputs, each pair once. */
export async function* uidMappingCsv(db: Pool, cohortId: string): AsyncGenerator<string, void, undefined> {
  yield 'id_old,id_new\n';
  const seen = new Set<string>();
  for await (const o of streamOutputs(db, cohortId)) {
    let lines = '';
    for (const [from, to] of [
      [o.source_study_uid, o.output_study_uid],
      [o.source_series_uid, o.output_series_uid],
    ]) {
      if (seen.has(from)) continue;
      seen.add(from);
      lines += `${from},${to}\n`;
    }
    yield `${lines}${o.source_sop_uid},${o.output_sop_uid}\n`;
  }
}

/** `patid_mapping.csv`: source Patient ID (or name key) → pseudonym of the cohort's patients. */
export async function patientMappingCsv(db: Pool, cohortId: string): Promise<string> {
  const rows = await cohortPatientMapping(db, cohortId);
  return 'id_old,id_new\n' + rows.map((r) => `${csvField(r.id_old)},${csvField(r.id_new)}\n`).join('');
}
