import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { closeQueues, initQueues } from '../src/jobs/queues';
import { type TestGateway, startGateway } from './helpers/gateway';

/**
 * /metrics on a real gateway (real PostgreSQL, Redis, Orthanc): scraped, parsed by a strict parser of the Prometheus
 * text exposition format 0.0.4, and checked to move with the requests the test sends.
 */

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
interface Family {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Values as Prometheus reads them (Go's strconv.ParseFloat: NaN and Inf in any case). */
function parseValue(s: string, line: string): number {
  if (/^\+?inf(inity)?$/i.test(s)) return Infinity;
  if (/^-inf(inity)?$/i.test(s)) return -Infinity;
  if (/^nan$/i.test(s)) return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`bad value ${s} in: ${line}`);
  return Number(s);
}

/** Parses the labels of `{a="x",b="y"}` with the format's escapes (\\, \", \n); throws on anything else. */
function parseLabels(s: string, line: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < s.length) {
    const m = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(s.slice(i));
    if (!m || !LABEL_NAME.test(m[1])) throw new Error(`bad label at ${i} in: ${line}`);
    i += m[0].length;
    let v = '';
    for (;;) {
      const c = s[i++];
      if (c === undefined) throw new Error(`unterminated label value in: ${line}`);
      if (c === '"') break;
      if (c === '\\') {
        const e = s[i++];
        if (e === 'n') v += '\n';
        else if (e === '\\' || e === '"') v += e;
        else throw new Error(`bad escape \\${e} in: ${line}`);
      } else v += c;
    }
    if (m[1] in out) throw new Error(`duplicate label ${m[1]} in: ${line}`);
    out[m[1]] = v;
    if (s[i] === ',') i++;
    else if (i < s.length) throw new Error(`expected , at ${i} in: ${line}`);
  }
  return out;
}

/** Strict parser of the text format: every sample belongs to a declared family, histograms are consistent. */
function parsePrometheus(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) continue; // other comments are allowed
      if (!NAME.test(m[2])) throw new Error(`bad metric name in: ${line}`);
      const f = families.get(m[2]) ?? { name: m[2], type: 'untyped', help: '', samples: [] };
      if (m[1] === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3]))
          throw new Error(`bad type: ${line}`);
        if (f.samples.length) throw new Error(`TYPE after samples: ${line}`);
        f.type = m[3];
      } else f.help = m[3];
      families.set(m[2], f);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(line);
    if (!m) throw new Error(`bad sample line: ${line}`);
    const [, name, labelText, value] = m;
    const base = [name, name.replace(/_(bucket|sum|count|total)$/, '')].find((n) => families.has(n));
    if (!base) throw new Error(`sample of an undeclared family: ${line}`);
    families
      .get(base)!
      .samples.push({ name, labels: parseLabels(labelText ?? '', line), value: parseValue(value, line) });
  }
  for (const f of families.values()) {
    if (f.type !== 'histogram') continue;
    const series = new Map<string, Sample[]>();
    for (const s of f.samples.filter((x) => x.name === `${f.name}_bucket`)) {
      const { le, ...rest } = s.labels;
      if (le === undefined) throw new Error(`${f.name}: bucket without le`);
      const key = JSON.stringify(rest);
      series.set(key, [...(series.get(key) ?? []), s]);
    }
    for (const [key, buckets] of series) {
      const les = buckets.map((b) => parseValue(b.labels.le, b.labels.le));
      for (let i = 1; i < buckets.length; i++) {
        if (!(les[i] > les[i - 1]) || buckets[i].value < buckets[i - 1].value)
          throw new Error(`${f.name}${key}: buckets not increasing`);
      }
      if (les[les.length - 1] !== Infinity) throw new Error(`${f.name}${key}: no +Inf bucket`);
      const count = f.samples.find((s) => s.name === `${f.name}_count` && JSON.stringify(s.labels) === key);
      if (count?.value !== buckets[buckets.length - 1].value)
        throw new Error(`${f.name}${key}: _count != +Inf bucket`);
    }
  }
  return families;
}

