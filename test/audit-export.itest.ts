import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { closeAuditExporter, getAuditExporter, initAuditExporter } from '../src/audit-export/exporter';
import { createLogger } from '../src/logger';
import { type TestGateway, startGateway } from './helpers/gateway';

/**
 * The audit trail forwarded as DICOM Audit Messages: a syslog listener (RFC 6587 octet counting over TCP) and a
 * Splunk HEC stand-in, both real servers on loopback, receive what a real gateway exports after real requests.
 * Each message is checked against the structure of the DICOM audit message schema (PS3.15 A.5.1), written here
 * from the standard's RELAX NG definition (no RELAX NG validator is installed), and checked to carry no names.
 */

// ---------- a minimal, strict XML reader (elements, attributes, text; what audit messages use) ----------

interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  text: string;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
const decode = (s: string) =>
  s.replace(/&(amp|lt|gt|quot|apos);|&/g, (_m, e: string | undefined) => {
    if (!e) throw new Error('bare & in XML');
    return ENTITIES[e];
  });

function parseXml(xml: string): XmlElement {
  let i = 0;
  const ws = () => {
    while (/\s/.test(xml[i] ?? '')) i++;
  };
  const element = (): XmlElement => {
    const open = /^<([A-Za-z_][\w.-]*)/.exec(xml.slice(i));
    if (!open) throw new Error(`expected an element at ${i}`);
    i += open[0].length;
    const el: XmlElement = { name: open[1], attrs: {}, children: [], text: '' };
    for (;;) {
      ws();
      if (xml.startsWith('/>', i)) {
        i += 2;
        return el;
      }
      if (xml[i] === '>') {
        i++;
        break;
      }
      const a = /^([A-Za-z_][\w.-]*)="([^"<]*)"/.exec(xml.slice(i));
      if (!a) throw new Error(`bad attribute at ${i} in <${el.name}>`);
      if (a[1] in el.attrs) throw new Error(`duplicate attribute ${a[1]}`);
      el.attrs[a[1]] = decode(a[2]);
      i += a[0].length;
    }
    for (;;) {
      if (xml.startsWith(`</${el.name}>`, i)) {
        i += el.name.length + 3;
        return el;
      }
      if (xml[i] === '<') el.children.push(element());
      else {
        const end = xml.indexOf('<', i);
        if (end < 0) throw new Error(`unclosed <${el.name}>`);
        el.text += decode(xml.slice(i, end));
        i = end;
      }
    }
  };
  const root = element();
  if (i !== xml.length) throw new Error('content after the root element');
  return root;
}

// ---------- the DICOM audit message schema (PS3.15 A.5.1), as structural rules ----------

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const XSD_DATETIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const BOOLEAN = /^(true|false|1|0)$/;

