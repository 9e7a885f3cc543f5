import { accessToken } from './auth';

/** An error for a person: what happened and what to do, never a stack or raw JSON. */
export class UserFacingError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly advice: string,
  ) {
    super(message);
  }
}

/** The gateway's own safe message, if the body is its DICOM-conformant error. */
async function serverMessage(res: Response): Promise<string | undefined> {
  try {
    const body = (await res.json()) as { errors?: Array<{ message?: string }> };
    const m = body.errors?.[0]?.message;
    return typeof m === 'string' && m.length < 300 ? m : undefined;
  } catch {
    return undefined;
  }
}

/** Turns a refusal into words, following the API's rule: what is not yours does not exist (404, never 403). */
export async function explain(res: Response): Promise<UserFacingError> {
  const said = await serverMessage(res);
  switch (res.status) {
    case 401:
      return new UserFacingError(401, 'Your session has ended.', 'Sign in again to continue.');
    case 403:
      return new UserFacingError(
        403,
        'Your role does not allow this.',
        'Ask a project administrator for access.',
      );
    case 404:
      return new UserFacingError(
        404,
        'Not found.',
        'It does not exist, or it is not in a project you can see. Check the link or ask for access.',
      );
    case 413:
      return new UserFacingError(413, 'The request is too large.', 'Send fewer or smaller files at once.');
    case 429:
      return new UserFacingError(429, 'Too many requests.', 'Wait a few seconds and try again.');
    case 503: {
      const wait = res.headers.get('Retry-After');
      return new UserFacingError(
        503,
        'A service the archive depends on is unavailable.',
        `Try again${wait ? ` in ${wait} seconds` : ' shortly'}.`,
      );
    }
    default:
      if (res.status >= 400 && res.status < 500) {
        return new UserFacingError(
          res.status,
          said ? `The archive refused the request: ${said}.` : 'The archive refused the request.',
          'Check what you entered and try again.',
        );
      }
      return new UserFacingError(
        res.status,
        'The archive could not answer.',
        'Try again in a moment; if it keeps failing, tell the administrators.',
      );
  }
}

/** Like gatewayFetch, but hands back refusals too (STOW-RS answers 400/409 with a per-file body). */
export async function gatewayFetchAny(path: string, init: RequestInit = {}): Promise<Response> {
  const token = path.startsWith('/share/') ? undefined : await accessToken();
  const headers = new Headers(init.headers);
  if (token) headers.set('Authorization', `Bearer ${token}`);
  try {
    return await fetch(path, { ...init, headers });
  } catch {
    throw new UserFacingError(
      0,
      'The archive cannot be reached.',
      'Check your network connection and try again.',
    );
  }
}

/** A fetch to the gateway with the user's token in the Authorization header (never in the URL). */
export async function gatewayFetch(path: string, init: RequestInit = {}): Promise<Response> {
  // A share link is its own credential: the user's token is not sent along with it.
  const token = path.startsWith('/share/') ? undefined : await accessToken();
  const headers = new Headers(init.headers);
  if (token) headers.set('Authorization', `Bearer ${token}`);
  let res: Response;
  try {
    res = await fetch(path, { ...init, headers });
  } catch {
    throw new UserFacingError(
      0,
      'The archive cannot be reached.',
      'Check your network connection and try again.',
    );
  }
  if (!res.ok) throw await explain(res);
  return res;
}

export async function getJson<T>(path: string, accept = 'application/json'): Promise<T> {
  const res = await gatewayFetch(path, { headers: { Accept: accept } });
  if (res.status === 204) return [] as T;
  return (await res.json()) as T;
}

/** A project as /api/projects lists it. */
export interface Project {
  id: string;
  name: string;
  description: string;
  num_studies: number;
  num_series: number;
  num_instances: number;
  roles: string[];
}

/** One DICOM JSON dataset (PS3.18 Annex F). */
export type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;

/** The first value of a tag as text; person names as their alphabetic form with carets as spaces. */
export function tagText(d: DicomJson, tag: string): string {
  const v = d[tag]?.Value?.[0];
  if (v === undefined || v === null) return '';
  if (typeof v === 'object' && 'Alphabetic' in (v as object)) {
    return String((v as { Alphabetic?: string }).Alphabetic ?? '')
      .replace(/\^+/g, ' ')
      .trim();
  }
  return String(v);
}

export function tagValues(d: DicomJson, tag: string): string[] {
  return (d[tag]?.Value ?? []).map(String);
}

/** YYYYMMDD as YYYY-MM-DD. */
export function dicomDate(s: string): string {
  return /^\d{8}$/.test(s) ? `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}` : s;
}

/** The DICOMweb root of a share link (read-only; the token is the credential, no login). */
export function shareRoot(token: string): string {
  return `/share/${encodeURIComponent(token)}/dicom-web`;
}

