import type { ReadScope } from '../auth/access';
import { parseQidoQuery } from '../dicom/matching';
import { buildQidoStatement, type QidoLevel } from './qido';

/*
 * What a statement promises whatever its SQL looks like: values travel as parameters, keys it cannot match are
 * reported, and one row more than the limit is asked for. What the statement finds (several projects united into
 * one result, share scopes, sequence matching, computed attributes) is asserted against PostgreSQL in
 * test/qido.itest.ts, not by reading the SQL text.
 */
const statement = (level: QidoLevel, qs: string, scopes: ReadScope[], path: { studyUid?: string } = {}) =>
  buildQidoStatement({
    level,
    query: parseQidoQuery(new URLSearchParams(qs), { defaultLimit: 100, maxLimit: 1000 }),
    scopes,
    ...path,
  });

describe('QIDO-RS statement', () => {
  it('carries every query value as a parameter, never in the SQL text', () => {
    const hostile = "x'); DROP TABLE projects; --";
    for (const scopes of [[{ projectId: 'p' }], [{ projectId: 'a' }, { projectId: 'b' }]]) {
      const st = statement(
        'study',
        `PatientID=${encodeURIComponent(hostile)}&StudyDescription=*50%25*`,
        scopes,
      );
      expect(st.text).not.toContain('DROP');
      expect(st.values).toContain(hostile);
      // LIKE metacharacters of the value are escaped, wildcards translated.
      expect(st.values).toContain('%50\\%%');
    }
  });

  it('carries project ids and UIDs of scopes and path as parameters too', () => {
    const st = statement('series', '', [{ projectId: "o'hara", studyUid: '1.2.3', seriesUid: '1.2.3.4' }], {
      studyUid: '1.2.3',
    });
    expect(st.text).not.toContain("o'hara");
    expect(st.text).not.toContain('1.2.3');
    expect(st.values).toEqual(expect.arrayContaining(["o'hara", '1.2.3', '1.2.3.4']));
  });

  it('reports keys of lower levels as unsupported and includefields it cannot return', () => {
    const st = statement('study', 'Modality=CT&includefield=Rows&PatientID=1', [{ projectId: 'a' }]);
    expect(st.unsupported).toEqual(['Modality']);
    expect(st.unavailable).toEqual(['Rows']);
    expect(st.values).not.toContain('CT');
  });

  it('asks the database for one row more than the limit, to know whether results were cut', () => {
    const st = statement('instance', 'limit=25&offset=50', [{ projectId: 'a' }], { studyUid: '1.2' });
    expect(st.values).toEqual(expect.arrayContaining([26, 50]));
  });

  it('refuses an orderby it cannot give, and orders by an index column otherwise (order asserted in qido-orderby.itest)', () => {
    const p = [{ projectId: 'p' }];
    expect(() => statement('study', 'orderby=PatientSex', p)).toThrow(/can be ordered by PatientName/);
    expect(() => statement('study', 'orderby=PatientName,StudyDate', p)).toThrow(/one attribute only/);
    expect(() => statement('study', 'orderby=Nonsense', p)).toThrow(/names no known DICOM attribute/);
    expect(statement('study', 'orderby=-NumberOfStudyRelatedInstances', p).text).toContain(
      'ps.num_instances DESC NULLS LAST, ps.study_uid DESC',
    );
    expect(statement('study', 'orderby=PatientName', p).text).toContain(
      'ps.patient_name_norm ASC NULLS FIRST',
    );
    // No orderby: the archive's order, newest first, as before.
    expect(statement('study', '', p).text).toContain('ps.study_date DESC NULLS LAST');
  });
});