/** Problems of one audit message against the schema; empty = valid. */
function auditSchemaProblems(root: XmlElement): string[] {
  const p: string[] = [];
  const attrs = (
    el: XmlElement,
    required: string[],
    optional: Record<string, RegExp | null>,
    req: Record<string, RegExp | null> = {},
  ) => {
    const allowed = new Set([...required, ...Object.keys(optional), ...Object.keys(req)]);
    for (const a of Object.keys(el.attrs))
      if (!allowed.has(a)) p.push(`<${el.name}> has attribute ${a} the schema does not define`);
    for (const a of [...required, ...Object.keys(req)])
      if (!(a in el.attrs)) p.push(`<${el.name}> lacks required ${a}`);
    for (const [a, re] of Object.entries({ ...optional, ...req })) {
      if (re && a in el.attrs && !re.test(el.attrs[a]))
        p.push(`<${el.name}> ${a}="${el.attrs[a]}" is not allowed`);
    }
  };
  const coded = (el: XmlElement) => {
    // CodedValueType: csd-code, codeSystemName and originalText required; displayName optional; empty content.
    attrs(el, ['csd-code', 'codeSystemName', 'originalText'], { displayName: null });
    if (el.children.length || el.text.trim()) p.push(`<${el.name}> must be empty`);
  };
  /** Children must follow `order`, each within its [min, max] count. */
  const sequence = (el: XmlElement, order: [string, number, number][]) => {
    let k = 0;
    for (const [name, min, max] of order) {
      let n = 0;
      while (el.children[k]?.name === name) {
        n++;
        k++;
      }
      if (n < min || n > max) p.push(`<${el.name}> has ${n} <${name}> (allowed ${min}..${max})`);
    }
    if (k < el.children.length)
      p.push(`<${el.name}> has unexpected <${el.children[k].name}> at position ${k}`);
  };

  if (root.name !== 'AuditMessage') return [`root is <${root.name}>, not <AuditMessage>`];
  attrs(root, [], {});
  sequence(root, [
    ['EventIdentification', 1, 1],
    ['ActiveParticipant', 1, Infinity],
    ['AuditSourceIdentification', 1, 1],
    ['ParticipantObjectIdentification', 0, Infinity],
  ]);
  for (const el of root.children) {
    if (el.name === 'EventIdentification') {
      attrs(
        el,
        [],
        { EventActionCode: /^[CRUDE]$/ },
        { EventDateTime: XSD_DATETIME, EventOutcomeIndicator: /^(0|4|8|12)$/ },
      );
      sequence(el, [
        ['EventID', 1, 1],
        ['EventTypeCode', 0, Infinity],
      ]);
      el.children.forEach(coded);
    } else if (el.name === 'ActiveParticipant') {
      attrs(
        el,
        ['UserID'],
        {
          AlternativeUserID: null,
          UserName: null,
          NetworkAccessPointID: null,
          NetworkAccessPointTypeCode: /^[1-5]$/,
        },
        { UserIsRequestor: BOOLEAN },
      );
      sequence(el, [
        ['RoleIDCode', 0, Infinity],
        ['MediaIdentifier', 0, 1],
      ]);
      el.children.filter((c) => c.name === 'RoleIDCode').forEach(coded);
    } else if (el.name === 'AuditSourceIdentification') {
      attrs(el, ['AuditSourceID'], { AuditEnterpriseSiteID: null });
      sequence(el, [['AuditSourceTypeCode', 0, Infinity]]);
      el.children.forEach(coded);
    } else if (el.name === 'ParticipantObjectIdentification') {
      attrs(el, ['ParticipantObjectID'], {
        ParticipantObjectTypeCode: /^[1-4]$/,
        ParticipantObjectTypeCodeRole: /^([1-9]|1\d|2[0-4])$/,
        ParticipantObjectDataLifeCycle: /^([1-9]|1[0-5])$/,
        ParticipantObjectSensitivity: null,
      });
      sequence(el, [
        ['ParticipantObjectIDTypeCode', 1, 1],
        ['ParticipantObjectName', 0, 1],
        ['ParticipantObjectQuery', 0, 1],
        ['ParticipantObjectDetail', 0, Infinity],
        ['ParticipantObjectDescription', 0, Infinity],
        ['SOPClass', 0, Infinity],
        ['Accession', 0, Infinity],
        ['MPPS', 0, Infinity],
        ['ParticipantObjectContainsStudy', 0, 1],
        ['Encrypted', 0, 1],
        ['Anonymized', 0, 1],
      ]);
      if (
        el.children.some((c) => c.name === 'ParticipantObjectName') &&
        el.children.some((c) => c.name === 'ParticipantObjectQuery')
      ) {
        p.push('ParticipantObjectName and ParticipantObjectQuery are alternatives');
      }
      for (const c of el.children) {
        if (c.name === 'ParticipantObjectIDTypeCode') coded(c);
        if (c.name === 'ParticipantObjectQuery' && !BASE64.test(c.text))
          p.push('ParticipantObjectQuery is not base64');
        if (c.name === 'ParticipantObjectDetail') attrs(c, [], {}, { type: null, value: BASE64 });
      }
    }
  }
  return p;
}

