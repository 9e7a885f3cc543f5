import type { ReadScope } from '../auth/access';
import { parseQidoQuery } from '../dicom/matching';
import { buildQidoStatement, type QidoLevel } from './qido';

const statement = (level: QidoLevel, qs: string, scopes: ReadScope[], path: { studyUid?: string } = {}) =>
  buildQidoStatement({
    level,
    query: parseQidoQuery(new URLSearchParams(qs), { defaultLimit: 100, maxLimit: 1000 }),
    scopes,
    root: 'https://gw/dicom-web',
    ...path,
  });

describe('QIDO-RS SQL', () => {
  it('keeps every query value out of the SQL text', () => {
    const st = statement('study', "PatientID=x'); DROP TABLE projects; --&StudyDescription=*50%*", [
      { projectId: 'p' },
    ]);
    expect(st.text).not.toContain('DROP');
    expect(st.values).toContain("x'); DROP TABLE projects; --");
    // LIKE metacharacters of the value are escaped, wildcards translated.
    expect(st.values).toContain('%50\\%%');
  });

  it('restricts one project with equality, so its ordered index serves the page', () => {
    const st = statement('study', 'PatientID=1', [{ projectId: 'p' }]);
    expect(st.text).toContain('ps.project_id = $');
    expect(st.text).not.toContain('NOT EXISTS');
    expect(st.text).toContain(
      'ORDER BY ps.study_date DESC NULLS LAST, ps.study_time DESC NULLS LAST, ps.study_uid',
    );
  });

  it('unites several projects, keeping one row per study with the same filters applied to the others', () => {
    const st = statement('study', 'PatientID=1', [{ projectId: 'a' }, { projectId: 'b' }]);
    expect(st.text).toContain('ps.project_id = ANY(');
    expect(st.text).toMatch(/NOT EXISTS \(SELECT 1 FROM project_studies p2 .* AND p2\.patient_id = \$1\)/);
    // Stored aggregates only when the caller sees the study through one project.
    expect(st.text).toContain('CASE WHEN vis.n = 1');
  });

  it('limits a series-scoped share to its series and computes the study over it', () => {
    const st = statement('study', '', [{ projectId: 'a', seriesUid: '1.2.3' }]);
    expect(st.text).toContain('EXISTS (SELECT 1 FROM project_series sx WHERE sx.project_id = ps.project_id');
    expect(st.text).toContain('count(DISTINCT ax.sop_instance_uid)');
    expect(st.text).not.toContain('vis.n');
  });

  it('matches a sequence item attribute by jsonb containment', () => {
    const st = statement('series', '00400275.00401001=RP7', [{ projectId: 'a' }]);
    expect(st.text).toContain('se.series_json @> $');
    expect(st.values).toContain(
      JSON.stringify({ '00400275': { Value: [{ '00401001': { Value: ['RP7'] } }] } }),
    );
  });

  it('reports keys of lower levels as unsupported and includefields it cannot return', () => {
    const st = statement('study', 'Modality=CT&includefield=Rows&PatientID=1', [{ projectId: 'a' }]);
    expect(st.unsupported).toEqual(['Modality']);
    expect(st.unavailable).toEqual(['Rows']);
    expect(st.text).not.toContain('modality =');
  });

  it('asks the database for one row more than the limit, to know whether results were cut', () => {
    const st = statement('instance', 'limit=25&offset=50', [{ projectId: 'a' }], { studyUid: '1.2' });
    expect(st.values).toEqual(expect.arrayContaining([26, 50]));
    expect(st.text).toContain('pi.study_uid = $');
  });
});
