import { useState, type FormEvent } from 'react';
import {
  dicomDate,
  dicomwebRoot,
  shareError,
  shareRoot,
  getJson,
  tagText,
  tagValues,
  Tags,
  type DicomJson,
} from '../api';
import { ErrorPanel, Thumbnail, useLoad } from '../components';

const PAGE_SIZE = 25;

interface Filters {
  name: string;
  id: string;
  from: string;
  to: string;
  modality: string;
  accession: string;
  description: string;
}
const EMPTY: Filters = { name: '', id: '', from: '', to: '', modality: '', accession: '', description: '' };

/** Sortable columns and the attribute the gateway orders by (its `orderby` extension to QIDO-RS). */
const SORTS = {
  name: 'PatientName',
  id: 'PatientID',
  date: 'StudyDate',
  modality: 'ModalitiesInStudy',
  description: 'StudyDescription',
  accession: 'AccessionNumber',
  series: 'NumberOfStudyRelatedSeries',
  instances: 'NumberOfStudyRelatedInstances',
} as const;
export type SortKey = keyof typeof SORTS;
export interface Sort {
  key?: SortKey;
  dir: 1 | -1;
}

/**
 * QIDO-RS query parameters (PS3.18 §8.3.4) for the filters; patient names match fuzzily, descriptions anywhere. A
 * chosen column becomes `orderby=[-]Keyword`, which the gateway answers from its index across every page (PS3.18 has
 * no ordering parameter; without one the archive's order is newest first).
 */
export function qidoQuery(f: Filters, offset: number, sort: Sort = { dir: 1 }): URLSearchParams {
  const q = new URLSearchParams();
  if (f.name.trim()) {
    q.set('PatientName', f.name.trim());
    q.set('fuzzymatching', 'true');
  }
  if (f.id.trim()) q.set('PatientID', f.id.trim());
  const from = f.from.replace(/-/g, '');
  const to = f.to.replace(/-/g, '');
  if (from || to) q.set('StudyDate', from === to ? from : `${from}-${to}`);
  if (f.modality.trim()) q.set('ModalitiesInStudy', f.modality.trim().toUpperCase());
  if (f.accession.trim()) q.set('AccessionNumber', f.accession.trim());
  if (f.description.trim()) q.set('StudyDescription', `*${f.description.trim()}*`);
  q.set('includefield', `${Tags.NumberOfStudyRelatedSeries},${Tags.NumberOfStudyRelatedInstances}`);
  if (sort.key) q.set('orderby', `${sort.dir === -1 ? '-' : ''}${SORTS[sort.key]}`);
  q.set('limit', String(PAGE_SIZE));
  q.set('offset', String(offset));
  return q;
}

/** What the sort state says under the table, in words. */
const SORT_LABELS: Record<SortKey, string> = {
  name: 'patient name',
  id: 'patient ID',
  date: 'date',
  modality: 'modalities',
  description: 'description',
  accession: 'accession number',
  series: 'number of series',
  instances: 'number of instances',
};

