import { useEffect, useState, type FormEvent } from 'react';
import { type DicomJson, dicomwebRoot, gatewayFetch, getJson, tagText, Tags } from '../api';
import { ErrorPanel, useLoad } from '../components';

/** A Boutiques input as the form needs it. */
interface Input {
  id: string;
  name: string;
  type: 'String' | 'File' | 'Flag' | 'Number';
  description?: string;
  optional?: boolean;
  'default-value'?: unknown;
  'value-choices'?: Array<string | number>;
  minimum?: number;
  maximum?: number;
  integer?: boolean;
}

interface Pipeline {
  name: string;
  version: number;
  descriptor: { name: string; description: string; 'tool-version': string; inputs: Input[] };
}

interface Run {
  id: string;
  pipeline: string;
  version: number;
  state: string;
  phase: string;
  progress: number;
  attempts: number;
  error: string | null;
  inputSeries: string[];
  outputSeries: string[];
  createdAt: string;
  artefacts?: Array<{ name: string; kind: string; bytes: number; sha256: string }>;
  /** A succeeded run's outputs and logs as files of the input series' subject(s) (research records). */
  files?: Array<{
    subject: string;
    id: string;
    path: string;
    sha256: string;
    size: number;
    mediaType: string;
  }>;
}

/** A form value for one input, from its default. */
function initialValue(i: Input): string | boolean {
  if (i.type === 'Flag') return i['default-value'] === true;
  return i['default-value'] === undefined ? '' : String(i['default-value']);
}

/** The parameters object the API validates against the descriptor (empty optional fields are left out). */
function paramsOf(inputs: Input[], values: Record<string, string | boolean>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const i of inputs) {
    const v = values[i.id];
    if (i.type === 'Flag') out[i.id] = v === true;
    else if (v !== '' && v !== undefined) out[i.id] = i.type === 'Number' ? Number(v) : v;
  }
  return out;
}

