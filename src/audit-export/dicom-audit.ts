import type { AuditRow } from '../index-db/audit';

/**
 * The audit trail's rows as DICOM Audit Messages (PS3.15 Annex A.5, the IHE ATNA format): event, requesting user,
 * this gateway, audit source, and the study, series or instance concerned.
 *
 * Never a name: the user is the token subject, client id or share-link id the trail holds; participant objects are
 * UIDs only. Messages therefore carry no Patient participant (Patient ID is identifying data the trail does not
 * keep); PS3.15 A.5.3 asks for one in some events, which a site's audit repository must tolerate.
 */

interface Coded {
  code: string;
  system: string;
  text: string;
}
const dcm = (code: string, text: string): Coded => ({ code, system: 'DCM', text });

const EVENT = {
  query: dcm('110112', 'Query'),
  accessed: dcm('110103', 'DICOM Instances Accessed'),
  transferred: dcm('110104', 'DICOM Instances Transferred'),
  auditLogUsed: dcm('110101', 'Audit Log Used'),
  securityAlert: dcm('110113', 'Security Alert'),
  authentication: dcm('110114', 'User Authentication'),
  applicationActivity: dcm('110100', 'Application Activity'),
};
const ROLE_SOURCE = dcm('110153', 'Source Role ID');
const ROLE_DESTINATION = dcm('110152', 'Destination Role ID');
const TYPE_LOGIN = dcm('110122', 'Login');
const STUDY_UID = dcm('110180', 'Study Instance UID');
const STUDY_ROOT_FIND = '1.2.840.10008.5.1.4.1.2.2.1';

/** Options of the gateway as an audit source. */
export interface AuditSource {
  /** AuditSourceID (and the gateway's UserID): host name or AUDIT_SOURCE_ID. */
  sourceId: string;
}

function esc(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!,
  );
}
/** XML 1.0 forbids most control characters even escaped: they are dropped. */
function clean(s: string): string {
  // eslint-disable-next-line no-control-regex -- these control characters are exactly what must go
  return esc(s.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, ''));
}
const code = (tag: string, c: Coded) =>
  `<${tag} csd-code="${c.code}" codeSystemName="${c.system}" originalText="${esc(c.text)}"/>`;

function classify(row: AuditRow): { event: Coded; action: 'C' | 'R' | 'U' | 'D' | 'E'; login?: boolean } {
  const a = row.action;
  const m = (row.method ?? '').toUpperCase();
  if (row.outcome === 401) return { event: EVENT.authentication, action: 'E', login: true };
  if (a.startsWith('qido')) return { event: EVENT.query, action: 'E' };
  if (a === 'stow' || a.startsWith('stow.')) return { event: EVENT.transferred, action: 'C' };
  if (a.startsWith('wado') && m === 'DELETE') return { event: EVENT.accessed, action: 'D' };
  if (a.startsWith('wado'))
    return { event: /rendered|thumbnail/.test(a) ? EVENT.accessed : EVENT.transferred, action: 'R' };
  if (a.startsWith('audit.')) return { event: EVENT.auditLogUsed, action: 'R' };
  if (/\.(create|update|delete|revoke|assign)$/.test(a)) {
    return {
      event: EVENT.securityAlert,
      action: a.endsWith('.create') ? 'C' : a.endsWith('.delete') || a.endsWith('.revoke') ? 'D' : 'U',
    };
  }
  // A request refused before its handler named an action: the DICOMweb route says what was asked.
  const route = row.route ?? '';
  if (/\/(dicom-web|wado)(\/|$)/.test(route)) {
    if (m === 'POST') return { event: EVENT.transferred, action: 'C' };
    if (m === 'DELETE') return { event: EVENT.accessed, action: 'D' };
    if (/\/(studies|series|instances)$/.test(route)) return { event: EVENT.query, action: 'E' };
    if (/\/(metadata|rendered|thumbnail)$/.test(route)) return { event: EVENT.accessed, action: 'R' };
    return { event: EVENT.transferred, action: 'R' };
  }
  if (m === 'DELETE') return { event: EVENT.accessed, action: 'D' };
  return { event: EVENT.applicationActivity, action: m === 'GET' || m === 'HEAD' ? 'R' : 'E' };
}

