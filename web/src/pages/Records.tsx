import { useEffect, useState, type FormEvent } from 'react';
import {
  explain,
  explainText,
  gatewayFetch,
  gatewayFetchAny,
  getJson,
  ndjsonLines,
  projectRoles,
  roleAtLeast,
  streamedDownload,
  uploadWithProgress,
  UserFacingError,
} from '../api';
import { ErrorPanel, useLoad } from '../components';
import { openWizardWithRecords, type RecordsPick } from './Cohorts';

/**
 * Research records of a project (issue 18): subjects, record types, spreadsheet import, export and summaries; a
 * subject's records and non-DICOM files on its own page. Subjects are addressed by their UUID in the hash, never by
 * Patient ID. Controls follow the caller's role (readers read; contributors write records and files; curators
 * define types, import and export); the API enforces the same.
 */

/** A record type as GET /record-types lists it. */
interface RecordTypeInfo {
  name: string;
  version: number;
  key: string | null;
  parent: string | null;
  schema: Schema;
}

interface Schema {
  properties?: Record<string, FieldSchema>;
  required?: string[];
  'x-time-to-event'?: { time: string; event: string };
}

interface FieldSchema {
  type?: string;
  format?: string;
  enum?: string[];
  'x-unit'?: string;
  'x-ref'?: 'study' | 'series';
  minimum?: number;
  maximum?: number;
  maxLength?: number;
  description?: string;
}

type FieldKind = 'number' | 'date' | 'code' | 'text' | 'boolean' | 'ref';

/** One form field, read from the type's JSON Schema with the gateway's own rules (src/records/schema.ts). */
interface Field {
  name: string;
  kind: FieldKind;
  required: boolean;
  integer: boolean;
  unit?: string;
  codes?: string[];
  ref?: 'study' | 'series';
  min?: number;
  max?: number;
  description?: string;
}

/**
 * The fields of a type, the key field first. (The gateway keeps schemas as jsonb, which orders an object's keys by
 * length then name, so the schema's own order is not known here.)
 */
function fieldsOf(t: RecordTypeInfo): Field[] {
  const required = new Set(t.schema.required ?? []);
  const entries = Object.entries(t.schema.properties ?? {});
  entries.sort(([a], [b]) => Number(b === t.key) - Number(a === t.key));
  return entries.map(([name, p]) => {
    const f: Field = { name, kind: 'text', required: required.has(name), integer: false };
    if (p.type === 'number' || p.type === 'integer') {
      f.kind = 'number';
      f.integer = p.type === 'integer';
      f.unit = p['x-unit'];
      f.min = p.minimum;
      f.max = p.maximum;
    } else if (p.type === 'boolean') f.kind = 'boolean';
    else if (p.format === 'date') f.kind = 'date';
    else if (Array.isArray(p.enum)) {
      f.kind = 'code';
      f.codes = p.enum.map(String);
    } else if (p['x-ref']) {
      f.kind = 'ref';
      f.ref = p['x-ref'];
    }
    f.description = p.description;
    return f;
  });
}

interface Subject {
  id: string;
  patient_id: string;
  issuer: string;
  kind: 'patient' | 'phantom';
  studies?: number;
  records?: number;
}

interface RecordRow {
  id: string;
  type: string;
  key: string;
  parent: string | null;
  data: Record<string, unknown>;
  revision: number;
  updated_at: string;
}

interface SubjectDetail extends Omit<Subject, 'studies' | 'records'> {
  studies_list: Array<{
    study_uid: string;
    study_date: string | null;
    modalities: string[];
    study_description: string | null;
  }>;
  records: RecordRow[];
}

interface FileRow {
  id: string;
  path: string;
  version: number;
  sha256: string;
  size: number;
  media_type: string;
  record: string | null;
  created_at: string;
}

const base = (project: string) => `/api/projects/${encodeURIComponent(project)}`;

