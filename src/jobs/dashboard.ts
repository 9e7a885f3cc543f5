/**
 * The jobs dashboard (issue 13): single jobs of the BullMQ queues as administrators see them, with the BullMQ Job
 * API (getJobs, getJob, retry, remove). Job data holds identifiers only (a series UID, a cohort id), so nothing here
 * can show PHI; failure reasons are the workers' own error messages, which follow the same rule.
 */
import type { Job } from 'bullmq';
import type { Pool } from 'pg';
import { ConflictError, NotFoundError } from '../errors';
import { cohortJobSubjects, projectsOfSeries } from '../index-db/jobs';
import { resetFailed, setCohortState } from '../index-db/cohorts';
import { getQueue, QueueName, type QueueNameValue } from './queues';

/** The states a listing can ask for, in BullMQ's words. */
export const JOB_STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'] as const;
export type JobState = (typeof JOB_STATES)[number];
export const JOB_KINDS = Object.values(QueueName);

/** One job as the API shows it. */
export interface JobView {
  kind: QueueNameValue;
  id: string;
  state: JobState;
  /** 0-100: the job's own progress, a cohort's settled instances, or 100 once completed. */
  progress: number;
  attempts: number;
  max_attempts: number;
  /** Why the last attempt failed, in the worker's words (identifiers only); absent unless it failed. */
  failure?: string;
  /** True when BullMQ will not try again by itself (attempts used up or the input can never succeed). */
  gave_up?: boolean;
  created_at: string;
  started_at?: string;
  finished_at?: string;
  subject: { series_uid: string } | { cohort_id: string } | Record<string, never>;
  projects: string[];
}

export interface JobFilter {
  kinds: readonly QueueNameValue[];
  states: readonly JobState[];
  project?: string;
  limit: number;
  offset: number;
  /** How many jobs per queue and state are read at most before filtering (bounds Redis work). */
  scan: number;
}

const iso = (ms: number | undefined): string | undefined => (ms ? new Date(ms).toISOString() : undefined);

/** A failure reason fit for a page: its first line, bounded, never a stack. */
function reasonText(job: Job): string | undefined {
  const r = job.failedReason;
  if (!r) return undefined;
  const line = String(r).split('\n')[0];
  return line.length > 300 ? `${line.slice(0, 297)}...` : line;
}

async function present(db: Pool, entries: Array<{ kind: QueueNameValue; state: JobState; job: Job }>) {
  const series = entries
    .filter((e) => e.kind === QueueName.thumbnails)
    .map((e) => String((e.job.data as { seriesUid?: unknown }).seriesUid ?? ''));
  const cohorts = entries
    .filter((e) => e.kind === QueueName.cohorts)
    .map((e) => String((e.job.data as { cohortId?: unknown }).cohortId ?? ''));
  const [seriesProjects, cohortRows] = await Promise.all([
    projectsOfSeries(db, series),
    cohortJobSubjects(db, cohorts),
  ]);
  return entries.map(({ kind, state, job }): JobView => {
    let subject: JobView['subject'];
    let projects: string[];
    let progress = typeof job.progress === 'number' ? job.progress : 0;
    if (kind === QueueName.thumbnails) {
      const uid = String((job.data as { seriesUid?: unknown }).seriesUid ?? '');
      subject = { series_uid: uid };
      projects = seriesProjects.get(uid) ?? [];
    } else {
      const id = String((job.data as { cohortId?: unknown }).cohortId ?? '');
      subject = { cohort_id: id };
      const c = cohortRows.get(id);
      projects = c?.projects ?? [];
      if (c && c.total > 0) progress = Math.floor((100 * c.settled) / c.total);
    }
    if (state === 'completed') progress = 100;
    const maxAttempts = job.opts.attempts ?? 1;
    const failure = state === 'failed' ? reasonText(job) : undefined;
    return {
      kind,
      id: String(job.id),
      state,
      progress,
      attempts: job.attemptsMade,
      max_attempts: maxAttempts,
      failure,
      gave_up: state === 'failed' ? true : undefined,
      created_at: iso(job.timestamp) ?? new Date(0).toISOString(),
      started_at: iso(job.processedOn),
      finished_at: iso(job.finishedOn),
      subject,
      projects,
    };
  });
}