/** The DICOMweb root of a project, or the union of the caller's projects. */
export function dicomwebRoot(project: string | undefined): string {
  return project ? `/projects/${encodeURIComponent(project)}/dicom-web` : '/dicom-web';
}

export const Tags = {
  StudyInstanceUID: '0020000D',
  SeriesInstanceUID: '0020000E',
  PatientName: '00100010',
  PatientID: '00100020',
  StudyDate: '00080020',
  AccessionNumber: '00080050',
  StudyDescription: '00081030',
  ModalitiesInStudy: '00080061',
  Modality: '00080060',
  SeriesDescription: '0008103E',
  SeriesNumber: '00200011',
  NumberOfStudyRelatedSeries: '00201206',
  NumberOfStudyRelatedInstances: '00201208',
  NumberOfSeriesRelatedInstances: '00201209',
  BodyPartExamined: '00180015',
  PatientBirthDate: '00100030',
  PatientSex: '00100040',
  ReferringPhysicianName: '00080090',
} as const;

/** A refusal met through a share link reads as the link's end, not as a login problem. */
export function shareError(err: unknown): unknown {
  if (err instanceof UserFacingError && [401, 403, 404].includes(err.status)) {
    return new UserFacingError(
      err.status,
      'This share link has expired, was revoked, or does not cover this item.',
      'Ask the person who shared it for a new link.',
    );
  }
  return err;
}

/**
 * Saves a ZIP the gateway streams, through a single-use link it makes (POST /api/download-links): the browser's own
 * download manager writes it to disk as it arrives, nothing is held in page memory, and no bearer token is in a URL.
 */
export async function streamedDownload(path: string, filename: string): Promise<void> {
  const res = await gatewayFetch('/api/download-links', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ path }),
  });
  const { url } = (await res.json()) as { url: string };
  saveFromUrl(url, filename);
}

/**
 * Saves a study or series a share link covers as a ZIP the gateway streams. The link is its own credential, already in
 * the path, so the browser's download manager fetches it directly and writes it to disk as it arrives; the `accept`
 * query parameter (PS3.18 §8.3.3.1) asks for application/zip, since an <a> cannot send an Accept header.
 */
export function sharedDownload(path: string, filename: string): void {
  saveFromUrl(`${path}?accept=${encodeURIComponent('application/zip')}`, filename);
}

function saveFromUrl(url: string, filename: string): void {
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
}

/**
 * POSTs a form with the user's token and reports upload progress (fetch cannot: XMLHttpRequest's upload events
 * can). Resolves with the status and body text of any answer; rejects only when the gateway cannot be reached.
 */
export async function uploadWithProgress(
  path: string,
  form: FormData,
  onProgress: (sent: number, total: number) => void,
): Promise<{ status: number; text: string; retryAfter: string | null }> {
  const token = await accessToken();
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : 0);
    xhr.onload = () =>
      resolve({
        status: xhr.status,
        text: xhr.responseText,
        retryAfter: xhr.getResponseHeader('Retry-After'),
      });
    xhr.onerror = () =>
      reject(
        new UserFacingError(
          0,
          'The archive cannot be reached.',
          'Check your network connection and try again.',
        ),
      );
    xhr.send(form);
  });
}

/** A refusal from uploadWithProgress in words, like explain() does for fetch. */
export async function explainText(
  status: number,
  text: string,
  retryAfter: string | null,
): Promise<UserFacingError> {
  const headers = new Headers({ 'Content-Type': 'application/json' });
  if (retryAfter) headers.set('Retry-After', retryAfter);
  return explain(new Response(text, { status, headers }));
}

/** Reads an NDJSON response line by line as it arrives. */
export async function* ndjsonLines<T>(res: Response): AsyncGenerator<T> {
  if (!res.body) return;
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (value) buf += decoder.decode(value, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) yield JSON.parse(line) as T;
    }
    if (done) break;
  }
  if (buf.trim()) yield JSON.parse(buf) as T;
}

/** Roles rank like the gateway's: each includes the ones below it. */
const ROLE_RANK: Record<string, number> = { reader: 1, contributor: 2, curator: 3, admin: 4 };

/** Whether any of `roles` reaches `role`. Only decides which controls to show: the API decides what is allowed. */
export function roleAtLeast(roles: string[], role: 'reader' | 'contributor' | 'curator' | 'admin'): boolean {
  return roles.some((r) => (ROLE_RANK[r] ?? 0) >= ROLE_RANK[role]);
}

/** The caller's roles in one project (empty when it is not a member). */
export async function projectRoles(project: string): Promise<string[]> {
  const all = await getJson<Project[]>('/api/projects');
  return all.find((p) => p.id === project)?.roles ?? [];
}
