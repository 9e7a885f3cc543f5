/**
 * Audit of a cohort job's worker steps (issue 10 item 9): the worker has no HTTP request to audit, so each step —
 * read the source, pseudonym mapping, de-identify, clean pixel data, leak check, store — is counted per batch and written as one
 * audit row per step, under the principal who requested the cohort. Counts and reason codes only: no UID, name or
 * value of the objects (the rows are readable by the project's admins).
 */
import type { Pool } from 'pg';
import { type AuditEvent, insertAuditEvents } from '../index-db/audit';

/** The worker steps, in the order an instance goes through them. */
export const COHORT_STEPS = ['read', 'mapping', 'deidentify', 'clean-pixels', 'leak-check', 'store'] as const;
export type CohortStep = (typeof COHORT_STEPS)[number];

/** Outcome counts of one step; the keys are fixed words (ok, failed, withheld, barred, reason codes). */
type Counts = Record<string, number>;

/** Counts the steps of a batch of instances and writes them as audit rows. */
export class CohortStepAudit {
  private counts = new Map<CohortStep, Counts>();
  private bytes = new Map<CohortStep, number>();

  constructor(
    private readonly db: Pool,
    private readonly cohort: {
      id: string;
      created_by: string;
      source_project_id: string;
      research_project_id: string;
    },
  ) {}

  /** Counts one outcome of one step. */
  note(step: CohortStep, outcome: string): void {
    const c = this.counts.get(step) ?? {};
    c[outcome] = (c[outcome] ?? 0) + 1;
    this.counts.set(step, c);
  }

  /** Adds bytes handled by a step (the stored size, for `store`). */
  addBytes(step: CohortStep, n: number): void {
    this.bytes.set(step, (this.bytes.get(step) ?? 0) + n);
  }

  /**
   * Writes one row per step counted since the last flush. Reading, de-identifying, the leak check and the mapping
   * concern the source project's data (its audit trail); storing concerns the research project (its audit trail).
   */
  async flush(): Promise<void> {
    if (this.counts.size === 0) return;
    const at = new Date();
    const events: AuditEvent[] = COHORT_STEPS.filter((s) => this.counts.has(s)).map((step) => {
      const counts = this.counts.get(step)!;
      const failed = Object.entries(counts).some(
        ([k, n]) => n > 0 && k !== 'ok' && k !== 'withheld' && k !== 'barred',
      );
      return {
        at,
        principal: this.cohort.created_by,
        principalKind: 'user',
        action: `cohort.job.${step}`,
        projectId: step === 'store' ? this.cohort.research_project_id : this.cohort.source_project_id,
        studyUid: null,
        seriesUid: null,
        sopInstanceUid: null,
        outcome: failed ? 207 : 200,
        bytes: this.bytes.get(step) ?? 0,
        clientIp: null,
        method: null,
        route: 'worker:cohorts',
        detail: {
          cohort: this.cohort.id,
          research_project: this.cohort.research_project_id,
          instances: Object.values(counts).reduce((a, b) => a + b, 0),
          counts,
        },
      };
    });
    this.counts = new Map();
    this.bytes = new Map();
    await insertAuditEvents(this.db, events);
  }
}