/** "field: message; other: message" (the gateway's 400 for a record) as field → message. */
function fieldProblems(message: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of message.split('; ')) {
    const m = /^([A-Za-z0-9_./[\]-]+): (.+)$/.exec(part.trim());
    if (m) out[m[1].replace(/^(data[./])/, '').replace(/^\//, '')] = m[2];
  }
  return out;
}

/** The gateway's safe message of a refusal, or undefined. */
async function refusalMessage(res: Response): Promise<string | undefined> {
  try {
    const body = (await res.clone().json()) as { errors?: Array<{ message?: string }> };
    return body.errors?.[0]?.message;
  } catch {
    return undefined;
  }
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

function cellText(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  return String(v);
}

// ---------------------------------------------------------------------------------------------- project page

/** `#/p/{project}/records`: subjects, types, import, export and summary of one project. */
export function RecordsPage({ project }: { project: string }) {
  const [version, setVersion] = useState(0);
  const [imports, setImports] = useState(0);
  const roles = useLoad(() => projectRoles(project), [project]);
  const types = useLoad(() => getJson<RecordTypeInfo[]>(`${base(project)}/record-types`), [project, version]);
  const r = roles.data ?? [];
  return (
    <section id="records-page">
      <h1>Research records of {project}</h1>
      <p className="muted">
        Subjects are the project&apos;s patients and phantoms, linked to its studies by Patient ID and Issuer
        of Patient ID.
      </p>
      {(types.error ?? roles.error) !== undefined && <ErrorPanel error={types.error ?? roles.error} />}
      <SubjectsSection
        key={`subjects-${imports}`}
        project={project}
        canWrite={roleAtLeast(r, 'contributor')}
      />
      {types.data && types.data.length > 0 && (
        <SearchSection project={project} types={types.data} canCurate={roleAtLeast(r, 'curator')} />
      )}
      <TypesSection
        project={project}
        types={types.data ?? []}
        canDefine={roleAtLeast(r, 'curator')}
        onDefined={() => setVersion((v) => v + 1)}
      />
      {roleAtLeast(r, 'curator') && types.data && types.data.length > 0 && (
        <ImportSection project={project} types={types.data} onApplied={() => setImports((n) => n + 1)} />
      )}
      {types.data && types.data.length > 0 && (
        <SummarySection key={`summary-${imports}`} project={project} types={types.data} />
      )}
    </section>
  );
}

function SubjectsSection({ project, canWrite }: { project: string; canWrite: boolean }) {
  const PAGE = 50;
  const [offset, setOffset] = useState(0);
  const [version, setVersion] = useState(0);
  const list = useLoad(
    () => getJson<Subject[]>(`${base(project)}/subjects?limit=${PAGE}&offset=${offset}`),
    [project, offset, version],
  );
  const [patientId, setPatientId] = useState('');
  const [issuer, setIssuer] = useState('');
  const [kind, setKind] = useState<'patient' | 'phantom'>('patient');
  const [error, setError] = useState<unknown>();

  const add = async (e: FormEvent) => {
    e.preventDefault();
    setError(undefined);
    try {
      const res = await gatewayFetch(`${base(project)}/subjects`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ patient_id: patientId, issuer, kind }),
      });
      const s = (await res.json()) as Subject;
      location.hash = `#/p/${encodeURIComponent(project)}/records/subjects/${s.id}`;
    } catch (err) {
      setError(err);
    }
  };

  return (
    <section id="subjects">
      <h2>Subjects</h2>
      {list.error !== undefined && <ErrorPanel error={list.error} />}
      {list.data && list.data.length === 0 && offset === 0 && (
        <p className="muted">No subjects yet: they appear with the first images or the first import.</p>
      )}
      {list.data && list.data.length > 0 && (
        <table id="subjects-table">
          <thead>
            <tr>
              <th>Patient ID</th>
              <th>Issuer</th>
              <th>Kind</th>
              <th className="num">Studies</th>
              <th className="num">Records</th>
            </tr>
          </thead>
          <tbody>
            {list.data.map((s) => (
              <tr key={s.id} data-subject={s.id}>
                <td>
                  <a href={`#/p/${encodeURIComponent(project)}/records/subjects/${s.id}`}>{s.patient_id}</a>
                </td>
                <td>{s.issuer}</td>
                <td>{s.kind}</td>
                <td className="num">{s.studies}</td>
                <td className="num">{s.records}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <div className="pager">
        <button disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))}>
          Previous
        </button>
        <button disabled={!list.data || list.data.length < PAGE} onClick={() => setOffset(offset + PAGE)}>
          Next
        </button>
        <button onClick={() => setVersion((v) => v + 1)}>Refresh</button>
      </div>
      {canWrite && (
        <form id="add-subject" onSubmit={(e) => void add(e)}>
          <h3>Add a subject</h3>
          <label>
            Patient ID{' '}
            <input required maxLength={64} value={patientId} onChange={(e) => setPatientId(e.target.value)} />
          </label>{' '}
          <label>
            Issuer of Patient ID{' '}
            <input maxLength={64} value={issuer} onChange={(e) => setIssuer(e.target.value)} />
          </label>{' '}
          <label>
            Kind{' '}
            <select value={kind} onChange={(e) => setKind(e.target.value as 'patient' | 'phantom')}>
              <option value="patient">patient</option>
              <option value="phantom">phantom</option>
            </select>
          </label>{' '}
          <button type="submit">Add subject</button>
          {error !== undefined && <ErrorPanel error={error} />}
        </form>
      )}
    </section>
  );
}

type Op = 'eq' | 'in' | 'min' | 'max' | 'contains';
interface Condition {
  type: string;
  field: string;
  op: Op;
  value: string;
}

/** The operators that fit a field's kind (the gateway refuses the others, naming the condition). */
function opsOf(f: Field | undefined): Op[] {
  if (!f) return ['eq'];
  if (f.kind === 'number' || f.kind === 'date') return ['eq', 'min', 'max'];
  if (f.kind === 'code') return ['eq', 'in'];
  if (f.kind === 'text') return ['contains', 'eq'];
  return ['eq'];
}

const OP_LABEL: Record<Op, string> = {
  eq: 'is',
  in: 'is one of (comma-separated)',
  min: 'at least',
  max: 'at most',
  contains: 'contains',
};

/**
 * Subjects by record fields combined with imaging criteria (POST /subjects/search, answered from the index). The
 * criteria travel in the request body and stay in page state: nothing of them is put in the URL.
 */
function SearchSection({
  project,
  types,
  canCurate,
}: {
  project: string;
  types: RecordTypeInfo[];
  canCurate: boolean;
}) {
  const blank = (): Condition => {
    const f = fieldsOf(types[0])[0];
    return { type: types[0].name, field: f?.name ?? '', op: opsOf(f)[0], value: '' };
  };
  const [conds, setConds] = useState<Condition[]>([blank()]);
  const [modality, setModality] = useState('');
  const [dateFrom, setDateFrom] = useState('');
  const [dateTo, setDateTo] = useState('');
  const [description, setDescription] = useState('');
  const [found, setFound] = useState<{
    subjects: Array<Omit<Subject, 'studies' | 'records'> & { studies: string[] }>;
    more: boolean;
  }>();
  // The criteria of the search whose results are shown (what a cohort made from them runs again).
  const [searched, setSearched] = useState<RecordsPick['query']>();
  const [error, setError] = useState<unknown>();

  const fieldOf = (c: Condition) =>
    fieldsOf(types.find((t) => t.name === c.type) ?? types[0]).find((f) => f.name === c.field);
  const valueOf = (c: Condition): unknown => {
    const f = fieldOf(c);
    if (c.op === 'in')
      return c.value
        .split(',')
        .map((v) => v.trim())
        .filter(Boolean);
    if (f?.kind === 'number' && c.value.trim() !== '' && !Number.isNaN(Number(c.value)))
      return Number(c.value);
    if (f?.kind === 'boolean') return c.value === 'true';
    return c.value;
  };
  const update = (i: number, patch: Partial<Condition>) =>
    setConds(conds.map((c, j) => (j === i ? { ...c, ...patch } : c)));

  const search = async (e: FormEvent) => {
    e.preventDefault();
    setError(undefined);
    const imaging: Record<string, string> = {};
    if (modality) imaging.modality = modality.toUpperCase();
    if (dateFrom) imaging.date_from = dateFrom;
    if (dateTo) imaging.date_to = dateTo;
    if (description) imaging.description = description;
    const body = {
      records: conds
        .filter((c) => c.field && c.value !== '')
        .map((c) => ({ type: c.type, field: c.field, [c.op]: valueOf(c) })),
      ...(Object.keys(imaging).length ? { imaging } : {}),
    };
    try {
      const res = await gatewayFetch(`${base(project)}/subjects/search`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ ...body, limit: 200 }),
      });
      setFound((await res.json()) as typeof found);
      setSearched(body);
    } catch (err) {
      setError(err);
    }
  };

  return (
    <section id="search">
      <h2>Find subjects</h2>
      <form id="search-form" onSubmit={(e) => void search(e)}>
        {conds.map((c, i) => {
          const type = types.find((t) => t.name === c.type) ?? types[0];
          const f = fieldOf(c);
          return (
            <p key={i} data-condition={i}>
              <select
                name="type"
                value={c.type}
                onChange={(e) => {
                  const t = types.find((x) => x.name === e.target.value) ?? types[0];
                  const first = fieldsOf(t)[0];
                  update(i, { type: t.name, field: first?.name ?? '', op: opsOf(first)[0], value: '' });
                }}
              >
                {types.map((t) => (
                  <option key={t.name} value={t.name}>
                    {t.name}
                  </option>
                ))}
              </select>{' '}
              <select
                name="field"
                value={c.field}
                onChange={(e) => {
                  const nf = fieldsOf(type).find((x) => x.name === e.target.value);
                  update(i, { field: e.target.value, op: opsOf(nf)[0], value: '' });
                }}
              >
                {fieldsOf(type).map((x) => (
                  <option key={x.name} value={x.name}>
                    {x.name}
                  </option>
                ))}
              </select>{' '}
              <select name="op" value={c.op} onChange={(e) => update(i, { op: e.target.value as Op })}>
                {opsOf(f).map((o) => (
                  <option key={o} value={o}>
                    {OP_LABEL[o]}
                  </option>
                ))}
              </select>{' '}
              {f?.kind === 'code' && c.op === 'eq' ? (
                <select name="value" value={c.value} onChange={(e) => update(i, { value: e.target.value })}>
                  <option value="">(any)</option>
                  {(f.codes ?? []).map((code) => (
                    <option key={code} value={code}>
                      {code}
                    </option>
                  ))}
                </select>
              ) : f?.kind === 'boolean' ? (
                <select name="value" value={c.value} onChange={(e) => update(i, { value: e.target.value })}>
                  <option value="">(any)</option>
                  <option value="true">yes</option>
                  <option value="false">no</option>
                </select>
              ) : (
                <input
                  name="value"
                  type={f?.kind === 'date' ? 'date' : 'text'}
                  value={c.value}
                  onChange={(e) => update(i, { value: e.target.value })}
                />
              )}{' '}
              <button
                type="button"
                data-action="remove-condition"
                onClick={() => setConds(conds.filter((_, j) => j !== i))}
              >
                Remove
              </button>
            </p>
          );
        })}
        <button type="button" data-action="add-condition" onClick={() => setConds([...conds, blank()])}>
          Add a record condition
        </button>
        <p>
          With images:{' '}
          <label>
            modality{' '}
            <input
              id="search-modality"
              size={6}
              value={modality}
              onChange={(e) => setModality(e.target.value)}
            />
          </label>{' '}
          <label>
            from <input type="date" value={dateFrom} onChange={(e) => setDateFrom(e.target.value)} />
          </label>{' '}
          <label>
            to <input type="date" value={dateTo} onChange={(e) => setDateTo(e.target.value)} />
          </label>{' '}
          <label>
            description contains{' '}
            <input value={description} onChange={(e) => setDescription(e.target.value)} />
          </label>
        </p>
        <button id="search-submit" type="submit">
          Find subjects
        </button>
      </form>
      {error !== undefined && <ErrorPanel error={error} />}
      {found && (
        <>
          <p id="search-count">
            {found.subjects.length}
            {found.more ? '+' : ''} subject{found.subjects.length === 1 ? '' : 's'} found
          </p>
          {canCurate && searched && found.subjects.some((x) => x.studies.length > 0) && (
            <p>
              <button
                id="search-to-cohort"
                type="button"
                onClick={() =>
                  openWizardWithRecords(project, {
                    query: searched,
                    subjects: found.subjects.length,
                    more: found.more,
                    studies: found.subjects.reduce((n, x) => n + x.studies.length, 0),
                  })
                }
              >
                Make a research cohort of them
              </button>{' '}
              <span className="muted">(the cohort wizard, with these criteria)</span>
            </p>
          )}
          {found.subjects.length > 0 && (
            <table id="search-results">
              <thead>
                <tr>
                  <th>Patient ID</th>
                  <th>Issuer</th>
                  <th className="num">Matching studies</th>
                </tr>
              </thead>
              <tbody>
                {found.subjects.map((x) => (
                  <tr key={x.id} data-subject={x.id}>
                    <td>
                      <a href={`#/p/${encodeURIComponent(project)}/records/subjects/${x.id}`}>
                        {x.patient_id}
                      </a>
                    </td>
                    <td>{x.issuer}</td>
                    <td className="num">{x.studies.length}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </section>
  );
}

const EXAMPLE_SCHEMA = JSON.stringify(
  {
    type: 'object',
    properties: {
      treatment_id: { type: 'string', maxLength: 32 },
      stage: { type: 'string', enum: ['T1', 'T2', 'T3', 'T4'] },
      dose: { type: 'number', 'x-unit': 'Gy', minimum: 0 },
      start: { type: 'string', format: 'date' },
      months: { type: 'number', 'x-unit': 'month', minimum: 0 },
      died: { type: 'boolean' },
    },
    required: ['treatment_id', 'stage'],
    'x-time-to-event': { time: 'months', event: 'died' },
  },
  null,
  2,
);

function TypesSection({
  project,
  types,
  canDefine,
  onDefined,
}: {
  project: string;
  types: RecordTypeInfo[];
  canDefine: boolean;
  onDefined: () => void;
}) {
  const [name, setName] = useState('');
  const [key, setKey] = useState('');
  const [parent, setParent] = useState('');
  const [schema, setSchema] = useState(EXAMPLE_SCHEMA);
  const [error, setError] = useState<unknown>();
  const [done, setDone] = useState('');

  const define = async (e: FormEvent) => {
    e.preventDefault();
    setError(undefined);
    setDone('');
    let parsed: unknown;
    try {
      parsed = JSON.parse(schema);
    } catch {
      setError(new UserFacingError(400, 'The schema is not valid JSON.', 'Correct it and try again.'));
      return;
    }
    try {
      const res = await gatewayFetch(`${base(project)}/record-types/${encodeURIComponent(name)}`, {
        method: 'PUT',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ key: key || null, parent: parent || null, schema: parsed }),
      });
      const t = (await res.json()) as RecordTypeInfo;
      setDone(`${t.name} version ${t.version} defined.`);
      onDefined();
    } catch (err) {
      setError(err);
    }
  };

  const exportAs = async (t: string, format: 'csv' | 'xlsx') => {
    setError(undefined);
    try {
      // Streamed to disk by the browser through a single-use link: an export of many rows is never held in the page.
      await streamedDownload(
        `${base(project)}/record-types/${encodeURIComponent(t)}/export.${format}`,
        `${t}.${format}`,
      );
    } catch (err) {
      setError(err);
    }
  };

  return (
    <section id="record-types">
      <h2>Record types</h2>
      {types.length === 0 && <p className="muted">No record types are defined in this project.</p>}
      {types.length > 0 && (
        <table id="types-table">
          <thead>
            <tr>
              <th>Type</th>
              <th className="num">Version</th>
              <th>Key</th>
              <th>Parent</th>
              <th>Fields</th>
              {canDefine && <th>Export</th>}
            </tr>
          </thead>
          <tbody>
            {types.map((t) => (
              <tr key={t.name} data-type={t.name}>
                <td>{t.name}</td>
                <td className="num">{t.version}</td>
                <td>{t.key ?? ''}</td>
                <td>{t.parent ?? ''}</td>
                <td>
                  {fieldsOf(t)
                    .map((f) => `${f.name}${f.required ? '*' : ''} (${f.kind}${f.unit ? `, ${f.unit}` : ''})`)
                    .join(', ')}
                </td>
                {canDefine && (
                  <td>
                    <button data-action="export-csv" onClick={() => void exportAs(t.name, 'csv')}>
                      CSV
                    </button>{' '}
                    <button data-action="export-xlsx" onClick={() => void exportAs(t.name, 'xlsx')}>
                      XLSX
                    </button>
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {canDefine && (
        <form id="define-type" onSubmit={(e) => void define(e)}>
          <h3>Define a type (or its next version)</h3>
          <label>
            Name{' '}
            <input
              id="type-name"
              required
              pattern="[A-Za-z][A-Za-z0-9_]{0,63}"
              value={name}
              onChange={(e) => setName(e.target.value)}
            />
          </label>{' '}
          <label>
            Key field <input id="type-key" value={key} onChange={(e) => setKey(e.target.value)} />
          </label>{' '}
          <label>
            Parent type{' '}
            <select id="type-parent" value={parent} onChange={(e) => setParent(e.target.value)}>
              <option value="">(none)</option>
              {types.map((t) => (
                <option key={t.name} value={t.name}>
                  {t.name}
                </option>
              ))}
            </select>
          </label>
          <label className="block">
            JSON Schema
            <textarea
              id="type-schema"
              rows={14}
              cols={80}
              value={schema}
              onChange={(e) => setSchema(e.target.value)}
            />
          </label>
          <button type="submit" id="define-type-submit">
            Define type
          </button>
          {done && (
            <p className="notice" role="status">
              {done}
            </p>
          )}
          {error !== undefined && <ErrorPanel error={error} />}
        </form>
      )}
    </section>
  );
}

interface Outcome {
  row: number;
  action: 'create' | 'change' | 'unchanged' | 'refuse';
  key?: string;
  changed?: string[];
  errors?: Array<{ field: string; message: string }>;
}
interface Summary {
  rows: number;
  create: number;
  change: number;
  unchanged: number;
  refuse: number;
}

/**
 * The column names of a sheet as the gateway's import reads them (POST …/import/columns): the first row of an
 * XLSX's first worksheet, or of a CSV (`,` `;` or tab). A CSV is sent only as its first 64 KiB: the header is all
 * that is read.
 */
async function sheetColumns(project: string, type: string, file: File): Promise<string[]> {
  const xlsx = /\.xlsx$/i.test(file.name) || file.type.includes('spreadsheetml');
  const form = new FormData();
  form.append('file', xlsx ? file : file.slice(0, 64 * 1024), xlsx ? file.name : 'header.csv');
  const res = await gatewayFetch(`${base(project)}/record-types/${encodeURIComponent(type)}/import/columns`, {
    method: 'POST',
    body: form,
    headers: { Accept: 'application/json' },
  });
  return ((await res.json()) as { columns: string[] }).columns;
}

/**
 * Spreadsheet import: pick the type and the sheet, map columns to fields (guessed from the sheet's header), run a dry
 * run that lists every row's outcome, then apply. Progress is the NDJSON stream the gateway answers with.
 */
function ImportSection({
  project,
  types,
  onApplied,
}: {
  project: string;
  types: RecordTypeInfo[];
  onApplied: () => void;
}) {
  const [typeName, setTypeName] = useState(types[0].name);
  const type = types.find((t) => t.name === typeName) ?? types[0];
  const fields = fieldsOf(type);
  const [file, setFile] = useState<File>();
  const [columns, setColumns] = useState<string[]>([]);
  const [mapping, setMapping] = useState<Record<string, string>>({});
  const [running, setRunning] = useState<'' | 'dry' | 'apply'>('');
  const [sent, setSent] = useState(0);
  const [outcomes, setOutcomes] = useState<Outcome[]>([]);
  const [summary, setSummary] = useState<Summary>();
  const [applied, setApplied] = useState(false);
  const [error, setError] = useState<unknown>();
  const [dryRunDone, setDryRunDone] = useState(false);

  useEffect(() => {
    setDryRunDone(false);
    setOutcomes([]);
    setSummary(undefined);
  }, [typeName, file]);

  const pickFile = async (f: File | undefined) => {
    setError(undefined);
    let cols: string[] = [];
    try {
      if (f) cols = await sheetColumns(project, type.name, f);
    } catch (err) {
      setError(err);
    }
    // The file is taken once its columns are known, so the mapping appears with its guesses filled in.
    setFile(f);
    setColumns(cols);
    // Guess: a column named like the field (any case) maps to it; the subject column is patient_id or subject.
    const guess: Record<string, string> = {};
    const find = (...names: string[]) =>
      cols.find((c) => names.some((n) => c.toLowerCase() === n.toLowerCase())) ?? '';
    guess['@subject'] = find('patient_id', 'subject', 'patient');
    guess['@issuer'] = find('issuer', 'issuer_of_patient_id');
    guess['@parent'] = type.parent ? find('parent', type.parent, `${type.parent}_key`) : '';
    for (const fd of fields) guess[fd.name] = find(fd.name);
    setMapping(guess);
  };

  const mappingBody = () => {
    const body: { subject: string; issuer?: string; parent?: string; fields: Record<string, string> } = {
      subject: mapping['@subject'] ?? '',
      fields: {},
    };
    if (mapping['@issuer']) body.issuer = mapping['@issuer'];
    if (type.parent && mapping['@parent']) body.parent = mapping['@parent'];
    for (const f of fields) if (mapping[f.name]) body.fields[f.name] = mapping[f.name];
    return body;
  };

  const run = async (dryRun: boolean) => {
    if (!file) return;
    setError(undefined);
    setRunning(dryRun ? 'dry' : 'apply');
    setOutcomes([]);
    setSummary(undefined);
    setApplied(false);
    setSent(0);
    try {
      const form = new FormData();
      form.append('mapping', JSON.stringify(mappingBody()));
      form.append('file', file, file.name);
      const res = await gatewayFetchAny(
        `${base(project)}/record-types/${encodeURIComponent(type.name)}/import?dry_run=${dryRun}`,
        { method: 'POST', body: form, headers: { Accept: 'application/x-ndjson' } },
      );
      if (!res.ok) throw await explain(res);
      const seen: Outcome[] = [];
      let flushAt = Date.now();
      for await (const line of ndjsonLines<
        Outcome | { summary: Summary; dry_run: boolean } | { error: { message: string }; summary: Summary }
      >(res)) {
        if ('error' in line) {
          setSummary(line.summary);
          throw new UserFacingError(
            500,
            `The import stopped: ${line.error.message}.`,
            'Run it again to finish it.',
          );
        }
        if ('summary' in line) {
          setSummary(line.summary);
          continue;
        }
        seen.push(line);
        // Re-render at most every 200 ms while a large sheet streams.
        if (Date.now() - flushAt > 200) {
          setSent(seen.length);
          setOutcomes([...seen]);
          flushAt = Date.now();
        }
      }
      setSent(seen.length);
      setOutcomes(seen);
      if (dryRun) setDryRunDone(true);
      else {
        setApplied(true);
        onApplied();
      }
    } catch (err) {
      setError(err);
    } finally {
      setRunning('');
    }
  };

  const shown = outcomes.filter((o) => o.action !== 'unchanged').slice(0, 500);
  return (
    <section id="import">
      <h2>Import a spreadsheet</h2>
      <label>
        Record type{' '}
        <select id="import-type" value={typeName} onChange={(e) => setTypeName(e.target.value)}>
          {types.map((t) => (
            <option key={t.name} value={t.name}>
              {t.name}
            </option>
          ))}
        </select>
      </label>{' '}
      <label>
        Sheet (CSV or XLSX){' '}
        <input
          id="import-file"
          type="file"
          accept=".csv,.xlsx,text/csv,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
          onChange={(e) => void pickFile(e.target.files?.[0])}
        />
      </label>
      {file && (
        <table id="import-mapping">
          <thead>
            <tr>
              <th>Field</th>
              <th>Column of the sheet</th>
            </tr>
          </thead>
          <tbody>
            {[
              { id: '@subject', label: 'Subject (Patient ID)*' },
              { id: '@issuer', label: 'Issuer of Patient ID' },
              ...(type.parent ? [{ id: '@parent', label: `Parent ${type.parent} key*` }] : []),
              ...fields.map((f) => ({
                id: f.name,
                label: `${f.name}${f.required || f.name === type.key ? '*' : ''} (${f.kind}${f.unit ? `, ${f.unit}` : ''})`,
              })),
            ].map((m) => (
              <tr key={m.id}>
                <td>{m.label}</td>
                <td>
                  <input
                    data-map={m.id}
                    list="import-columns"
                    value={mapping[m.id] ?? ''}
                    onChange={(e) => setMapping({ ...mapping, [m.id]: e.target.value })}
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <datalist id="import-columns">
        {columns.map((c) => (
          <option key={c} value={c} />
        ))}
      </datalist>
      <p>
        <button id="import-dry-run" disabled={!file || running !== ''} onClick={() => void run(true)}>
          Dry run
        </button>{' '}
        <button
          id="import-apply"
          disabled={!file || !dryRunDone || running !== ''}
          onClick={() => void run(false)}
        >
          Apply import
        </button>
      </p>
      {running && (
        <p role="status" id="import-progress">
          {running === 'dry' ? 'Checking' : 'Importing'}… {sent} rows so far
        </p>
      )}
      {error !== undefined && <ErrorPanel error={error} />}
      {summary && (
        <p id="import-summary" className="notice" role="status">
          {applied ? 'Imported' : 'Dry run'}: {summary.rows} rows — {summary.create} to create,{' '}
          {summary.change} changed, {summary.unchanged} unchanged, {summary.refuse} refused.
        </p>
      )}
      {shown.length > 0 && (
        <table id="import-rows">
          <thead>
            <tr>
              <th className="num">Row</th>
              <th>Outcome</th>
              <th>Key</th>
              <th>Why</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((o) => (
              <tr key={o.row} data-row={o.row} data-action={o.action}>
                <td className="num">{o.row}</td>
                <td>{o.action}</td>
                <td>{o.key ?? ''}</td>
                <td>
                  {o.errors?.map((e) => `${e.field}: ${e.message}`).join('; ') ??
                    (o.changed ? `changes ${o.changed.join(', ')}` : '')}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {outcomes.length > shown.length && (
        <p className="muted">
          {outcomes.length - shown.length} more rows not listed (unchanged rows, or beyond the first 500).
        </p>
      )}
    </section>
  );
}

interface FieldSummary {
  field: string;
  kind: FieldKind;
  unit?: string;
  n: number;
  missing: number;
  min?: number | string;
  max?: number | string;
  mean?: number;
  median?: number;
  sd?: number;
  counts?: Record<string, number>;
}

/** Per-field counts and distributions of a type, and its Kaplan–Meier curve (the gateway's SVG) by a grouping. */
function SummarySection({ project, types }: { project: string; types: RecordTypeInfo[] }) {
  const [typeName, setTypeName] = useState((types.find((t) => t.schema['x-time-to-event']) ?? types[0]).name);
  const type = types.find((t) => t.name === typeName) ?? types[0];
  const groupable = fieldsOf(type).filter((f) => f.kind === 'code' || f.kind === 'boolean');
  const [group, setGroup] = useState('');
  const q = group ? `?group=${encodeURIComponent(group)}` : '';
  const path = `${base(project)}/record-types/${encodeURIComponent(type.name)}`;
  const summary = useLoad(
    () => getJson<{ records: number; fields: FieldSummary[] }>(`${path}/summary${q}`),
    [path, q],
  );
  const [km, setKm] = useState<string>();
  const [kmError, setKmError] = useState<unknown>();
  useEffect(() => {
    setKm(undefined);
    setKmError(undefined);
    if (!type.schema['x-time-to-event']) return;
    let url: string | undefined;
    let cancelled = false;
    gatewayFetch(`${path}/km.svg${q}`, { headers: { Accept: 'image/svg+xml' } })
      .then((r) => r.blob())
      .then((b) => {
        if (cancelled) return;
        url = URL.createObjectURL(new Blob([b], { type: 'image/svg+xml' }));
        setKm(url);
      })
      .catch((err: unknown) => !cancelled && setKmError(err));
    return () => {
      cancelled = true;
      if (url) URL.revokeObjectURL(url);
    };
  }, [path, q, type.schema]);

  return (
    <section id="summary">
      <h2>Summary</h2>
      <label>
        Record type{' '}
        <select
          id="summary-type"
          value={typeName}
          onChange={(e) => {
            setTypeName(e.target.value);
            setGroup('');
          }}
        >
          {types.map((t) => (
            <option key={t.name} value={t.name}>
              {t.name}
            </option>
          ))}
        </select>
      </label>{' '}
      <label>
        Group by{' '}
        <select id="summary-group" value={group} onChange={(e) => setGroup(e.target.value)}>
          <option value="">(no grouping)</option>
          {groupable.map((f) => (
            <option key={f.name} value={f.name}>
              {f.name}
            </option>
          ))}
        </select>
      </label>
      {summary.error !== undefined && <ErrorPanel error={summary.error} />}
      {summary.data && (
        <>
          <p id="summary-count">{summary.data.records} records</p>
          <table id="summary-fields">
            <thead>
              <tr>
                <th>Field</th>
                <th className="num">n</th>
                <th className="num">Missing</th>
                <th>Distribution</th>
              </tr>
            </thead>
            <tbody>
              {summary.data.fields.map((f) => (
                <tr key={f.field} data-field={f.field}>
                  <td>
                    {f.field}
                    {f.unit ? ` (${f.unit})` : ''}
                  </td>
                  <td className="num">{f.n}</td>
                  <td className="num">{f.missing}</td>
                  <td>
                    {f.counts
                      ? Object.entries(f.counts)
                          .map(([k, v]) => `${k}: ${v}`)
                          .join(', ')
                      : f.mean !== undefined
                        ? `min ${f.min}, median ${f.median}, mean ${f.mean}, max ${f.max}, sd ${f.sd}`
                        : f.min !== undefined
                          ? `${f.min} – ${f.max}`
                          : ''}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      {type.schema['x-time-to-event'] && (
        <figure>
          {kmError !== undefined && <ErrorPanel error={kmError} />}
          {km && <img id="km-curve" src={km} alt={`Kaplan–Meier curve of ${type.name}`} />}
          <figcaption className="muted">
            Kaplan–Meier estimate of {type.schema['x-time-to-event'].time} with{' '}
            {type.schema['x-time-to-event'].event} as the event{group ? `, by ${group}` : ''}.
          </figcaption>
        </figure>
      )}
    </section>
  );
}

// ---------------------------------------------------------------------------------------------- subject page

/** `#/p/{project}/records/subjects/{uuid}`: one subject's studies, records by type, and files. */
export function SubjectPage({ project, subject }: { project: string; subject: string }) {
  const [version, setVersion] = useState(0);
  const path = `${base(project)}/subjects/${encodeURIComponent(subject)}`;
  const roles = useLoad(() => projectRoles(project), [project]);
  const types = useLoad(() => getJson<RecordTypeInfo[]>(`${base(project)}/record-types`), [project]);
  const detail = useLoad(async () => {
    const d = await getJson<Omit<SubjectDetail, 'studies_list'> & { studies: SubjectDetail['studies_list'] }>(
      path,
    );
    return { ...d, studies_list: d.studies } as SubjectDetail;
  }, [path, version]);
  const canWrite = roleAtLeast(roles.data ?? [], 'contributor');
  const s = detail.data;
  return (
    <section id="subject-page">
      <p>
        <a href={`#/p/${encodeURIComponent(project)}/records`}>← Records of {project}</a>
      </p>
      {detail.error !== undefined && <ErrorPanel error={detail.error} />}
      {s && (
        <>
          <h1>
            Subject <span id="subject-patient-id">{s.patient_id}</span>
            {s.issuer ? ` (${s.issuer})` : ''}
          </h1>
          <p className="muted">{s.kind}</p>
          <h2>Studies</h2>
          {s.studies_list.length === 0 && (
            <p className="muted">No images of this subject in the project yet.</p>
          )}
          {s.studies_list.length > 0 && (
            <ul id="subject-studies">
              {s.studies_list.map((st) => (
                <li key={st.study_uid}>
                  <a href={`#/p/${encodeURIComponent(project)}/studies/${encodeURIComponent(st.study_uid)}`}>
                    {st.study_date ?? 'undated'} {st.modalities.join('/')} {st.study_description ?? ''}
                  </a>
                </li>
              ))}
            </ul>
          )}
          {(types.data ?? []).map((t) => (
            <TypeRecords
              key={t.name}
              project={project}
              subject={s}
              type={t}
              parents={s.records.filter((r) => r.type === t.parent)}
              records={s.records.filter((r) => r.type === t.name)}
              canWrite={canWrite}
              onChange={() => setVersion((v) => v + 1)}
            />
          ))}
          <FilesSection project={project} subject={s.id} records={s.records} canWrite={canWrite} />
        </>
      )}
    </section>
  );
}

function TypeRecords({
  project,
  subject,
  type,
  records,
  parents,
  canWrite,
  onChange,
}: {
  project: string;
  subject: SubjectDetail;
  type: RecordTypeInfo;
  records: RecordRow[];
  parents: RecordRow[];
  canWrite: boolean;
  onChange: () => void;
}) {
  const fields = fieldsOf(type);
  const [editing, setEditing] = useState<RecordRow | 'new'>();
  const [error, setError] = useState<unknown>();
  const remove = async (r: RecordRow) => {
    if (!confirm(`Delete this ${type.name} record?`)) return;
    setError(undefined);
    try {
      await gatewayFetch(`${base(project)}/subjects/${subject.id}/records/${r.id}`, { method: 'DELETE' });
      onChange();
    } catch (err) {
      setError(err);
    }
  };
  return (
    <section className="record-type" data-type={type.name}>
      <h2>{type.name}</h2>
      {records.length === 0 && <p className="muted">No {type.name} records.</p>}
      {records.length > 0 && (
        <table>
          <thead>
            <tr>
              {type.parent && <th>{type.parent}</th>}
              {fields.map((f) => (
                <th key={f.name}>
                  {f.name}
                  {f.unit ? ` (${f.unit})` : ''}
                </th>
              ))}
              <th className="num">Revision</th>
              {canWrite && <th />}
            </tr>
          </thead>
          <tbody>
            {records.map((r) => (
              <tr key={r.id} data-record={r.id} data-key={r.key}>
                {type.parent && <td>{parents.find((p) => p.id === r.parent)?.key ?? ''}</td>}
                {fields.map((f) => (
                  <td key={f.name}>{cellText(r.data[f.name])}</td>
                ))}
                <td className="num">{r.revision}</td>
                {canWrite && (
                  <td>
                    <button data-action="edit" onClick={() => setEditing(r)}>
                      Edit
                    </button>{' '}
                    <button data-action="delete" onClick={() => void remove(r)}>
                      Delete
                    </button>
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {error !== undefined && <ErrorPanel error={error} />}
      {canWrite && editing === undefined && (
        <button data-action="new-record" onClick={() => setEditing('new')}>
          New {type.name}
        </button>
      )}
      {canWrite && editing !== undefined && (
        <RecordForm
          project={project}
          subject={subject}
          type={type}
          fields={fields}
          parents={parents}
          record={editing === 'new' ? undefined : editing}
          onDone={(changed) => {
            setEditing(undefined);
            if (changed) onChange();
          }}
        />
      )}
    </section>
  );
}

/** A record's form, generated from the type's fields; the gateway's per-field errors are shown beside each field. */
function RecordForm({
  project,
  subject,
  type,
  fields,
  parents,
  record,
  onDone,
}: {
  project: string;
  subject: SubjectDetail;
  type: RecordTypeInfo;
  fields: Field[];
  parents: RecordRow[];
  record?: RecordRow;
  onDone: (changed: boolean) => void;
}) {
  const [values, setValues] = useState<Record<string, string | boolean>>(() => {
    const v: Record<string, string | boolean> = {};
    for (const f of fields) {
      const x = record?.data[f.name];
      v[f.name] = f.kind === 'boolean' ? x === true : x === undefined || x === null ? '' : String(x);
    }
    return v;
  });
  const [parent, setParent] = useState(parents.find((p) => p.id === record?.parent)?.key ?? '');
  const [problems, setProblems] = useState<Record<string, string>>({});
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    setProblems({});
    const data: Record<string, unknown> = {};
    for (const f of fields) {
      const v = values[f.name];
      if (f.kind === 'boolean') data[f.name] = v === true;
      else if (v === '' || v === undefined) continue;
      else
        data[f.name] =
          f.kind === 'number' && /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(String(v)) ? Number(v) : v;
    }
    const body = JSON.stringify({ data, ...(type.parent ? { parent } : {}) });
    const url = record
      ? `${base(project)}/subjects/${subject.id}/records/${record.id}`
      : `${base(project)}/subjects/${subject.id}/records/${encodeURIComponent(type.name)}`;
    try {
      const res = await gatewayFetchAny(url, {
        method: record ? 'PUT' : 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body,
      });
      if (res.ok) return onDone(true);
      const said = await refusalMessage(res);
      if ((res.status === 400 || res.status === 409) && said) setProblems(fieldProblems(said));
      setError(await explain(res));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="record-form" data-type={type.name} onSubmit={(e) => void submit(e)}>
      <h3>{record ? `Edit ${type.name}` : `New ${type.name}`}</h3>
      {type.parent && (
        <label className="block">
          {type.parent}*{' '}
          <select name="parent" value={parent} onChange={(e) => setParent(e.target.value)}>
            <option value="">(choose)</option>
            {parents.map((p) => (
              <option key={p.id} value={p.key}>
                {p.key}
              </option>
            ))}
          </select>
          {problems.parent && <span className="field-error">{problems.parent}</span>}
        </label>
      )}
      {fields.map((f) => (
        <label key={f.name} className="block" title={f.description}>
          {f.name}
          {f.required ? '*' : ''}
          {f.unit ? ` (${f.unit})` : ''}{' '}
          <FieldInput
            field={f}
            value={values[f.name]}
            studies={subject.studies_list.map((s) => s.study_uid)}
            onChange={(v) => setValues({ ...values, [f.name]: v })}
          />
          {problems[f.name] && (
            <span className="field-error" data-field-error={f.name}>
              {problems[f.name]}
            </span>
          )}
        </label>
      ))}
      <button type="submit" disabled={busy}>
        Save
      </button>{' '}
      <button type="button" onClick={() => onDone(false)}>
        Cancel
      </button>
      {error !== undefined && <ErrorPanel error={error} />}
    </form>
  );
}

function FieldInput({
  field: f,
  value,
  studies,
  onChange,
}: {
  field: Field;
  value: string | boolean;
  studies: string[];
  onChange: (v: string | boolean) => void;
}) {
  const name = f.name;
  if (f.kind === 'boolean')
    return (
      <input
        name={name}
        type="checkbox"
        checked={value === true}
        onChange={(e) => onChange(e.target.checked)}
      />
    );
  if (f.kind === 'code')
    return (
      <select name={name} value={String(value)} onChange={(e) => onChange(e.target.value)}>
        <option value="">(none)</option>
        {(f.codes ?? []).map((c) => (
          <option key={c} value={c}>
            {c}
          </option>
        ))}
      </select>
    );
  if (f.kind === 'date')
    return <input name={name} type="date" value={String(value)} onChange={(e) => onChange(e.target.value)} />;
  if (f.kind === 'number')
    return (
      <input
        name={name}
        inputMode="decimal"
        value={String(value)}
        onChange={(e) => onChange(e.target.value)}
        placeholder={[
          f.integer ? 'integer' : 'number',
          f.min !== undefined ? `≥ ${f.min}` : '',
          f.max !== undefined ? `≤ ${f.max}` : '',
        ]
          .filter(Boolean)
          .join(' ')}
      />
    );
  if (f.kind === 'ref' && f.ref === 'study')
    return (
      <select name={name} value={String(value)} onChange={(e) => onChange(e.target.value)}>
        <option value="">(none)</option>
        {studies.map((u) => (
          <option key={u} value={u}>
            {u}
          </option>
        ))}
      </select>
    );
  return <input name={name} value={String(value)} onChange={(e) => onChange(e.target.value)} />;
}

/**
 * Non-DICOM files of the subject or of one of its records: upload many files or a ZIP with progress, list with
 * checksums and versions, download one, or all as a ZIP (through a single-use link, streamed by the browser).
 */
function FilesSection({
  project,
  subject,
  records,
  canWrite,
}: {
  project: string;
  subject: string;
  records: RecordRow[];
  canWrite: boolean;
}) {
  const [target, setTarget] = useState('');
  const [allVersions, setAllVersions] = useState(false);
  const [version, setVersion] = useState(0);
  const root = `${base(project)}/subjects/${subject}${target ? `/records/${target}` : ''}`;
  const files = useLoad(
    () => getJson<FileRow[]>(`${root}/files${allVersions ? '?versions=all' : ''}`),
    [root, allVersions, version],
  );
  const [picked, setPicked] = useState<File[]>([]);
  const [zip, setZip] = useState<File>();
  const [folder, setFolder] = useState('');
  const [progress, setProgress] = useState<{ sent: number; total: number }>();
  const [error, setError] = useState<unknown>();
  const [done, setDone] = useState('');

  const upload = async (e: FormEvent) => {
    e.preventDefault();
    setError(undefined);
    setDone('');
    const form = new FormData();
    if (folder) form.append('folder', folder);
    for (const f of picked) form.append('file', f, f.webkitRelativePath || f.name);
    if (zip) form.append('zip', zip, zip.name);
    setProgress({ sent: 0, total: 1 });
    try {
      const res = await uploadWithProgress(`${root}/files`, form, (sent, total) =>
        setProgress({ sent, total }),
      );
      if (res.status !== 201) throw await explainText(res.status, res.text, res.retryAfter);
      const rows = JSON.parse(res.text) as FileRow[];
      setDone(`${rows.length} file${rows.length === 1 ? '' : 's'} stored.`);
      setPicked([]);
      setZip(undefined);
      (e.target as HTMLFormElement).reset();
      setVersion((v) => v + 1);
    } catch (err) {
      setError(err);
    } finally {
      setProgress(undefined);
    }
  };

  const downloadOne = async (f: FileRow) => {
    setError(undefined);
    try {
      await streamedDownload(
        `${base(project)}/subjects/${subject}/files/${f.id}`,
        f.path.split('/').pop() ?? 'file',
      );
    } catch (err) {
      setError(err);
    }
  };
  const downloadZip = async () => {
    setError(undefined);
    try {
      await streamedDownload(`${root}/files.zip`, 'files.zip');
    } catch (err) {
      setError(err);
    }
  };

  return (
    <section id="files">
      <h2>Files</h2>
      <label>
        Files of{' '}
        <select id="files-target" value={target} onChange={(e) => setTarget(e.target.value)}>
          <option value="">the subject</option>
          {records.map((r) => (
            <option key={r.id} value={r.id}>
              {r.type} {r.key}
            </option>
          ))}
        </select>
      </label>{' '}
      <label>
        <input type="checkbox" checked={allVersions} onChange={(e) => setAllVersions(e.target.checked)} />{' '}
        every version
      </label>
      {files.error !== undefined && <ErrorPanel error={files.error} />}
      {files.data && files.data.length === 0 && <p className="muted">No files.</p>}
      {files.data && files.data.length > 0 && (
        <>
          <table id="files-table">
            <thead>
              <tr>
                <th>Path</th>
                <th className="num">Version</th>
                <th className="num">Size</th>
                <th>SHA-256</th>
                <th>Stored</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {files.data.map((f) => (
                <tr key={f.id} data-file={f.path} data-version={f.version}>
                  <td>{f.path}</td>
                  <td className="num">{f.version}</td>
                  <td className="num">{bytes(f.size)}</td>
                  <td>
                    <code title={f.sha256}>{f.sha256.slice(0, 16)}…</code>
                  </td>
                  <td>{new Date(f.created_at).toLocaleString()}</td>
                  <td>
                    <button data-action="download" onClick={() => void downloadOne(f)}>
                      Download
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <button id="files-zip" onClick={() => void downloadZip()}>
            Download all as ZIP
          </button>
        </>
      )}
      {canWrite && (
        <form id="upload-files" onSubmit={(e) => void upload(e)}>
          <h3>Attach files</h3>
          <label>
            Files{' '}
            <input
              id="files-input"
              type="file"
              multiple
              onChange={(e) => setPicked([...(e.target.files ?? [])])}
            />
          </label>{' '}
          <label>
            or a ZIP{' '}
            <input
              id="zip-input"
              type="file"
              accept=".zip,application/zip"
              onChange={(e) => setZip(e.target.files?.[0])}
            />
          </label>{' '}
          <label>
            Folder{' '}
            <input
              id="files-folder"
              value={folder}
              onChange={(e) => setFolder(e.target.value)}
              placeholder="optional"
            />
          </label>{' '}
          <button
            id="upload-submit"
            type="submit"
            disabled={(picked.length === 0 && !zip) || progress !== undefined}
          >
            Upload
          </button>
          {progress && (
            <p role="status">
              <progress value={progress.sent} max={progress.total || 1} /> {bytes(progress.sent)}
              {progress.total ? ` of ${bytes(progress.total)}` : ''}
            </p>
          )}
          {done && (
            <p className="notice" role="status" id="upload-done">
              {done}
            </p>
          )}
          {error !== undefined && <ErrorPanel error={error} />}
        </form>
      )}
      {!canWrite && error !== undefined && <ErrorPanel error={error} />}
    </section>
  );
}