/** Downloads a run artefact with the user's token (a plain link cannot send it). */
async function download(path: string, name: string): Promise<void> {
  const blob = await (await gatewayFetch(path)).blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/**
 * Processing pipelines of a project: pick a registered pipeline, choose series, fill in the form generated from its
 * Boutiques descriptor, start; the project's runs are listed with their progress, logs and results, refreshed while
 * any of them is still going.
 */
export function RunsPage({ project }: { project: string }) {
  const base = `/api/projects/${encodeURIComponent(project)}/runs`;
  const pipelines = useLoad(() => getJson<Pipeline[]>('/api/pipelines'), []);
  const series = useLoad(
    () => getJson<DicomJson[]>(`${dicomwebRoot(project)}/series?limit=200`, 'application/dicom+json'),
    [project],
  );
  const [version, setVersion] = useState(0);
  const runs = useLoad(() => getJson<Run[]>(base), [base, version]);
  const [chosen, setChosen] = useState('');
  const [picked, setPicked] = useState<string[]>([]);
  const [values, setValues] = useState<Record<string, string | boolean>>({});
  const [open, setOpen] = useState<Run>();
  const [log, setLog] = useState<{ name: string; text: string }>();
  const [actionError, setActionError] = useState<unknown>();
  const pipeline = pipelines.data?.find((p) => p.name === chosen);
  const params = pipeline?.descriptor.inputs.filter((i) => i.type !== 'File') ?? [];
  const studyOf = new Map(
    (series.data ?? []).map((s) => [tagText(s, Tags.SeriesInstanceUID), tagText(s, Tags.StudyInstanceUID)]),
  );

  useEffect(() => {
    if (!pipeline) return;
    setValues(Object.fromEntries(pipeline.descriptor.inputs.map((i) => [i.id, initialValue(i)])));
  }, [pipeline?.name, pipeline?.version]);

  // While a run is queued or running, refresh the list (and the open run) every two seconds.
  const busy = (runs.data ?? []).some((r) => r.state === 'queued' || r.state === 'running');
  useEffect(() => {
    if (!busy) return;
    const t = setInterval(() => setVersion((v) => v + 1), 2000);
    return () => clearInterval(t);
  }, [busy]);
  useEffect(() => {
    if (!open) return;
    getJson<Run>(`${base}/${open.id}`).then(setOpen, setActionError);
  }, [version]);
  // The detail of the run opened (its artefacts and files), fetched when it is opened.
  const openRun = (r: Run) => {
    setLog(undefined);
    setOpen(r);
    getJson<Run>(`${base}/${r.id}`).then(setOpen, setActionError);
  };
  const showLog = async (run: Run, name: string) => {
    try {
      const res = await gatewayFetch(`${base}/${run.id}/artefacts/${encodeURIComponent(name)}`);
      setLog({ name, text: await res.text() });
    } catch (err) {
      setActionError(err);
    }
  };

  const start = async (e: FormEvent) => {
    e.preventDefault();
    if (!pipeline) return;
    setActionError(undefined);
    try {
      await gatewayFetch(base, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({
          pipeline: pipeline.name,
          version: pipeline.version,
          params: paramsOf(params, values),
          series: picked,
        }),
      });
      setVersion((v) => v + 1);
    } catch (err) {
      setActionError(err);
    }
  };

  const act = async (run: Run, action: 'cancel' | 'retry') => {
    setActionError(undefined);
    try {
      await gatewayFetch(`${base}/${run.id}/${action}`, { method: 'POST' });
      setVersion((v) => v + 1);
    } catch (err) {
      setActionError(err);
    }
  };

  return (
    <section>
      <h1>Pipelines of {project}</h1>
      {pipelines.error !== undefined && <ErrorPanel error={pipelines.error} />}
      {series.error !== undefined && <ErrorPanel error={series.error} />}
      {actionError !== undefined && <ErrorPanel error={actionError} />}
      <form onSubmit={(e) => void start(e)} className="run-form">
        <label>
          Pipeline{' '}
          <select id="pipeline" value={chosen} onChange={(e) => setChosen(e.target.value)}>
            <option value="">choose…</option>
            {(pipelines.data ?? []).map((p) => (
              <option key={p.name} value={p.name}>
                {p.name} (version {p.version}, tool {p.descriptor['tool-version']})
              </option>
            ))}
          </select>
        </label>
        {pipeline && <p>{pipeline.descriptor.description}</p>}
        <fieldset>
          <legend>Input series</legend>
          {(series.data ?? []).map((s) => {
            const uid = tagText(s, Tags.SeriesInstanceUID);
            return (
              <label key={uid} className="series-choice">
                <input
                  type="checkbox"
                  checked={picked.includes(uid)}
                  onChange={(e) =>
                    setPicked((p) => (e.target.checked ? [...p, uid] : p.filter((x) => x !== uid)))
                  }
                />{' '}
                {tagText(s, Tags.Modality)} {tagText(s, Tags.SeriesDescription) || uid} (
                {tagText(s, Tags.NumberOfSeriesRelatedInstances)} instances)
              </label>
            );
          })}
        </fieldset>
        {params.length > 0 && (
          <fieldset>
            <legend>Parameters</legend>
            {params.map((i) => (
              <label key={i.id} title={i.description}>
                {i.name}
                {!i.optional && i.type !== 'Flag' && ' *'}{' '}
                {i.type === 'Flag' ? (
                  <input
                    type="checkbox"
                    checked={values[i.id] === true}
                    onChange={(e) => setValues({ ...values, [i.id]: e.target.checked })}
                  />
                ) : i['value-choices'] ? (
                  <select
                    value={String(values[i.id] ?? '')}
                    onChange={(e) => setValues({ ...values, [i.id]: e.target.value })}
                  >
                    {i.optional && <option value="">—</option>}
                    {i['value-choices'].map((c) => (
                      <option key={String(c)} value={String(c)}>
                        {String(c)}
                      </option>
                    ))}
                  </select>
                ) : (
                  <input
                    type={i.type === 'Number' ? 'number' : 'text'}
                    min={i.minimum}
                    max={i.maximum}
                    step={i.type === 'Number' ? (i.integer ? 1 : 'any') : undefined}
                    required={!i.optional}
                    value={String(values[i.id] ?? '')}
                    onChange={(e) => setValues({ ...values, [i.id]: e.target.value })}
                  />
                )}
              </label>
            ))}
          </fieldset>
        )}
        <button id="start-run" type="submit" disabled={!pipeline || picked.length === 0}>
          Start
        </button>
      </form>

      <h2>Runs</h2>
      {runs.error !== undefined && <ErrorPanel error={runs.error} />}
      <table>
        <thead>
          <tr>
            <th>Started</th>
            <th>Pipeline</th>
            <th>State</th>
            <th>Progress</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {(runs.data ?? []).map((r) => (
            <tr key={r.id} data-run={r.id}>
              <td>{new Date(r.createdAt).toLocaleString()}</td>
              <td>
                {r.pipeline} v{r.version}
              </td>
              <td className="run-state">
                {r.state}
                {r.state === 'running' && ` (${r.phase})`}
                {r.error && <div className="muted">{r.error}</div>}
              </td>
              <td>
                <progress max={100} value={r.progress} /> {r.progress}%
              </td>
              <td>
                <button onClick={() => openRun(r)}>Details</button>{' '}
                {(r.state === 'queued' || r.state === 'running') && (
                  <button onClick={() => void act(r, 'cancel')}>Cancel</button>
                )}
                {(r.state === 'failed' || r.state === 'cancelled') && (
                  <button onClick={() => void act(r, 'retry')}>Retry</button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>

      {open && (
        <div className="run-detail">
          <h3>
            Run {open.id} ({open.state}, attempt {open.attempts})
          </h3>
          {open.outputSeries.length > 0 && (
            <p>
              Results stored in the project:{' '}
              {open.outputSeries.map((s) => {
                const study = studyOf.get(s) ?? studyOf.get(open.inputSeries[0]);
                return study ? (
                  <a key={s} href={`#/p/${encodeURIComponent(project)}/studies/${encodeURIComponent(study)}`}>
                    series {s}
                  </a>
                ) : (
                  <span key={s}>series {s}</span>
                );
              })}
            </p>
          )}
          {open.error && <p className="muted">{open.error}</p>}
          <ul className="run-artefacts">
            {(open.artefacts ?? []).map((a) => (
              <li key={a.name} data-artefact={a.name}>
                <button
                  className="download"
                  onClick={() =>
                    void download(`${base}/${open.id}/artefacts/${encodeURIComponent(a.name)}`, a.name).catch(
                      setActionError,
                    )
                  }
                >
                  {a.name}
                </button>{' '}
                {a.kind === 'log' && (
                  <button className="show-log" onClick={() => void showLog(open, a.name)}>
                    Show
                  </button>
                )}{' '}
                ({a.kind}, {a.bytes} bytes, SHA-256 <code>{a.sha256.slice(0, 12)}…</code>)
              </li>
            ))}
          </ul>
          {log && (
            <figure>
              <figcaption>{log.name}</figcaption>
              <pre id="run-log">{log.text}</pre>
            </figure>
          )}
          {(open.files ?? []).length > 0 && (
            <>
              <h4>Files of the subject</h4>
              <ul className="run-files">
                {(open.files ?? []).map((f) => (
                  <li key={f.id}>
                    <button
                      onClick={() =>
                        void download(
                          `/api/projects/${encodeURIComponent(project)}/subjects/${f.subject}/files/${f.id}`,
                          f.path.split('/').pop()!,
                        ).catch(setActionError)
                      }
                    >
                      {f.path}
                    </button>{' '}
                    ({f.mediaType}, {f.size} bytes)
                  </li>
                ))}
              </ul>
            </>
          )}
        </div>
      )}
    </section>
  );
}
