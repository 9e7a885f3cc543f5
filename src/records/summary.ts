/**
 * Cohort summaries of records: counts and distributions per field, and the Kaplan–Meier estimator of a
 * time-to-event field by a grouping field, as data and as an SVG (PNG through sharp). The estimator is the
 * product-limit one: S(t) = Π_{t_i ≤ t} (1 − d_i / n_i) over distinct event times t_i, with d_i events and n_i
 * subjects at risk just before t_i; censored observations at t_i count as at risk at t_i (the usual convention).
 * Greenwood's formula gives the variance; the median is the first time S(t) ≤ 0.5.
 */
import type { FieldDef, RecordType } from './schema';

export interface FieldSummary {
  field: string;
  kind: FieldDef['kind'];
  unit?: string;
  n: number;
  missing: number;
  min?: number | string;
  max?: number | string;
  mean?: number;
  median?: number;
  sd?: number;
  histogram?: Array<{ from: number; to: number; count: number }>;
  counts?: Record<string, number>;
}

/** Counts and distributions of every field over rows of one type. Free text gives counts only, never values. */
export function summariseFields(
  type: Pick<RecordType, 'fields'>,
  rows: Array<Record<string, unknown>>,
): FieldSummary[] {
  return type.fields.map((f) => {
    const values = rows.map((r) => r[f.name]).filter((v) => v !== undefined && v !== null && v !== '');
    const s: FieldSummary = {
      field: f.name,
      kind: f.kind,
      unit: f.unit,
      n: values.length,
      missing: rows.length - values.length,
    };
    if (f.kind === 'number') {
      const xs = values.filter((v): v is number => typeof v === 'number').sort((a, b) => a - b);
      if (xs.length) {
        const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
        s.min = xs[0];
        s.max = xs[xs.length - 1];
        s.mean = round(mean);
        s.median = round(quantile(xs, 0.5));
        s.sd =
          xs.length > 1 ? round(Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (xs.length - 1))) : 0;
        s.histogram = histogram(xs, 10);
      }
    } else if (f.kind === 'code' || f.kind === 'boolean') {
      const counts: Record<string, number> = {};
      for (const c of f.codes ?? []) counts[c] = 0;
      for (const v of values) counts[String(v)] = (counts[String(v)] ?? 0) + 1;
      s.counts = counts;
    } else if (f.kind === 'date') {
      const ds = values.map(String).sort();
      if (ds.length) {
        s.min = ds[0];
        s.max = ds[ds.length - 1];
      }
    }
    return s;
  });
}

