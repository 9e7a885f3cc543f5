#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { SingleBar } from 'cli-progress';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  countSynthInstances,
  generateInstances,
  SYNTH_MODALITIES,
  type SynthModality,
  type SynthOptions,
} from './synth';
import { stowInstances, type StowRequestResult } from './stow-client';

interface SynthCliOptions {
  patients: number;
  studiesPerPatient: number;
  seriesPerStudy: number;
  instancesPerSeries: number;
  modalities: SynthModality[];
  rows?: number;
  cols?: number;
  seed: string;
  dateFrom?: string;
  dateTo?: string;
  noise: boolean;
  out?: string;
  stow?: string;
  dryRun?: boolean;
  token?: string;
  batch: number | 'study';
  concurrency: number;
  progress: boolean;
}

/** `synth`: generates a synthetic data set and writes it to a folder or stores it with STOW-RS. */
export function register(program: Command): void {
  program
    .description(
      'generate synthetic CT/MR/CR studies (deterministic for a seed) into a folder or via STOW-RS',
    )
    .option('--patients <n>', 'number of patients', positiveInt, 1)
    .option('--studies-per-patient <n>', 'studies per patient', positiveInt, 1)
    .option('--series-per-study <n>', 'series per study', positiveInt, 1)
    .option('--instances-per-series <n>', 'instances per series', positiveInt, 1)
    .addOption(
      new Option('--modalities <list>', 'modalities to draw series from')
        .argParser(modalityList)
        .default([...SYNTH_MODALITIES], SYNTH_MODALITIES.join(',')),
    )
    .option('--rows <n>', 'image rows (default 64 for CT/MR, 128 for CR)', positiveInt)
    .option('--cols <n>', 'image columns (default: same as rows)', positiveInt)
    .option('--seed <seed>', 'seed: the same seed gives the same objects', '1')
    .option('--date-from <date>', 'earliest study date, YYYY-MM-DD')
    .option('--date-to <date>', 'latest study date, YYYY-MM-DD')
    .option('--no-noise', 'noise-free pixel data')
    .addOption(
      new Option('--out <dir>', 'write <dir>/<study>/<series>/<sop>.dcm').conflicts(['stow', 'dryRun']),
    )
    .addOption(
      new Option(
        '--stow <url>',
        'DICOMweb root to STOW to, e.g. http://localhost:8080/projects/demo/dicom-web',
      ),
    )
    .addOption(new Option('--dry-run', 'generate and discard (measures the generator)').conflicts('stow'))
    .addOption(new Option('--token <token>', 'bearer token for --stow').env('APERTURE_TOKEN'))
    .option('--batch <n|study>', 'instances per STOW request, or "study"', batchSize, 'study' as const)
    .option('--concurrency <n>', 'STOW requests in flight', positiveInt, 4)
    .option('--no-progress', 'no progress bar')
    .action(async (opts: SynthCliOptions, cmd: Command) => {
      if (!opts.out && !opts.stow && !opts.dryRun) {
        cmd.error('choose where the objects go: --out <dir>, --stow <url> or --dry-run');
      }
      await runSynth(opts);
    });
}

