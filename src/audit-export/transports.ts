import { readFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { connect as tlsConnect } from 'node:tls';
import { request } from 'undici';
import type { AuditRow } from '../index-db/audit';

/** Where audit messages go: a batch is sent whole, or the call throws and the batch is sent again later. */
export interface AuditDestination {
  readonly name: string;
  send(rows: readonly AuditRow[], messages: readonly string[]): Promise<void>;
  close(): Promise<void>;
}

const SEND_TIMEOUT_MS = 10_000;
/** Facility 10 (security/authorization) and severity 5 (notice), as IHE ATNA sends audit records. */
const PRI = 10 * 8 + 5;
const APP_NAME = 'aperture';
/** RFC 5424 MSGID of IHE ATNA (RFC 3881 / DICOM PS3.15 A.5 payload). */
const MSG_ID = 'IHE+RFC-3881';
const BOM = '\ufeff';

/** One RFC 5424 message with its DICOM audit XML as MSG (UTF-8, BOM-prefixed as §6.4 asks for UTF-8). */
export function syslogMessage(xml: string, at: Date, host = hostname()): string {
  const h = host.replace(/[^\x21-\x7e]/g, '').slice(0, 255) || '-';
  return `<${PRI}>1 ${at.toISOString()} ${h} ${APP_NAME} ${process.pid} ${MSG_ID} - ${BOM}${xml}`;
}

/** RFC 5425 / RFC 6587 octet-counting frame: `MSG-LEN SP SYSLOG-MSG`. */
export function octetFrame(msg: string): Buffer {
  const body = Buffer.from(msg, 'utf8');
  return Buffer.concat([Buffer.from(`${body.length} `, 'ascii'), body]);
}

/**
 * Syslog over TCP (RFC 6587) or TLS (RFC 5425), one kept connection, reopened after any error. Syslog has no
 * acknowledgement: a batch counts as sent once the kernel has taken every byte.
 */
export class SyslogDestination implements AuditDestination {
  readonly name = 'syslog';
  private socket?: Socket;
  private readonly host: string;
  private readonly port: number;
  private readonly tls: boolean;
  private readonly ca?: string;

  constructor(url: string, caFile?: string) {
    const u = new URL(url);
    if (u.protocol !== 'tcp:' && u.protocol !== 'tls:')
      throw new Error('AUDIT_SYSLOG_URL must be tcp://host:port or tls://host:port');
    this.tls = u.protocol === 'tls:';
    this.host = u.hostname;
    this.port = Number(u.port || (this.tls ? 6514 : 514));
    this.ca = caFile ? readFileSync(caFile, 'utf8') : undefined;
  }

  private open(): Promise<Socket> {
    if (this.socket && !this.socket.destroyed) return Promise.resolve(this.socket);
    return new Promise((resolve, reject) => {
      const s = this.tls
        ? tlsConnect({ host: this.host, port: this.port, ca: this.ca, servername: this.host })
        : netConnect({ host: this.host, port: this.port });
      const timer = setTimeout(() => s.destroy(new Error('syslog connect timeout')), SEND_TIMEOUT_MS);
      s.once(this.tls ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        s.setKeepAlive(true, 30_000);
        this.socket = s;
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      // Later errors (the server went away) only mark the socket dead; the next batch reconnects.
      s.on('error', () => s.destroy());
      s.on('close', () => {
        if (this.socket === s) this.socket = undefined;
      });
      // A syslog server sends nothing back; reading keeps a half-closed connection from going unnoticed.
      s.on('data', () => undefined);
    });
  }

  async send(rows: readonly AuditRow[], messages: readonly string[]): Promise<void> {
    const s = await this.open();
    const payload = Buffer.concat(messages.map((m, i) => octetFrame(syslogMessage(m, new Date(rows[i].at)))));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error('syslog write timeout'));
      }, SEND_TIMEOUT_MS);
      s.write(payload, (err) => {
        clearTimeout(timer);
        if (err) {
          s.destroy();
          reject(err);
        } else resolve();
      });
    });
  }

  async close(): Promise<void> {
    const s = this.socket;
    this.socket = undefined;
    if (s) await new Promise<void>((r) => s.end(() => r()));
  }
}

/** Splunk HTTP Event Collector: one POST per batch (concatenated JSON events), acknowledged by its 200. */
export class HecDestination implements AuditDestination {
  readonly name = 'hec';
  constructor(
    private readonly url: string,
    private readonly token: string,
    private readonly host = hostname(),
  ) {}

  async send(rows: readonly AuditRow[], messages: readonly string[]): Promise<void> {
    const body = rows
      .map((r, i) =>
        JSON.stringify({
          time: new Date(r.at).getTime() / 1000,
          host: this.host,
          source: 'aperture',
          sourcetype: 'dicom:audit',
          // Identifiers only, as in the trail; the details column is not forwarded.
          event: {
            id: r.id,
            action: r.action,
            outcome: r.outcome,
            principal: r.principal,
            principalKind: r.principal_kind,
            project: r.project_id,
            study: r.study_uid,
            series: r.series_uid,
            instance: r.sop_instance_uid,
            method: r.method,
            route: r.route,
            bytes: Number(r.bytes),
            clientIp: r.client_ip,
            auditMessage: messages[i],
          },
        }),
      )
      .join('\n');
    const res = await request(this.url, {
      method: 'POST',
      headers: { authorization: `Splunk ${this.token}`, 'content-type': 'application/json' },
      body,
      headersTimeout: SEND_TIMEOUT_MS,
      bodyTimeout: SEND_TIMEOUT_MS,
    });
    const text = await res.body.text().catch(() => '');
    if (res.statusCode !== 200) throw new Error(`HEC answered ${res.statusCode}: ${text.slice(0, 200)}`);
  }

  async close(): Promise<void> {}
}
