import { useEffect, useState, type FormEvent } from 'react';
import {
  dicomDate,
  dicomwebRoot,
  gatewayFetch,
  getJson,
  streamedDownload,
  tagText,
  Tags,
  type DicomJson,
  type Project,
} from '../api';
import { ErrorPanel, useLoad } from '../components';

/** The PS3.15 Annex E options the cohort API accepts (src/cohorts/deid-port.ts DEID_OPTION_NAMES), in words. */
export const DEID_OPTIONS: Array<{ name: string; label: string; help: string }> = [
  {
    name: 'retainSafePrivate',
    label: 'Retain safe private attributes',
    help: 'Private tags known to hold no identity',
  },
  { name: 'retainUIDs', label: 'Retain UIDs', help: 'Keep the original Study/Series/SOP Instance UIDs' },
  {
    name: 'retainDeviceIdentity',
    label: 'Retain device identity',
    help: 'Station name, device serial numbers',
  },
  {
    name: 'retainInstitutionIdentity',
    label: 'Retain institution identity',
    help: 'Institution name and address, department',
  },
  {
    name: 'retainPatientCharacteristics',
    label: 'Retain patient characteristics',
    help: 'Sex, age, size, weight, ethnic group',
  },
  {
    name: 'retainLongitudinalFullDates',
    label: 'Retain longitudinal temporal information (full dates)',
    help: 'Dates and times as they are',
  },
  {
    name: 'retainLongitudinalModifiedDates',
    label: 'Retain longitudinal temporal information (modified dates)',
    help: 'Dates shifted by one offset per patient',
  },
  {
    name: 'cleanDescriptors',
    label: 'Clean descriptors',
    help: 'Keep descriptions, with identifying text removed',
  },
  { name: 'cleanStructuredContent', label: 'Clean structured content', help: 'Keep SR content, cleaned' },
  { name: 'cleanGraphics', label: 'Clean graphics', help: 'Keep overlays and graphic annotations, cleaned' },
];

/** A cohort as GET /api/cohorts/{id} gives it. */
interface Cohort {
  id: string;
  name: string;
  source_project?: string;
  research_project: string;
  state: 'queued' | 'running' | 'done' | 'cancelled';
  created_at: string;
  finished_at: string | null;
  profile: { name?: string; version?: string; options?: Record<string, boolean> } & Record<string, unknown>;
  progress: {
    total: number;
    done: number;
    pending: number;
    withheld: number;
    failed: number;
    withdrawn: number;
    bytes: number;
    reasons: Array<{ state: string; reason: string; count: number }>;
  };
}

const POLL_MS = 2000;