async function runSynth(opts: SynthCliOptions): Promise<void> {
  const synthOpts: SynthOptions = {
    patients: opts.patients,
    studiesPerPatient: opts.studiesPerPatient,
    seriesPerStudy: opts.seriesPerStudy,
    instancesPerSeries: opts.instancesPerSeries,
    modalities: opts.modalities,
    rows: opts.rows,
    cols: opts.cols,
    seed: opts.seed,
    dateFrom: opts.dateFrom,
    dateTo: opts.dateTo,
    noise: opts.noise,
  };
  const total = countSynthInstances(synthOpts);
  const bar =
    opts.progress && process.stderr.isTTY
      ? new SingleBar({
          stream: process.stderr,
          format: 'synth [{bar}] {value}/{total} instances | {eta}s left',
        })
      : null;
  bar?.start(total, 0);

  const started = performance.now();
  const counts = { instances: 0, bytes: 0, studies: 0, series: 0 };
  // The generator is lazy and yields studies and series contiguously, so counting changes of UID on the way
  // through keeps memory flat however large the run.
  const counted = (function* () {
    let study = '';
    let series = '';
    for (const inst of generateInstances(synthOpts)) {
      counts.instances++;
      counts.bytes += inst.buffer.length;
      if (inst.studyInstanceUid !== study) counts.studies++;
      if (inst.seriesInstanceUid !== series) counts.series++;
      study = inst.studyInstanceUid;
      series = inst.seriesInstanceUid;
      yield inst;
    }
  })();

  const stowFailures: StowRequestResult[] = [];
  let failedRequests = 0;
  let stowLine = '';
  try {
    if (opts.stow) {
      const summary = await stowInstances(counted, {
        baseUrl: opts.stow,
        token: opts.token,
        batch: opts.batch,
        concurrency: opts.concurrency,
        keepResults: false,
        onResult: (r) => {
          bar?.increment(r.instances);
          if (r.status === 200 || r.status === 202) return;
          failedRequests++;
          if (stowFailures.length < 5) stowFailures.push(r);
        },
      });
      const statuses = Object.entries(summary.statuses)
        .map(([status, n]) => `${status === '0' ? 'no response' : status} x${n}`)
        .join(', ');
      stowLine = `stow: ${summary.requests} requests (${statuses}); ${summary.partial} partial, ${summary.failed} failed`;
    } else if (opts.out) {
      let lastDir = '';
      for (const inst of counted) {
        const dir = join(opts.out, inst.studyInstanceUid, inst.seriesInstanceUid);
        if (dir !== lastDir) {
          await mkdir(dir, { recursive: true });
          lastDir = dir;
        }
        await writeFile(join(dir, `${inst.sopInstanceUid}.dcm`), inst.buffer);
        bar?.increment();
      }
    } else {
      for (const _ of counted) bar?.increment();
    }
  } finally {
    bar?.stop();
  }

  const seconds = (performance.now() - started) / 1000;
  console.log(
    `synth: ${counts.instances} instances, ${counts.series} series, ${counts.studies} studies, ` +
      `${opts.patients} patients; ${(counts.bytes / 1e6).toFixed(1)} MB in ${seconds.toFixed(1)} s ` +
      `(${Math.round(counts.instances / seconds)} instances/s)` +
      (opts.out ? ` -> ${opts.out}` : opts.stow ? ` -> ${redacted(opts.stow)}` : ' (dry run)'),
  );
  if (stowLine) console.log(stowLine);
  if (failedRequests) {
    for (const f of stowFailures) {
      const detail = f.error ?? (f.body ? JSON.stringify(f.body).slice(0, 300) : '');
      console.error(`  request ${f.index}: ${f.status || 'no response'} ${detail}`);
    }
    if (failedRequests > stowFailures.length)
      console.error(`  ... and ${failedRequests - stowFailures.length} more`);
    process.exitCode = 1;
  }
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) {
    throw new InvalidArgumentError('expected a positive integer');
  }
  return n;
}

function batchSize(value: string): number | 'study' {
  return value === 'study' ? 'study' : positiveInt(value);
}

function modalityList(value: string): SynthModality[] {
  const list = value
    .split(',')
    .map((m) => m.trim().toUpperCase())
    .filter(Boolean);
  const unknown = list.filter((m) => !SYNTH_MODALITIES.includes(m as SynthModality));
  if (list.length === 0 || unknown.length) {
    throw new InvalidArgumentError(`expected a comma-separated list of ${SYNTH_MODALITIES.join(', ')}`);
  }
  return list as SynthModality[];
}

/** The URL without credentials, fit to print. */
function redacted(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.href;
  } catch {
    return '(invalid URL)';
  }
}

// Tooling, not product: run with `npm run synth -- ...` (it lives outside src/ so the production build leaves it out).
if (require.main === module) {
  const program = new Command('synth');
  register(program);
  program.parseAsync(process.argv).catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
