/** Percentile (nearest rank) of a list of numbers; NaN for an empty list. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

/** p50/p95/p99/mean of latencies in milliseconds. */
export function summarise(ms: readonly number[]): {
  n: number;
  p50: number;
  p95: number;
  p99: number;
  mean: number;
} {
  const mean = ms.reduce((a, b) => a + b, 0) / (ms.length || 1);
  return {
    n: ms.length,
    p50: round(percentile(ms, 50)),
    p95: round(percentile(ms, 95)),
    p99: round(percentile(ms, 99)),
    mean: round(mean),
  };
}

/** Rounds to 2 decimals (3 below 1) for reports. */
export function round(x: number): number {
  if (!Number.isFinite(x)) return x;
  return Math.abs(x) < 1 ? Math.round(x * 1000) / 1000 : Math.round(x * 100) / 100;
}

/** Milliseconds since a process.hrtime.bigint() mark. */
export function msSince(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e6;
}

/** Runs `task` `total` times with at most `concurrency` at once; returns each call's latency in ms. */
export async function timedPool(
  total: number,
  concurrency: number,
  task: (i: number) => Promise<void>,
): Promise<number[]> {
  const latencies: number[] = new Array(total);
  let next = 0;
  const workers = Array.from({ length: Math.min(concurrency, total) }, async () => {
    for (let i = next++; i < total; i = next++) {
      const t = process.hrtime.bigint();
      await task(i);
      latencies[i] = msSince(t);
    }
  });
  await Promise.all(workers);
  return latencies;
}