/** Saves a response body under a file name (small files: the mapping CSVs). */
async function saveAs(path: string, filename: string, accept: string): Promise<void> {
  const res = await gatewayFetch(path, { headers: { Accept: accept } });
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Cohorts made from a source project (curators), with a link to the wizard. */
export function CohortsPage({ project }: { project: string }) {
  const { data, error, loading } = useLoad(
    () => getJson<Cohort[]>(`/api/projects/${encodeURIComponent(project)}/cohorts`),
    [project],
  );
  return (
    <section>
      <h1>Research cohorts from {project}</h1>
      <p>
        <a id="new-cohort" className="button" href={`#/p/${encodeURIComponent(project)}/cohorts/new`}>
          New cohort
        </a>
      </p>
      {error !== undefined && <ErrorPanel error={error} />}
      {loading && !data && <p className="muted">Loading…</p>}
      {data && data.length === 0 && <p id="no-cohorts">No cohort has been made from this project yet.</p>}
      {data && data.length > 0 && (
        <table id="cohorts">
          <thead>
            <tr>
              <th>Name</th>
              <th>Research project</th>
              <th>State</th>
              <th className="num">Instances</th>
              <th>Created</th>
            </tr>
          </thead>
          <tbody>
            {data.map((c) => (
              <tr key={c.id} data-cohort={c.id}>
                <td>
                  <a href={`#/cohorts/${c.id}`}>{c.name}</a>
                </td>
                <td>{c.research_project}</td>
                <td>{c.state}</td>
                <td className="num">{c.progress.total}</td>
                <td>{new Date(c.created_at).toLocaleString()}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

interface Pick {
  id: string;
  from: string;
  to: string;
  modality: string;
  description: string;
}

/** The QIDO parameters of the wizard's filters: the same words as the study browser. */
function pickQuery(f: Pick): Record<string, string> {
  const q: Record<string, string> = {};
  if (f.id.trim()) q.PatientID = f.id.trim();
  const from = f.from.replace(/-/g, '');
  const to = f.to.replace(/-/g, '');
  if (from || to) q.StudyDate = from === to ? from : `${from}-${to}`;
  if (f.modality.trim()) q.ModalitiesInStudy = f.modality.trim().toUpperCase();
  if (f.description.trim()) q.StudyDescription = `*${f.description.trim()}*`;
  return q;
}

const WIZARD_PAGE = 100;

/**
 * A Records search handed to the wizard (issue 18): its criteria (the body of POST …/subjects/search without paging)
 * and what it found. Kept in sessionStorage, never in the URL: criteria can quote free text.
 */
export interface RecordsPick {
  query: { records: unknown[]; imaging?: Record<string, string> };
  subjects: number;
  more: boolean;
  studies: number;
}

const recordsPickKey = (project: string) => `aperture.cohort-from-records.${project}`;

/** Hands a Records search to the cohort wizard of the project and opens it. */
export function openWizardWithRecords(project: string, pick: RecordsPick): void {
  sessionStorage.setItem(recordsPickKey(project), JSON.stringify(pick));
  location.hash = `#/p/${encodeURIComponent(project)}/cohorts/new`;
}

function takeRecordsPick(project: string): RecordsPick | undefined {
  const raw = sessionStorage.getItem(recordsPickKey(project));
  if (!raw) return undefined;
  try {
    return JSON.parse(raw) as RecordsPick;
  } catch {
    return undefined;
  }
}

/**
 * The cohort wizard (curators of the source project): 1. pick studies (QIDO filters, tick studies or take every
 * match), 2. de-identification options, 3. target research project and name, 4. review and start. Patient names stay
 * in page state, never in the URL.
 */
export function CohortWizardPage({ project }: { project: string }) {
  const [step, setStep] = useState(1);
  const [draft, setDraft] = useState<Pick>({ id: '', from: '', to: '', modality: '', description: '' });
  const [filters, setFilters] = useState<Pick>(draft);
  const [fromRecords] = useState(() => takeRecordsPick(project));
  const [mode, setMode] = useState<'selected' | 'query' | 'records'>(fromRecords ? 'records' : 'selected');
  const [withRecords, setWithRecords] = useState(fromRecords !== undefined);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [options, setOptions] = useState<Record<string, boolean>>({});
  const [targetKind, setTargetKind] = useState<'existing' | 'new'>('new');
  const [existing, setExisting] = useState('');
  const [newId, setNewId] = useState('');
  const [newName, setNewName] = useState('');
  const [name, setName] = useState('');
  const [submitError, setSubmitError] = useState<unknown>();
  const [starting, setStarting] = useState(false);
  const root = dicomwebRoot(project);
  const studies = useLoad(() => {
    const q = new URLSearchParams(pickQuery(filters));
    q.set('includefield', Tags.NumberOfStudyRelatedInstances);
    q.set('limit', String(WIZARD_PAGE));
    return getJson<DicomJson[]>(`${root}/studies?${q.toString()}`, 'application/dicom+json');
  }, [root, filters]);
  const projects = useLoad(() => getJson<Project[]>('/api/projects'), []);
  const adminOf = (projects.data ?? []).filter((p) => p.id !== project && p.roles.includes('admin'));

  const toggle = (uid: string) => {
    const next = new Set(selected);
    if (next.has(uid)) next.delete(uid);
    else next.add(uid);
    setSelected(next);
  };
  const search = (e: FormEvent) => {
    e.preventDefault();
    setFilters({ ...draft });
  };
  const field = (key: keyof Pick, label: string, type = 'text') => (
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
  const studiesChosen =
    mode === 'records'
      ? (fromRecords?.studies ?? 0) > 0
      : mode === 'selected'
        ? selected.size > 0
        : (studies.data?.length ?? 0) > 0;
  const targetChosen =
    targetKind === 'existing' ? existing !== '' : newId.trim() !== '' && newName.trim() !== '';

  const start = async () => {
    setStarting(true);
    setSubmitError(undefined);
    try {
      const body = {
        name: name.trim(),
        ...(mode === 'records' && fromRecords
          ? { records_query: fromRecords.query }
          : mode === 'selected'
            ? { studies: [...selected] }
            : { query: pickQuery(filters) }),
        ...(withRecords ? { records: true } : {}),
        options,
        target:
          targetKind === 'existing'
            ? { project: existing }
            : { new: { id: newId.trim(), name: newName.trim() } },
      };
      const res = await gatewayFetch(`/api/projects/${encodeURIComponent(project)}/cohorts`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify(body),
      });
      const made = (await res.json()) as { id: string };
      sessionStorage.removeItem(recordsPickKey(project));
      location.hash = `#/cohorts/${made.id}`;
    } catch (err) {
      setSubmitError(err);
    } finally {
      setStarting(false);
    }
  };

  return (
    <section id="cohort-wizard">
      <h1>New research cohort from {project}</h1>
      <ol className="steps">
        {['Studies', 'De-identification', 'Target', 'Start'].map((s, i) => (
          <li key={s} className={step === i + 1 ? 'current' : ''}>
            {s}
          </li>
        ))}
      </ol>

      {step === 1 && mode === 'records' && fromRecords && (
        <div id="wizard-from-records">
          <p>
            The studies of the{' '}
            <strong>
              {fromRecords.subjects}
              {fromRecords.more ? '+' : ''}
            </strong>{' '}
            subject
            {fromRecords.subjects === 1 ? '' : 's'} the Records search found ({fromRecords.studies}
            {fromRecords.more ? '+' : ''} matching stud{fromRecords.studies === 1 ? 'y' : 'ies'}): the gateway
            runs the same search again when the cohort starts and takes every match.
          </p>
          <p>
            <label>
              <input
                id="wizard-with-records"
                type="checkbox"
                checked={withRecords}
                onChange={(e) => setWithRecords(e.target.checked)}
              />{' '}
              Carry the subjects&apos; records (de-identified CSV beside the images)
            </label>
          </p>
          <p>
            <button
              type="button"
              onClick={() => {
                sessionStorage.removeItem(recordsPickKey(project));
                setMode('selected');
              }}
            >
              Pick studies instead
            </button>{' '}
            <button id="wizard-next-1" disabled={!studiesChosen} onClick={() => setStep(2)}>
              Next
            </button>
          </p>
        </div>
      )}

      {step === 1 && mode !== 'records' && (
        <div id="wizard-studies">
          <form className="filters" onSubmit={search}>
            {field('id', 'Patient ID')}
            {field('from', 'From', 'date')}
            {field('to', 'To', 'date')}
            {field('modality', 'Modality')}
            {field('description', 'Description')}
            <button type="submit" id="wizard-search">
              Search
            </button>
          </form>
          <p>
            <label>
              <input
                type="radio"
                name="mode"
                checked={mode === 'selected'}
                onChange={() => setMode('selected')}
              />{' '}
              The studies I tick
            </label>{' '}
            <label>
              <input type="radio" name="mode" checked={mode === 'query'} onChange={() => setMode('query')} />{' '}
              Every study matching these filters (evaluated when the cohort starts)
            </label>
          </p>
          {studies.error !== undefined && <ErrorPanel error={studies.error} />}
          {studies.data && studies.data.length === 0 && (
            <p className="muted">No study matches these filters.</p>
          )}
          {studies.data && studies.data.length > 0 && (
            <table id="wizard-study-list">
              <thead>
                <tr>
                  <th>
                    <input
                      type="checkbox"
                      aria-label="Tick every study shown"
                      disabled={mode !== 'selected'}
                      checked={studies.data.every((d) => selected.has(tagText(d, Tags.StudyInstanceUID)))}
                      onChange={(e) =>
                        setSelected(
                          e.target.checked
                            ? new Set(studies.data?.map((d) => tagText(d, Tags.StudyInstanceUID)))
                            : new Set(),
                        )
                      }
                    />
                  </th>
                  <th>Patient</th>
                  <th>Patient ID</th>
                  <th>Date</th>
                  <th>Modalities</th>
                  <th>Description</th>
                  <th className="num">Instances</th>
                </tr>
              </thead>
              <tbody>
                {studies.data.map((d) => {
                  const uid = tagText(d, Tags.StudyInstanceUID);
                  return (
                    <tr key={uid} data-study={uid}>
                      <td>
                        <input
                          type="checkbox"
                          disabled={mode !== 'selected'}
                          checked={selected.has(uid)}
                          onChange={() => toggle(uid)}
                        />
                      </td>
                      <td>{tagText(d, Tags.PatientName)}</td>
                      <td>{tagText(d, Tags.PatientID)}</td>
                      <td>{dicomDate(tagText(d, Tags.StudyDate))}</td>
                      <td>{(d[Tags.ModalitiesInStudy]?.Value ?? []).join(', ')}</td>
                      <td>{tagText(d, Tags.StudyDescription)}</td>
                      <td className="num">{tagText(d, Tags.NumberOfStudyRelatedInstances)}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          )}
          {studies.data && studies.data.length >= WIZARD_PAGE && (
            <p className="muted">
              The first {WIZARD_PAGE} matches are shown; narrow the filters, or take every match.
            </p>
          )}
          <p>
            {mode === 'selected' ? `${selected.size} studies ticked.` : 'Every matching study will be taken.'}{' '}
            <button id="wizard-next-1" disabled={!studiesChosen} onClick={() => setStep(2)}>
              Next
            </button>
          </p>
        </div>
      )}

      {step === 2 && (
        <div id="wizard-options">
          <p>
            The Basic Application Level Confidentiality Profile (PS3.15 Annex E) always applies. Each option
            keeps or cleans a group of attributes the profile would otherwise remove.
          </p>
          {DEID_OPTIONS.map((o) => (
            <p key={o.name}>
              <label>
                <input
                  type="checkbox"
                  name={o.name}
                  checked={options[o.name] === true}
                  onChange={(e) => setOptions({ ...options, [o.name]: e.target.checked })}
                />{' '}
                {o.label} <span className="muted">({o.help})</span>
              </label>
            </p>
          ))}
          <p>
            <button onClick={() => setStep(1)}>Back</button>{' '}
            <button id="wizard-next-2" onClick={() => setStep(3)}>
              Next
            </button>
          </p>
        </div>
      )}

      {step === 3 && (
        <div id="wizard-target">
          <p>
            <label>
              <input
                type="radio"
                name="target"
                checked={targetKind === 'new'}
                onChange={() => setTargetKind('new')}
              />{' '}
              A new research project (you become its administrator)
            </label>
          </p>
          {targetKind === 'new' && (
            <p className="filters">
              <label>
                Project id
                <input name="new-id" value={newId} onChange={(e) => setNewId(e.target.value)} />
              </label>
              <label>
                Project name
                <input name="new-name" value={newName} onChange={(e) => setNewName(e.target.value)} />
              </label>
            </p>
          )}
          <p>
            <label>
              <input
                type="radio"
                name="target"
                checked={targetKind === 'existing'}
                disabled={adminOf.length === 0}
                onChange={() => setTargetKind('existing')}
              />{' '}
              An existing research project you administer
            </label>{' '}
            {targetKind === 'existing' && (
              <select name="existing" value={existing} onChange={(e) => setExisting(e.target.value)}>
                <option value="">choose…</option>
                {adminOf.map((p) => (
                  <option key={p.id} value={p.id}>
                    {p.id} — {p.name}
                  </option>
                ))}
              </select>
            )}
          </p>
          <p>
            <label>
              Cohort name <input name="cohort-name" value={name} onChange={(e) => setName(e.target.value)} />
            </label>
          </p>
          <p>
            <button onClick={() => setStep(2)}>Back</button>{' '}
            <button id="wizard-next-3" disabled={!targetChosen || !name.trim()} onClick={() => setStep(4)}>
              Next
            </button>
          </p>
        </div>
      )}

      {step === 4 && (
        <div id="wizard-review">
          <table className="attrs">
            <tbody>
              <tr>
                <th>Name</th>
                <td>{name}</td>
              </tr>
              <tr>
                <th>Studies</th>
                <td>
                  {mode === 'records'
                    ? `the ${fromRecords?.subjects ?? 0}${fromRecords?.more ? '+' : ''} subjects of the Records search${withRecords ? ', with their records' : ''}`
                    : mode === 'selected'
                      ? `${selected.size} ticked`
                      : 'every study matching the filters'}
                </td>
              </tr>
              <tr>
                <th>Options</th>
                <td id="review-options">
                  {DEID_OPTIONS.filter((o) => options[o.name])
                    .map((o) => o.label)
                    .join('; ') || 'none (Basic profile only)'}
                </td>
              </tr>
              <tr>
                <th>Target</th>
                <td>{targetKind === 'existing' ? existing : `new project ${newId} (${newName})`}</td>
              </tr>
            </tbody>
          </table>
          {submitError !== undefined && <ErrorPanel error={submitError} />}
          <p>
            <button onClick={() => setStep(3)}>Back</button>{' '}
            <button id="start-cohort" disabled={starting} onClick={() => void start()}>
              {starting ? 'Starting…' : 'Start the cohort'}
            </button>
          </p>
        </div>
      )}
    </section>
  );
}

/**
 * One cohort: live progress (polled while it runs), reasons for withheld or failed instances, downloads (ZIP for
 * research readers, mapping CSVs for source curators), cancel/retry, and withdrawal of a subject by pseudonym.
 */
export function CohortPage({ cohort }: { cohort: string }) {
  const [version, setVersion] = useState(0);
  const [tick, setTick] = useState(0);
  const [actionError, setActionError] = useState<unknown>();
  const [confirm, setConfirm] = useState('');
  const [notice, setNotice] = useState('');
  const { data, error } = useLoad(
    () => getJson<Cohort>(`/api/cohorts/${encodeURIComponent(cohort)}`),
    [cohort, version, tick],
  );
  const running = data?.state === 'queued' || data?.state === 'running';
  useEffect(() => {
    if (!running) return;
    const t = setTimeout(() => setTick((n) => n + 1), POLL_MS);
    return () => clearTimeout(t);
  }, [running, tick, data]);
  const curator = data?.source_project !== undefined;
  const subjects = useLoad(async () => {
    if (!data || data.state !== 'done') return [] as string[];
    const q = new URLSearchParams({ includefield: Tags.PatientID, limit: '1000' });
    const rows = await getJson<DicomJson[]>(
      `${dicomwebRoot(data.research_project)}/studies?${q.toString()}`,
      'application/dicom+json',
    );
    return [
      ...new Set(rows.map((r) => tagText(r, Tags.PatientID)).filter((p) => /^RP[0-9A-F]{12}$/.test(p))),
    ].sort();
  }, [data?.research_project, data?.state, data?.progress.withdrawn, version]);

  if (error !== undefined && !data) return <ErrorPanel error={error} />;
  if (!data) return <p className="muted">Loading…</p>;
  const p = data.progress;
  const settled = p.done + p.withheld + p.failed + p.withdrawn;

  const act = async (fn: () => Promise<unknown>, done?: string) => {
    setActionError(undefined);
    setNotice('');
    try {
      await fn();
      if (done) setNotice(done);
      setVersion((v) => v + 1);
    } catch (err) {
      setActionError(err);
    }
  };
  const post = (path: string, method = 'POST') =>
    gatewayFetch(path, { method, headers: { Accept: 'application/json' } });

  return (
    <section id="cohort" data-state={data.state}>
      <h1>Cohort {data.name}</h1>
      <table className="attrs">
        <tbody>
          <tr>
            <th>State</th>
            <td id="cohort-state">{data.state}</td>
          </tr>
          {data.source_project && (
            <tr>
              <th>From</th>
              <td>
                <a href={`#/p/${encodeURIComponent(data.source_project)}/cohorts`}>{data.source_project}</a>
              </td>
            </tr>
          )}
          <tr>
            <th>Research project</th>
            <td>
              <a id="research-project" href={`#/p/${encodeURIComponent(data.research_project)}/studies`}>
                {data.research_project}
              </a>
            </td>
          </tr>
          <tr>
            <th>Profile</th>
            <td>{[data.profile.name, data.profile.version].filter(Boolean).join(' ')}</td>
          </tr>
        </tbody>
      </table>
      <p id="cohort-progress">
        <progress max={p.total || 1} value={settled} /> {settled} of {p.total} instances: {p.done} stored,{' '}
        {p.withheld} withheld, {p.failed} failed, {p.withdrawn} withdrawn, {p.pending} to do
      </p>
      {p.reasons.length > 0 && (
        <table id="cohort-reasons" className="attrs">
          <thead>
            <tr>
              <th>Outcome</th>
              <th>Reason</th>
              <th className="num">Instances</th>
            </tr>
          </thead>
          <tbody>
            {p.reasons.map((r) => (
              <tr key={`${r.state}/${r.reason}`}>
                <td>{r.state}</td>
                <td>{r.reason}</td>
                <td className="num">{r.count}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <p>
        {data.state === 'done' && p.done > 0 && (
          <button
            id="download-cohort"
            onClick={() =>
              void act(() => streamedDownload(`/api/cohorts/${data.id}/archive`, `cohort-${data.id}.zip`))
            }
          >
            Download the ZIP
          </button>
        )}{' '}
        {curator && (
          <button
            id="download-uid-mapping"
            onClick={() =>
              void act(() =>
                saveAs(`/api/cohorts/${data.id}/uid_mapping.csv`, `cohort-${data.id}-uids.csv`, 'text/csv'),
              )
            }
          >
            UID mapping (CSV)
          </button>
        )}{' '}
        {curator && (
          <button
            id="download-patid-mapping"
            onClick={() =>
              void act(() =>
                saveAs(
                  `/api/cohorts/${data.id}/patid_mapping.csv`,
                  `cohort-${data.id}-patients.csv`,
                  'text/csv',
                ),
              )
            }
          >
            Patient ID mapping (CSV)
          </button>
        )}{' '}
        {curator && running && (
          <button id="cancel-cohort" onClick={() => void act(() => post(`/api/cohorts/${data.id}/cancel`))}>
            Cancel
          </button>
        )}{' '}
        {curator && (p.failed > 0 || data.state === 'cancelled') && (
          <button id="retry-cohort" onClick={() => void act(() => post(`/api/cohorts/${data.id}/retry`))}>
            Retry failed instances
          </button>
        )}
      </p>
      {notice && (
        <p className="notice" role="status">
          {notice}
        </p>
      )}
      {actionError !== undefined && <ErrorPanel error={actionError} />}
      {curator && subjects.data && subjects.data.length > 0 && (
        <>
          <h2>Subjects</h2>
          <p className="muted">
            Withdrawing a subject deletes every copy of that pseudonym from the research project and from
            later downloads.
          </p>
          <table id="cohort-subjects">
            <tbody>
              {subjects.data.map((s) => (
                <tr key={s} data-subject={s}>
                  <td className="uid">{s}</td>
                  <td>
                    {confirm === s ? (
                      <>
                        <button
                          data-action="confirm-withdraw"
                          onClick={() =>
                            void act(async () => {
                              setConfirm('');
                              await post(
                                `/api/cohorts/${data.id}/subjects/${encodeURIComponent(s)}`,
                                'DELETE',
                              );
                            }, `Subject ${s} was withdrawn.`)
                          }
                        >
                          Yes, withdraw {s}
                        </button>{' '}
                        <button onClick={() => setConfirm('')}>Keep</button>
                      </>
                    ) : (
                      <button data-action="withdraw" onClick={() => setConfirm(s)}>
                        Withdraw
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}