function quantile(sorted: number[], q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

function histogram(sorted: number[], bins: number): Array<{ from: number; to: number; count: number }> {
  const min = sorted[0];
  const max = sorted[sorted.length - 1];
  if (min === max) return [{ from: min, to: max, count: sorted.length }];
  const width = (max - min) / bins;
  const out = Array.from({ length: bins }, (_, i) => ({
    from: round(min + i * width),
    to: round(i === bins - 1 ? max : min + (i + 1) * width),
    count: 0,
  }));
  for (const x of sorted) out[Math.min(Math.floor((x - min) / width), bins - 1)].count++;
  return out;
}

function round(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

/** One step of a Kaplan–Meier curve. */
export interface KmStep {
  time: number;
  atRisk: number;
  events: number;
  censored: number;
  survival: number;
  /** Greenwood standard error of survival. */
  se: number;
}

export interface KmCurve {
  group: string;
  n: number;
  events: number;
  median: number | null;
  steps: KmStep[];
}

/** The product-limit estimator over (time, event) observations; negative or missing times are left out. */
export function kaplanMeier(obs: Array<{ time: number; event: boolean }>, group = 'all'): KmCurve {
  const xs = obs.filter((o) => Number.isFinite(o.time) && o.time >= 0).sort((a, b) => a.time - b.time);
  let atRisk = xs.length;
  let s = 1;
  let greenwood = 0;
  const steps: KmStep[] = [];
  let median: number | null = null;
  for (let i = 0; i < xs.length;) {
    const t = xs[i].time;
    let d = 0;
    let c = 0;
    while (i < xs.length && xs[i].time === t) {
      if (xs[i].event) d++;
      else c++;
      i++;
    }
    if (d > 0) {
      s *= 1 - d / atRisk;
      if (atRisk > d) greenwood += d / (atRisk * (atRisk - d));
    }
    steps.push({
      time: t,
      atRisk,
      events: d,
      censored: c,
      survival: round(s),
      se: round(s * Math.sqrt(greenwood)),
    });
    if (median === null && s <= 0.5 && d > 0) median = t;
    atRisk -= d + c;
  }
  return { group, n: xs.length, events: xs.filter((o) => o.event).length, median, steps };
}

/** Curves per value of a grouping field (or one curve); rows missing time or event are left out. */
export function kmByGroup(
  rows: Array<Record<string, unknown>>,
  time: string,
  event: string,
  group?: string,
): KmCurve[] {
  const groups = new Map<string, Array<{ time: number; event: boolean }>>();
  for (const r of rows) {
    const t = r[time];
    const e = r[event];
    if (typeof t !== 'number' || typeof e !== 'boolean') continue;
    const g = group ? String(r[group] ?? '(missing)') : 'all';
    let list = groups.get(g);
    if (!list) groups.set(g, (list = []));
    list.push({ time: t, event: e });
  }
  return [...groups.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([g, obs]) => kaplanMeier(obs, g));
}

const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

/** The curves as a self-contained SVG: step functions, censoring ticks, axes, legend with n and median. */
export function kmSvg(curves: KmCurve[], opts: { title: string; timeLabel: string }): string {
  const W = 640;
  const H = 420;
  const L = 60;
  const R = 170;
  const T = 40;
  const B = 50;
  const maxT = Math.max(1, ...curves.flatMap((c) => c.steps.map((s) => s.time)));
  const x = (t: number) => L + (t / maxT) * (W - L - R);
  const y = (s: number) => T + (1 - s) * (H - T - B);
  const esc = (s: string) => s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${W / 2 - R / 2}" y="22" text-anchor="middle" font-size="14">${esc(opts.title)}</text>`,
    `<line x1="${L}" y1="${y(0)}" x2="${W - R}" y2="${y(0)}" stroke="#000"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${y(0)}" stroke="#000"/>`,
  ];
  for (let k = 0; k <= 5; k++) {
    const s = k / 5;
    parts.push(`<text x="${L - 6}" y="${y(s) + 4}" text-anchor="end">${s.toFixed(1)}</text>`);
    const t = (maxT * k) / 5;
    parts.push(`<text x="${x(t)}" y="${y(0) + 16}" text-anchor="middle">${round(t)}</text>`);
  }
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 10}" text-anchor="middle">${esc(opts.timeLabel)}</text>`);
  parts.push(
    `<text transform="translate(16 ${(T + y(0)) / 2}) rotate(-90)" text-anchor="middle">survival probability</text>`,
  );
  curves.forEach((c, i) => {
    const colour = COLOURS[i % COLOURS.length];
    let d = `M${x(0)},${y(1)}`;
    let s = 1;
    for (const st of c.steps) {
      d += ` H${x(st.time)}`;
      if (st.survival !== s) d += ` V${y(st.survival)}`;
      s = st.survival;
    }
    const lastT = c.steps.length ? c.steps[c.steps.length - 1].time : 0;
    d += ` H${x(lastT)}`;
    parts.push(`<path d="${d}" fill="none" stroke="${colour}" stroke-width="2"/>`);
    for (const st of c.steps)
      if (st.censored > 0)
        parts.push(
          `<line x1="${x(st.time)}" y1="${y(st.survival) - 4}" x2="${x(st.time)}" y2="${y(st.survival) + 4}" stroke="${colour}"/>`,
        );
    const ly = T + 10 + i * 34;
    parts.push(
      `<line x1="${W - R + 14}" y1="${ly}" x2="${W - R + 34}" y2="${ly}" stroke="${colour}" stroke-width="2"/>`,
    );
    parts.push(`<text x="${W - R + 40}" y="${ly + 4}">${esc(c.group)}</text>`);
    parts.push(
      `<text x="${W - R + 40}" y="${ly + 18}" font-size="10">n=${c.n}, events=${c.events}, median=${c.median ?? 'n/r'}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('\n');
}