/** Studies of one project, or of every project the user can read; filters are kept in state, never in the URL. */
export function StudiesPage({ project, share }: { project?: string; share?: string }) {
  const [draft, setDraft] = useState<Filters>(EMPTY);
  const [filters, setFilters] = useState<Filters>(EMPTY);
  const [offset, setOffset] = useState(0);
  const [sort, setSort] = useState<Sort>({ dir: 1 });
  const root = share ? shareRoot(share) : dicomwebRoot(project);
  const { data, error, loading } = useLoad(
    () =>
      getJson<DicomJson[]>(
        `${root}/studies?${qidoQuery(filters, offset, sort).toString()}`,
        'application/dicom+json',
      ),
    [root, filters, offset, sort],
  );
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setOffset(0);
    setFilters({ ...draft });
  };
  const field = (key: keyof Filters, label: string, type = 'text') => (
    <label>
      {label}
      <input
        name={key}
        type={type}
        value={draft[key]}
        onChange={(e) => setDraft({ ...draft, [key]: e.target.value })}
      />
    </label>
  );
  const header = (key: SortKey, label: string, num = false) => (
    <th
      className={num ? 'num' : undefined}
      aria-sort={sort.key === key ? (sort.dir === 1 ? 'ascending' : 'descending') : 'none'}
    >
      <button
        type="button"
        className="sort"
        data-sort={key}
        title={`Sort all matching studies by ${SORT_LABELS[key]}`}
        onClick={() => {
          // A new order starts again at the first page: page 3 of another order is another set of studies.
          setOffset(0);
          setSort({ key, dir: sort.key === key ? (sort.dir === 1 ? -1 : 1) : 1 });
        }}
      >
        {label}
        {sort.key === key ? (sort.dir === 1 ? ' ▲' : ' ▼') : ''}
      </button>
    </th>
  );
  const studyLink = (uid: string) =>
    share
      ? `#/share/${share}/studies/${uid}`
      : project
        ? `#/p/${encodeURIComponent(project)}/studies/${uid}`
        : `#/studies/${uid}`;
  return (
    <section>
      <h1>
        {share ? 'Shared with you' : project ? `Studies in ${project}` : 'Studies in all your projects'}
      </h1>
      <form className="filters" onSubmit={submit} id="study-filters">
        {field('name', 'Patient name')}
        {field('id', 'Patient ID')}
        {field('from', 'From', 'date')}
        {field('to', 'To', 'date')}
        {field('modality', 'Modality')}
        {field('accession', 'Accession')}
        {field('description', 'Description')}
        <button type="submit" id="search">
          Search
        </button>
        <button
          type="button"
          onClick={() => {
            setDraft(EMPTY);
            setFilters(EMPTY);
            setOffset(0);
          }}
        >
          Clear
        </button>
      </form>
      {error !== undefined && <ErrorPanel error={share ? shareError(error) : error} />}
      {loading && <p className="muted">Loading…</p>}
      {data && data.length === 0 && <p id="no-studies">No study matches these filters.</p>}
      {data && data.length > 0 && (
        <table id="studies">
          <thead>
            <tr>
              <th />
              {header('name', 'Patient')}
              {header('id', 'Patient ID')}
              {header('date', 'Date')}
              {header('modality', 'Modalities')}
              {header('description', 'Description')}
              {header('accession', 'Accession')}
              {header('series', 'Series', true)}
              {header('instances', 'Instances', true)}
            </tr>
          </thead>
          <tbody>
            {data.map((s) => {
              const uid = tagText(s, Tags.StudyInstanceUID);
              return (
                <tr key={uid} data-study={uid}>
                  <td>
                    <Thumbnail path={`${root}/studies/${uid}/thumbnail`} label="Study preview" />
                  </td>
                  <td>
                    <a href={studyLink(uid)} data-col="name">
                      {tagText(s, Tags.PatientName) || '(no name)'}
                    </a>
                  </td>
                  <td>{tagText(s, Tags.PatientID)}</td>
                  <td>{dicomDate(tagText(s, Tags.StudyDate))}</td>
                  <td>{tagValues(s, Tags.ModalitiesInStudy).join(', ')}</td>
                  <td>{tagText(s, Tags.StudyDescription)}</td>
                  <td>{tagText(s, Tags.AccessionNumber)}</td>
                  <td className="num">{tagText(s, Tags.NumberOfStudyRelatedSeries)}</td>
                  <td className="num">{tagText(s, Tags.NumberOfStudyRelatedInstances)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {data && data.length > 0 && (
        <p className="muted" id="sort-note">
          {sort.key
            ? `All matching studies sorted by ${SORT_LABELS[sort.key]}, ${
                sort.dir === 1 ? 'ascending' : 'descending'
              } (empty values ${sort.dir === 1 ? 'first' : 'last'}).`
            : 'Newest first. Click a column heading to sort all matching studies by it.'}
        </p>
      )}
      <div className="pager">
        <button
          id="prev-page"
          disabled={offset === 0 || loading}
          onClick={() => setOffset(Math.max(0, offset - PAGE_SIZE))}
        >
          Previous
        </button>
        <span id="page-range">{data && data.length > 0 ? `${offset + 1}–${offset + data.length}` : ''}</span>
        <button
          id="next-page"
          disabled={loading || !data || data.length < PAGE_SIZE}
          onClick={() => setOffset(offset + PAGE_SIZE)}
        >
          Next
        </button>
      </div>
    </section>
  );
}