/**
 * Jobs newest first across the chosen queues and states. Reads at most `scan` jobs per queue and state (newest
 * first), then filters by project and pages: `truncated` says when older jobs were not looked at.
 */
export async function listJobs(db: Pool, f: JobFilter): Promise<{ jobs: JobView[]; truncated: boolean }> {
  // Keyed by job: a job that moves on while the states are read one after the other (active, then completed) is
  // shown once, in the later state.
  const byJob = new Map<string, { kind: QueueNameValue; state: JobState; job: Job }>();
  let truncated = false;
  for (const kind of f.kinds) {
    const queue = getQueue(kind);
    for (const state of f.states) {
      const jobs = await queue.getJobs([state], 0, f.scan - 1, false);
      if (jobs.length >= f.scan) truncated = true;
      for (const job of jobs) if (job) byJob.set(`${kind}/${String(job.id)}`, { kind, state, job });
    }
  }
  const read = [...byJob.values()];
  read.sort((a, b) => b.job.timestamp - a.job.timestamp || String(b.job.id).localeCompare(String(a.job.id)));
  let shown = await present(db, read);
  if (f.project) shown = shown.filter((j) => j.projects.includes(f.project as string));
  return { jobs: shown.slice(f.offset, f.offset + f.limit), truncated };
}

async function findJob(kind: QueueNameValue, id: string): Promise<{ job: Job; state: string }> {
  const job = await getQueue(kind).getJob(id);
  if (!job) throw new NotFoundError('job not found');
  return { job, state: await job.getState() };
}

/** One job. */
export async function showJob(db: Pool, kind: QueueNameValue, id: string): Promise<JobView> {
  const { job, state } = await findJob(kind, id);
  const known = (JOB_STATES as readonly string[]).includes(state) ? (state as JobState) : 'waiting';
  return (await present(db, [{ kind, state: known, job }]))[0];
}

/**
 * Runs a failed job again from its first attempt. A cohort's failed instances go back to pending with it, so the
 * new run retries them too (as POST /api/cohorts/{id}/retry does).
 */
export async function retryJob(db: Pool, kind: QueueNameValue, id: string): Promise<JobView> {
  const { job, state } = await findJob(kind, id);
  if (state !== 'failed') throw new ConflictError(`only a failed job can be retried; this one is ${state}`);
  if (kind === QueueName.cohorts) {
    const cohortId = String((job.data as { cohortId?: unknown }).cohortId ?? '');
    if (/^[0-9a-f-]{36}$/.test(cohortId)) await resetFailed(db, cohortId);
  }
  await job.retry('failed', { resetAttemptsMade: true });
  return showJob(db, kind, id);
}

/**
 * Cancels a job: one that waits (or failed) is removed from its queue; a running cohort is marked cancelled, which
 * its worker honours at the next instance. A running thumbnail cannot be stopped (it takes a second or two).
 */
export async function cancelJob(
  db: Pool,
  kind: QueueNameValue,
  id: string,
): Promise<{ id: string; kind: string; outcome: 'removed' | 'cancelling' }> {
  const { job, state } = await findJob(kind, id);
  const cohortId =
    kind === QueueName.cohorts ? String((job.data as { cohortId?: unknown }).cohortId ?? '') : undefined;
  if (state === 'active') {
    if (!cohortId)
      throw new ConflictError('a running thumbnail job cannot be stopped; it finishes in seconds');
    await setCohortState(db, cohortId, 'cancelled');
    return { id, kind, outcome: 'cancelling' };
  }
  if (state === 'completed') throw new ConflictError('the job has already finished');
  await job.remove();
  if (cohortId && /^[0-9a-f-]{36}$/.test(cohortId)) await setCohortState(db, cohortId, 'cancelled');
  return { id, kind, outcome: 'removed' };
}