/** Every name-like place of the schema, which Aperture must never fill. */
function nameFields(root: XmlElement): string[] {
  const out: string[] = [];
  const walk = (el: XmlElement) => {
    if ('UserName' in el.attrs) out.push('UserName');
    if (el.name === 'ParticipantObjectName') out.push('ParticipantObjectName');
    el.children.forEach(walk);
  };
  walk(root);
  return out;
}

// ---------- the listeners ----------

/** A syslog server reading RFC 6587 octet-counted frames (`LEN SP MSG`) from any number of connections. */
function syslogListener(): Promise<{ server: Server; port: number; messages: string[] }> {
  const messages: string[] = [];
  const server = createServer((sock: Socket) => {
    let buf = Buffer.alloc(0);
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const sp = buf.indexOf(0x20);
        if (sp < 0) return;
        const lenText = buf.subarray(0, sp).toString('ascii');
        if (!/^[1-9]\d*$/.test(lenText)) throw new Error(`bad frame length ${lenText}`);
        const len = Number(lenText);
        if (buf.length < sp + 1 + len) return;
        messages.push(buf.subarray(sp + 1, sp + 1 + len).toString('utf8'));
        buf = buf.subarray(sp + 1 + len);
      }
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({ server, port: (server.address() as AddressInfo).port, messages }),
    ),
  );
}