function sum(f: Family | undefined, name: string, match: Record<string, string> = {}): number {
  return (f?.samples ?? [])
    .filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

const TOKEN = 'metrics-test-token-0123456789';

describe('Prometheus /metrics', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ METRICS_TOKEN: TOKEN });
    // As main.ts does: the gateway produces jobs, and /metrics reports their queues.
    initQueues(gw.config);
  });
  afterAll(async () => {
    await closeQueues();
    await gw?.close();
  });

  const scrape = async () => {
    const res = await fetch(`${gw.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    return parsePrometheus(await res.text());
  };

  it('refuses a scrape without the token or with a wrong one (401, Bearer challenge)', async () => {
    const none = await fetch(`${gw.url}/metrics`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/);
    const wrong = await fetch(`${gw.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}x` } });
    expect(wrong.status).toBe(401);
    expect(await wrong.text()).not.toContain('aperture_http_request_duration_seconds');
  });

  it('times requests by route template (never a UID), and the counts move with the requests sent', async () => {
    const before = await scrape();
    const uid = '1.2.826.0.1.3680043.2.1125.999.17';
    const route = '/dicom-web/studies/:study/metadata';
    const countBefore = sum(
      before.get('aperture_http_request_duration_seconds'),
      'aperture_http_request_duration_seconds_count',
      { route },
    );
    for (let i = 0; i < 3; i++) {
      const r = await fetch(`${gw.url}/dicom-web/studies/${uid}/metadata`);
      expect(r.status).toBe(404);
      await r.arrayBuffer();
    }
    const after = await scrape();
    const http = after.get('aperture_http_request_duration_seconds');
    expect(http?.type).toBe('histogram');
    expect(
      sum(http, 'aperture_http_request_duration_seconds_count', { route, method: 'GET', status: '404' }),
    ).toBe(countBefore + 3);
    expect(sum(http, 'aperture_http_request_duration_seconds_sum', { route, status: '404' })).toBeGreaterThan(
      0,
    );
    // Every answer names its request: the caller's id when it sent one, a fresh one otherwise.
    const named = await fetch(`${gw.url}/healthz`, { headers: { 'x-request-id': 'req-metrics-17' } });
    expect(named.headers.get('x-request-id')).toBe('req-metrics-17');
    expect((await fetch(`${gw.url}/healthz`)).headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const allLabelValues = [...after.values()].flatMap((f) =>
      f.samples.flatMap((s) => Object.values(s.labels)),
    );
    expect(allLabelValues.filter((v) => v.includes(uid))).toEqual([]);
  });

  it("records the archive's latency with templated paths, the pool, the queues, the indexer and the audit queue", async () => {
    const before = await scrape();
    const upstreamBefore = sum(
      before.get('aperture_orthanc_request_duration_seconds'),
      'aperture_orthanc_request_duration_seconds_count',
      { path: '/system' },
    );
    // /readyz asks Orthanc's /system.
    expect((await fetch(`${gw.url}/readyz`)).status).toBe(200);
    const after = await scrape();
    const upstream = after.get('aperture_orthanc_request_duration_seconds');
    expect(upstream?.type).toBe('histogram');
    expect(
      sum(upstream, 'aperture_orthanc_request_duration_seconds_count', { path: '/system', status: '200' }),
    ).toBeGreaterThan(upstreamBefore);

    const pool = after.get('aperture_db_pool_connections');
    expect(pool?.samples.map((s) => s.labels.state).sort()).toEqual(['idle', 'total', 'waiting']);
    expect(sum(pool, 'aperture_db_pool_connections', { state: 'total' })).toBeGreaterThanOrEqual(1);

    const queue = after.get('aperture_queue_jobs');
    expect(queue?.samples.filter((s) => s.labels.queue === 'thumbnails').map((s) => s.labels.state)).toEqual(
      expect.arrayContaining(['waiting', 'active', 'failed']),
    );
    expect(after.get('aperture_indexer_lag_seconds')?.type).toBe('gauge');
    expect(after.get('aperture_audit_queue_events')?.samples).toHaveLength(1);
    expect(after.get('aperture_process_nodejs_eventloop_lag_seconds')).toBeDefined();
  });

  it('the Grafana dashboard (deploy/grafana/aperture.json) queries only series the gateway exports', async () => {
    const dashboard = readFileSync(join(__dirname, '../deploy/grafana/aperture.json'), 'utf8');
    const used = [...new Set([...dashboard.matchAll(/aperture_[a-z0-9_]+/g)].map((m) => m[0]))].filter(
      (n) => n !== 'aperture_gateway',
    );
    expect(used.length).toBeGreaterThan(10);
    const families = await scrape();
    const exported = new Set(
      [...families.values()].flatMap((f) => f.samples.map((s) => s.name)).concat([...families.keys()]),
    );
    expect(used.filter((n) => !exported.has(n))).toEqual([]);
  });

  it('the parser is strict: it refuses malformed expositions', () => {
    expect(() => parsePrometheus('x_total 1\n')).toThrow(/undeclared/);
    expect(() => parsePrometheus('# TYPE x gauge\nx{a="1} 1\n')).toThrow(/unterminated/);
    expect(() => parsePrometheus('# TYPE x gauge\nx one\n')).toThrow(/bad/);
    const badHistogram = [
      '# TYPE h histogram',
      'h_bucket{le="1"} 2',
      'h_bucket{le="+Inf"} 1',
      'h_sum 1',
      'h_count 1',
      '',
    ];
    expect(() => parsePrometheus(badHistogram.join('\n'))).toThrow(/not increasing/);
  });
});

describe('/metrics without a token', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ METRICS_TOKEN: '' });
  });
  afterAll(async () => {
    await gw?.close();
  });

  it('serves a loopback client (the socket address decides; X-Forwarded-For does not make it remote)', async () => {
    // The test connects over 127.0.0.1: allowed.
    const local = await fetch(`${gw.url}/metrics`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
    expect(local.status).toBe(200);
    expect(parsePrometheus(await local.text()).has('aperture_http_request_duration_seconds')).toBe(true);
  });
});

describe('METRICS_ENABLED=false', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ METRICS_ENABLED: 'false', METRICS_TOKEN: TOKEN });
  });
  afterAll(async () => {
    await gw?.close();
  });

  it('serves no /metrics at all', async () => {
    const res = await fetch(`${gw.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(res.status).toBe(404);
  });
});
