/**
 * Remote DICOM nodes through the archive (issue 14): Orthanc is the DIMSE peer of the clinical PACS. This is the only
 * code that knows Orthanc's /modalities and /queries URLs. Nodes are pushed at runtime (PUT /modalities/{id}, kept
 * in Orthanc's memory only: `ensure` is called before each use, so an Orthanc restart loses nothing).
 *
 * Orthanc 1.10 has no C-GET SCU (the Orthanc book: "Using C-Get as a service class user (SCU) is not currently
 * supported"): C-GET is done by src/bridge/cget.ts with DCMTK getscu, its objects going through the gateway's ingest.
 * C-MOVE is asked by src/bridge/cmove.ts with DCMTK movescu (Orthanc 1.10's C-MOVE SCU cannot be cancelled mid-study);
 * the objects still arrive at the archive's DICOM port.
 */
import { UpstreamError } from '../errors';
import type { Config } from '../config';
import { OrthancClient, OrthancHttpError, type PacsClient } from './client';

/** A node as the archive is told about it. */
export interface RemoteNodeSpec {
  id: string;
  aet: string;
  host: string;
  port: number;
  allowFind: boolean;
  allowMove: boolean;
  allowGet: boolean;
  allowStore: boolean;
}

/** One C-FIND answer: tag (8 hex digits, upper case) -> string value as the node sent it. */
export type FindAnswer = Record<string, string>;

/** A DIMSE operation that failed, with the archive's own description (no PHI: AE titles, statuses). */
export class DimseFailure extends UpstreamError {
  constructor(readonly details: string) {
    super(details);
  }
}

/** The remote-node verbs of the archive. */
export interface RemoteNodes {
  /** Registers (or updates) the node as a DICOM peer of the archive. */
  ensure(node: RemoteNodeSpec): Promise<void>;
  /** Forgets the node. */
  remove(id: string): Promise<void>;
  /** C-ECHO; DimseFailure when it fails. */
  echo(id: string, timeoutS: number): Promise<void>;
  /** C-FIND at `level` with `keys` (keyword -> value; empty value = return key); at most `max` answers kept. */
  find(
    id: string,
    level: 'Study' | 'Series',
    keys: Record<string, string>,
    timeoutS: number,
    max: number,
  ): Promise<{ answers: FindAnswer[]; truncated: boolean }>;
  /** The archive's own AE title (the C-MOVE destination, and the calling AE of bridge/cmove.ts and cget.ts). */
  ownAet(): Promise<string>;
  /** Number of instances the archive holds under a Study Instance UID (0 when none). */
  studyInstanceCount(studyUid: string): Promise<number>;
}

const id = encodeURIComponent;

/** Orthanc's description of a failed DIMSE call ("Details" of its JSON error body). */
function details(err: unknown): string | undefined {
  if (!(err instanceof OrthancHttpError)) return undefined;
  try {
    const body = JSON.parse(err.upstreamBody) as { Details?: string; Message?: string };
    return body.Details ?? body.Message;
  } catch {
    return undefined;
  }
}

async function dimse<T>(op: Promise<T>): Promise<T> {
  try {
    return await op;
  } catch (err) {
    const d = details(err);
    if (d !== undefined) throw new DimseFailure(d);
    throw err;
  }
}

/** Remote nodes on Orthanc's REST API. */
export class OrthancRemoteNodes implements RemoteNodes {
  constructor(private readonly pacs: PacsClient) {}

  async ensure(n: RemoteNodeSpec): Promise<void> {
    await this.pacs.putJson(`/modalities/${id(n.id)}`, {
      AET: n.aet,
      Host: n.host,
      Port: n.port,
      AllowEcho: true,
      AllowFind: n.allowFind,
      AllowMove: n.allowMove,
      AllowGet: n.allowGet,
      // Lets the node's C-STORE sub-operations in when the archive's DICOM port has an allow-list.
      AllowStore: n.allowStore,
      AllowStorageCommitment: false,
    });
  }

  async remove(nodeId: string): Promise<void> {
    await this.pacs.delete(`/modalities/${id(nodeId)}`);
  }

  async echo(nodeId: string, timeoutS: number): Promise<void> {
    await dimse(this.pacs.postJson(`/modalities/${id(nodeId)}/echo`, { Timeout: timeoutS }));
  }

  async find(
    nodeId: string,
    level: 'Study' | 'Series',
    keys: Record<string, string>,
    timeoutS: number,
    max: number,
  ): Promise<{ answers: FindAnswer[]; truncated: boolean }> {
    const q = await dimse(
      this.pacs.postJson<{ ID: string }>(`/modalities/${id(nodeId)}/query`, {
        Level: level,
        Query: keys,
        Timeout: timeoutS,
      }),
    );
    try {
      const list = await this.pacs.getJson<string[]>(`/queries/${id(q.ID)}/answers`);
      const truncated = list.length > max;
      const answers: FindAnswer[] = [];
      for (const index of list.slice(0, max)) {
        const a = await this.pacs.getJson<Record<string, string>>(
          `/queries/${id(q.ID)}/answers/${id(index)}/content?short`,
        );
        const out: FindAnswer = {};
        for (const [tag, v] of Object.entries(a)) {
          if (typeof v === 'string') out[tag.replace(',', '').toUpperCase()] = v;
        }
        answers.push(out);
      }
      return { answers, truncated };
    } finally {
      await this.pacs.delete(`/queries/${id(q.ID)}`).catch(() => undefined);
    }
  }

  async ownAet(): Promise<string> {
    return (await this.pacs.getJson<{ DicomAet: string }>('/system')).DicomAet;
  }

  async studyInstanceCount(studyUid: string): Promise<number> {
    const found = await this.pacs.lookup(studyUid);
    const study = found.find((r) => r.Type === 'Study');
    if (!study) return 0;
    const s = await this.pacs.getJson<{ Statistics?: unknown }>(`/studies/${id(study.ID)}/statistics`);
    return Number((s as { CountInstances?: number }).CountInstances ?? 0);
  }
}

let nodes: { api: RemoteNodes; client: OrthancClient } | undefined;

/**
 * Opens the remote-node interface on a client of its own: a C-FIND or C-ECHO through Orthanc answers when the node
 * did, which may take far longer than the archive's other calls (ORTHANC_TIMEOUT_MS), so this client waits up to
 * BRIDGE_DIMSE_TIMEOUT_S (plus a margin) for an answer.
 */
export function initRemoteNodes(
  config: ConstructorParameters<typeof OrthancClient>[0] & Pick<Config, 'BRIDGE_DIMSE_TIMEOUT_S'>,
): RemoteNodes {
  if (nodes) return nodes.api;
  const client = new OrthancClient({
    ...config,
    ORTHANC_TIMEOUT_MS: config.BRIDGE_DIMSE_TIMEOUT_S * 1000 + 30_000,
    ORTHANC_CONNECTIONS: 16,
  });
  nodes = { api: new OrthancRemoteNodes(client), client };
  return nodes.api;
}
/** The shared remote-node interface. */
export function getRemoteNodes(): RemoteNodes {
  if (!nodes) throw new Error('remote nodes not initialised');
  return nodes.api;
}
/** Closes the remote-node interface's client. */
export async function closeRemoteNodes(): Promise<void> {
  const n = nodes;
  nodes = undefined;
  await n?.client.close();
}