/** A Splunk HEC stand-in: refuses the first batch with 503 (to exercise the retry), then accepts. */
function hecListener(): Promise<{
  server: HttpServer;
  url: string;
  requests: { auth?: string; body: string; status: number }[];
}> {
  const requests: { auth?: string; body: string; status: number }[] = [];
  const server = createHttpServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      const status = requests.length === 0 ? 503 : 200;
      requests.push({ auth: req.headers.authorization, body, status });
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(status === 200 ? '{"text":"Success","code":0}' : '{"text":"Server is busy","code":9}');
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        server,
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/services/collector/event`,
        requests,
      }),
    ),
  );
}

async function until<T>(what: string, probe: () => T | undefined, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const RFC5424 =
  /^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (-|\[.*\]) \ufeff(<AuditMessage>.*<\/AuditMessage>)$/s;
const HEC_TOKEN = '5b1c1e0e-0000-4000-8000-00000000hec1';

describe('audit export: DICOM audit messages over syslog and Splunk HEC', () => {
  let gw: TestGateway;
  let syslog: Awaited<ReturnType<typeof syslogListener>>;
  let hec: Awaited<ReturnType<typeof hecListener>>;

  beforeAll(async () => {
    syslog = await syslogListener();
    hec = await hecListener();
    gw = await startGateway({
      AUDIT_SYSLOG_URL: `tcp://127.0.0.1:${syslog.port}`,
      AUDIT_HEC_URL: hec.url,
      AUDIT_HEC_TOKEN: HEC_TOKEN,
      AUDIT_EXPORT_INTERVAL_MS: '100',
      AUDIT_EXPORT_MAX_BACKOFF_MS: '300',
      AUDIT_SOURCE_ID: 'aperture-test',
    });
    // As main.ts does for the gateway process.
    await initAuditExporter(gw.services.db, createLogger('silent'), gw.config);
  });
  afterAll(async () => {
    await closeAuditExporter();
    await gw?.close();
    await new Promise((r) => syslog?.server.close(r));
    await new Promise((r) => hec?.server.close(r));
  });

  it('forwards a request as a schema-valid DICOM audit message in an RFC 5424 frame, carrying no name', async () => {
    const study = `1.2.826.0.1.3680043.2.1125.17.${Date.now()}`;
    const res = await fetch(`${gw.url}/dicom-web/studies/${study}/metadata`);
    expect(res.status).toBe(404);
    await res.arrayBuffer();
    // A query naming a patient: the name must appear nowhere in what is exported.
    const q = await fetch(`${gw.url}/dicom-web/studies?PatientName=EXPORTTEST%5EJANE`);
    await q.arrayBuffer();

    const frame = await until('the audit message for the study', () =>
      syslog.messages.find((m) => m.includes(study)),
    );
    const m = RFC5424.exec(frame);
    expect(m).not.toBeNull();
    const [, pri, timestamp, host, app, , msgId, sd, xml] = m!;
    expect({ pri, app, msgId, sd }).toEqual({ pri: '85', app: 'aperture', msgId: 'IHE+RFC-3881', sd: '-' });
    expect(Number.isNaN(Date.parse(timestamp))).toBe(false);
    expect(host).toMatch(/^[\x21-\x7e]+$/);

    const doc = parseXml(xml);
    expect(auditSchemaProblems(doc)).toEqual([]);
    expect(nameFields(doc)).toEqual([]);
    const event = doc.children[0];
    expect(event.attrs).toMatchObject({ EventActionCode: 'R', EventOutcomeIndicator: '4' });
    expect(event.children[0].attrs).toMatchObject({ 'csd-code': '110103', codeSystemName: 'DCM' });
    const po = doc.children.find((c) => c.name === 'ParticipantObjectIdentification');
    expect(po?.attrs).toMatchObject({
      ParticipantObjectID: study,
      ParticipantObjectTypeCode: '2',
      ParticipantObjectTypeCodeRole: '3',
    });
    expect(po?.children[0].attrs['csd-code']).toBe('110180');
    const source = doc.children.find((c) => c.name === 'AuditSourceIdentification');
    expect(source?.attrs.AuditSourceID).toBe('aperture-test');

    const query = await until('the query message', () =>
      syslog.messages.find((x) => x.includes('csd-code="110112"')),
    );
    const queryDoc = parseXml(RFC5424.exec(query)![8]);
    expect(auditSchemaProblems(queryDoc)).toEqual([]);
    for (const msg of syslog.messages) expect(msg).not.toMatch(/EXPORTTEST|JANE/);
  });

  it('the schema rules refuse messages that break them', () => {
    const bad = parseXml(
      '<AuditMessage><ActiveParticipant UserID="u" UserIsRequestor="maybe"/><EventIdentification EventDateTime="yesterday" EventOutcomeIndicator="3"><EventID csd-code="1" codeSystemName="DCM"/></EventIdentification></AuditMessage>',
    );
    const problems = auditSchemaProblems(bad).join('\n');
    expect(problems).toMatch(/AuditMessage> has 0 <EventIdentification>/);
    expect(problems).toMatch(/UserIsRequestor="maybe"/);
    expect(problems).toMatch(/EventDateTime="yesterday"/);
    expect(problems).toMatch(/EventOutcomeIndicator="3"/);
    expect(problems).toMatch(/<EventID> lacks required originalText/);
  });

  it('sends each event once to syslog, and retries the HEC batch it refused until it is accepted', async () => {
    const study = `1.2.826.0.1.3680043.2.1125.17.${Date.now()}.2`;
    for (let i = 0; i < 3; i++)
      await (await fetch(`${gw.url}/dicom-web/studies/${study}/metadata`)).arrayBuffer();
    await until('three syslog messages for the study', () =>
      syslog.messages.filter((m) => m.includes(study)).length >= 3 ? true : undefined,
    );
    const accepted = await until('an accepted HEC batch with the study', () =>
      hec.requests.find((r) => r.status === 200 && r.body.includes(study)),
    );
    expect(hec.requests[0].status).toBe(503);
    expect(accepted.auth).toBe(`Splunk ${HEC_TOKEN}`);
    const events = accepted.body
      .split('\n')
      .map((l) => JSON.parse(l) as { sourcetype: string; event: Record<string, unknown> });
    const mine = events.filter((e) => e.event.study === study);
    expect(mine).toHaveLength(3);
    expect(mine[0].sourcetype).toBe('dicom:audit');
    expect(auditSchemaProblems(parseXml(String(mine[0].event.auditMessage)))).toEqual([]);
    expect(accepted.body).not.toMatch(/EXPORTTEST|JANE/);

    // Once the exporter has settled, each of the three events went to syslog exactly once.
    await getAuditExporter()!.drain();
    expect(syslog.messages.filter((m) => m.includes(study))).toHaveLength(3);
    const backlog = await getAuditExporter()!.backlog();
    expect(backlog).toEqual({ syslog: 0, hec: 0 });
  });
});
