import { useState } from 'react';
import { gatewayFetch, getJson, UserFacingError } from '../api';
import { ErrorPanel, useLoad } from '../components';

interface Rule {
  id: string;
  position: number;
  kind: 'called_aet' | 'calling_aet' | 'source_ip' | 'attribute';
  attribute: string | null;
  match: 'equals' | 'prefix' | 'contains' | 'regex';
  value: string;
  enabled: boolean;
  priority: number | null;
}

const KIND_LABELS: Record<Rule['kind'], string> = {
  called_aet: 'Called AE title',
  calling_aet: 'Calling AE title',
  source_ip: 'Source address',
  attribute: 'DICOM attribute',
};

/** What PUT and POST take: the stored rule without its id and bookkeeping. */
function inputOf(r: Rule, changes: Partial<Rule> = {}) {
  const m = { ...r, ...changes };
  return {
    kind: m.kind,
    ...(m.kind === 'attribute' ? { attribute: m.attribute ?? '' } : {}),
    match: m.match,
    value: m.value,
    position: m.position,
    enabled: m.enabled,
  };
}

/**
 * A project's routing rules (project administrators): which arrivals (DIMSE C-STORE) it claims, in its own order.
 * Each change is one call to /api/projects/{p}/routing; the API decides who may, and checks every rule.
 */