/** EventOutcomeIndicator from the HTTP status actually sent: 0 success, 4 refused or bad input, 8 our failure. */
function outcomeIndicator(status: number): '0' | '4' | '8' {
  if (status < 400) return '0';
  return status < 500 ? '4' : '8';
}

const IPV4 = /^(\d{1,3}\.){3}\d{1,3}$/;

/** One audit row as an `<AuditMessage>` document (UTF-8, no XML declaration, as RFC 5425 carries it). */
export function toAuditMessage(row: AuditRow, source: AuditSource): string {
  const { event, action, login } = classify(row);
  const at = (row.at instanceof Date ? row.at : new Date(row.at)).toISOString();
  const parts: string[] = [];
  parts.push(
    `<EventIdentification EventActionCode="${action}" EventDateTime="${at}" EventOutcomeIndicator="${outcomeIndicator(row.outcome)}">`,
    code('EventID', event),
    login ? code('EventTypeCode', TYPE_LOGIN) : '',
    '</EventIdentification>',
  );
  const ip = row.client_ip?.replace(/^::ffff:/, '') ?? '';
  const nap = ip
    ? ` NetworkAccessPointID="${clean(ip)}" NetworkAccessPointTypeCode="${IPV4.test(ip) || ip.includes(':') ? '2' : '1'}"`
    : '';
  const storing = event === EVENT.transferred && action === 'C';
  parts.push(
    `<ActiveParticipant UserID="${clean(row.principal)}" AlternativeUserID="${clean(row.principal_kind)}" UserIsRequestor="true"${nap}>`,
    event === EVENT.transferred ? code('RoleIDCode', storing ? ROLE_SOURCE : ROLE_DESTINATION) : '',
    '</ActiveParticipant>',
    `<ActiveParticipant UserID="${clean(source.sourceId)}" UserIsRequestor="false">`,
    event === EVENT.transferred ? code('RoleIDCode', storing ? ROLE_DESTINATION : ROLE_SOURCE) : '',
    '</ActiveParticipant>',
    `<AuditSourceIdentification AuditSourceID="${clean(source.sourceId)}">`,
    // RFC 3881 type 4: application server process tier.
    '<AuditSourceTypeCode csd-code="4" codeSystemName="DCM" originalText="Application Server Process Tier"/>',
    '</AuditSourceIdentification>',
  );
  if (row.study_uid) {
    // Type 2 (system object), role 3 (report): the study, as PS3.15 A.5.3 names DICOM objects. Series, instance and
    // project are details of it (their values base64, as the schema's ParticipantObjectDetail has them).
    const detail = (type: string, v: string | null) =>
      v
        ? `<ParticipantObjectDetail type="${type}" value="${Buffer.from(v, 'utf8').toString('base64')}"/>`
        : '';
    parts.push(
      `<ParticipantObjectIdentification ParticipantObjectID="${clean(row.study_uid)}" ParticipantObjectTypeCode="2" ParticipantObjectTypeCodeRole="3">`,
      code('ParticipantObjectIDTypeCode', STUDY_UID),
      detail('SeriesInstanceUID', row.series_uid),
      detail('SOPInstanceUID', row.sop_instance_uid),
      detail('ProjectID', row.project_id),
      '</ParticipantObjectIdentification>',
    );
  }
  if (event === EVENT.query) {
    // The query itself may name a patient: only the route template is carried, never the query string.
    const q = Buffer.from(row.route ?? '', 'utf8').toString('base64');
    parts.push(
      `<ParticipantObjectIdentification ParticipantObjectID="${STUDY_ROOT_FIND}" ParticipantObjectTypeCode="2" ParticipantObjectTypeCodeRole="24">`,
      code('ParticipantObjectIDTypeCode', {
        code: STUDY_ROOT_FIND,
        system: 'DCM',
        text: 'Study Root Query/Retrieve Information Model - FIND',
      }),
      `<ParticipantObjectQuery>${q}</ParticipantObjectQuery>`,
      '</ParticipantObjectIdentification>',
    );
  }
  return `<AuditMessage>${parts.filter(Boolean).join('')}</AuditMessage>`;
}