export function RoutingPage({ project }: { project: string }) {
  const api = `/api/projects/${encodeURIComponent(project)}/routing`;
  const [version, setVersion] = useState(0);
  const { data, error, loading } = useLoad(() => getJson<Rule[]>(api), [api, version]);
  const [actionError, setActionError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const [kind, setKind] = useState<Rule['kind']>('called_aet');
  const [attribute, setAttribute] = useState('');
  const [match, setMatch] = useState<Rule['match']>('equals');
  const [value, setValue] = useState('');
  const [tested, setTested] = useState<{ matching: string[]; first: string | null }>();

  const send = async (path: string, method: string, body?: unknown) => {
    setBusy(true);
    setActionError(undefined);
    try {
      await gatewayFetch(path, {
        method,
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      setVersion((v) => v + 1);
      return true;
    } catch (err) {
      setActionError(err);
      return false;
    } finally {
      setBusy(false);
    }
  };

  if (error !== undefined) return <ErrorPanel error={error} />;
  if (loading || !data) return <p className="muted">Loading…</p>;
  const rules = data;

  const add = async () => {
    const position = rules.length ? Math.max(...rules.map((r) => r.position)) + 1 : 0;
    const ok = await send(api, 'POST', {
      kind,
      ...(kind === 'attribute' ? { attribute } : {}),
      match,
      value,
      position,
      enabled: true,
    });
    if (ok) setValue('');
  };

  // Moving swaps positions with the neighbour: two PUTs, each a complete, valid rule.
  const move = async (i: number, j: number) => {
    const a = rules[i];
    const b = rules[j];
    const pa = a.position === b.position ? b.position + (j > i ? 1 : -1) : b.position;
    if (await send(`${api}/${a.id}`, 'PUT', inputOf(a, { position: Math.max(0, pa) })))
      await send(`${api}/${b.id}`, 'PUT', inputOf(b, { position: a.position }));
  };

  return (
    <section>
      <h1>Routing rules of {project}</h1>
      <p className="muted">
        An arrival over DIMSE goes to the project whose matching rule comes first; within this project, the
        order below decides which rule is credited. Disabled rules claim nothing.
      </p>
      {actionError !== undefined && <ErrorPanel error={actionError} />}
      {rules.length === 0 ? (
        <p id="no-rules">This project has no routing rules yet.</p>
      ) : (
        <table id="rules">
          <thead>
            <tr>
              <th className="num">Order</th>
              <th>Looks at</th>
              <th>Match</th>
              <th>Value</th>
              <th>State</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {rules.map((r, i) => (
              <tr
                key={r.id}
                data-rule={r.id}
                data-sample={tested ? (tested.matching.includes(r.id) ? 'matches' : 'no-match') : undefined}
              >
                <td className="num">{i + 1}</td>
                <td data-col="kind">
                  {KIND_LABELS[r.kind]}
                  {r.attribute ? ` ${r.attribute}` : ''}
                </td>
                <td data-col="match">{r.match}</td>
                <td data-col="value">{r.value}</td>
                <td data-col="state">{r.enabled ? 'enabled' : 'disabled'}</td>
                <td>
                  <button data-action="up" disabled={busy || i === 0} onClick={() => void move(i, i - 1)}>
                    Up
                  </button>{' '}
                  <button
                    data-action="down"
                    disabled={busy || i === rules.length - 1}
                    onClick={() => void move(i, i + 1)}
                  >
                    Down
                  </button>{' '}
                  <button
                    data-action="toggle"
                    disabled={busy}
                    onClick={() => void send(`${api}/${r.id}`, 'PUT', inputOf(r, { enabled: !r.enabled }))}
                  >
                    {r.enabled ? 'Disable' : 'Enable'}
                  </button>{' '}
                  <button
                    data-action="delete"
                    disabled={busy}
                    onClick={() => void send(`${api}/${r.id}`, 'DELETE')}
                  >
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h2>Add a rule</h2>
      <form
        id="add-rule"
        onSubmit={(e) => {
          e.preventDefault();
          void add();
        }}
      >
        <label>
          Looks at{' '}
          <select name="kind" value={kind} onChange={(e) => setKind(e.target.value as Rule['kind'])}>
            {Object.entries(KIND_LABELS).map(([k, label]) => (
              <option key={k} value={k}>
                {label}
              </option>
            ))}
          </select>
        </label>{' '}
        {kind === 'attribute' && (
          <label>
            Attribute (keyword or tag){' '}
            <input
              name="attribute"
              value={attribute}
              onChange={(e) => setAttribute(e.target.value)}
              required
            />
          </label>
        )}{' '}
        <label>
          Match{' '}
          <select name="match" value={match} onChange={(e) => setMatch(e.target.value as Rule['match'])}>
            <option value="equals">equals</option>
            <option value="prefix">starts with</option>
            <option value="contains">contains</option>
            <option value="regex">regular expression</option>
          </select>
        </label>{' '}
        <label>
          Value <input name="value" value={value} onChange={(e) => setValue(e.target.value)} required />
        </label>{' '}
        <button type="submit" id="add-rule-submit" disabled={busy}>
          Add rule
        </button>
      </form>
      <RuleTester api={api} rules={data ?? []} project={project} onResult={setTested} />
    </section>
  );
}

/** A sample arrival's values, as the rule tester's form holds them. */
interface Sample {
  calledAet: string;
  callingAet: string;
  remoteIp: string;
  attributes: string;
}

/**
 * Tests the project's rules against a sample arrival (POST {api}/test): which rules match it and which claims it
 * first here. Attribute values are typed as `Keyword=value` lines; nothing is stored and nothing goes into a URL.
 */
function RuleTester({
  api,
  rules,
  project,
  onResult,
}: {
  api: string;
  rules: Rule[];
  project: string;
  onResult: (r: { matching: string[]; first: string | null } | undefined) => void;
}) {
  const [sample, setSample] = useState<Sample>({
    calledAet: '',
    callingAet: '',
    remoteIp: '',
    attributes: '',
  });
  const [result, setResult] = useState<{ matching: string[]; first: string | null }>();
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const test = async () => {
    setBusy(true);
    setError(undefined);
    try {
      const attributes: Record<string, string> = {};
      for (const line of sample.attributes.split(/\r?\n/)) {
        if (!line.trim()) continue;
        const at = line.indexOf('=');
        if (at <= 0)
          throw new UserFacingError(
            400,
            `"${line.trim()}" is not Keyword=value.`,
            'Write one attribute per line, e.g. InstitutionName=Lung clinic.',
          );
        attributes[line.slice(0, at).trim()] = line.slice(at + 1).trim();
      }
      const body = {
        ...(sample.calledAet.trim() && { calledAet: sample.calledAet.trim() }),
        ...(sample.callingAet.trim() && { callingAet: sample.callingAet.trim() }),
        ...(sample.remoteIp.trim() && { remoteIp: sample.remoteIp.trim() }),
        attributes,
      };
      const res = await gatewayFetch(`${api}/test`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify(body),
      });
      const r = (await res.json()) as { matching: string[]; first: string | null };
      setResult(r);
      onResult(r);
    } catch (err) {
      setError(err);
      setResult(undefined);
      onResult(undefined);
    } finally {
      setBusy(false);
    }
  };
  const field = (key: keyof Omit<Sample, 'attributes'>, label: string) => (
    <label>
      {label}{' '}
      <input
        name={key}
        value={sample[key]}
        onChange={(e) => setSample({ ...sample, [key]: e.target.value })}
      />
    </label>
  );
  const number = (id: string) => rules.findIndex((r) => r.id === id) + 1;
  return (
    <>
      <h2>Test the rules against a sample</h2>
      <form
        id="test-rules"
        onSubmit={(e) => {
          e.preventDefault();
          void test();
        }}
      >
        {field('calledAet', 'Called AE title')} {field('callingAet', 'Calling AE title')}{' '}
        {field('remoteIp', 'Source address')}{' '}
        <label>
          Attributes (one Keyword=value a line){' '}
          <textarea
            name="attributes"
            rows={3}
            value={sample.attributes}
            onChange={(e) => setSample({ ...sample, attributes: e.target.value })}
          />
        </label>{' '}
        <button type="submit" id="test-rules-submit" disabled={busy}>
          Test
        </button>
      </form>
      {error !== undefined && <ErrorPanel error={error} />}
      {result && (
        <p id="test-result">
          {result.first
            ? `Rule ${number(result.first)} claims this sample for ${project}` +
              (result.matching.length > 1
                ? ` (rules ${result.matching.map(number).join(', ')} match; the first in the order wins).`
                : '.')
            : `No rule of ${project} matches this sample.`}{' '}
          Rules of other projects are not tested here; one of them may claim the arrival first.
        </p>
      )}
    </>
  );
}
