/**
 * Profiling aid for the render suite (not a suite: writes no report): stores the render suite's objects on a fresh
 * bench stack, then runs uncached thumbnail clients against the gateway and against Orthanc's /rendered on the same
 * instances, and prints for each the rate and the CPU time per request of every process involved (gateway, Orthanc,
 * PostgreSQL and its backends, this client), read from /proc. `BENCH_RENDER_GATEWAY_NODE_ARGS` (e.g.
 * `--cpu-prof --cpu-prof-dir=/tmp/prof`) reaches the gateway process and, through piscina's execArgv, its codec threads.
 *
 *   BENCH_STACK_DIR=... BENCH_PG_PORT=... npx tsx bench/profile-render.ts [seconds] [clients]
 */
import { readdirSync, readFileSync } from 'node:fs';
import {
  benchStackDown,
  benchStackUp,
  cpuMsOf,
  cpuMsOfTree,
  orthancAuth,
  stackPid,
  startGatewayProcess,
} from './lib/stack';
import { renderObjects } from './suites/render';

const SECONDS = Number(process.argv[2] ?? 15);
const CLIENTS = Number(process.argv[3] ?? 8);
const NODE_ARGS = (process.env.BENCH_RENDER_GATEWAY_NODE_ARGS ?? '').split(' ').filter(Boolean);
const ONLY = process.env.BENCH_PROFILE_ONLY; // a label substring: profile only that object

/** CPU ms of each thread of a process, summed by thread name (main loop, libuv pool, codec threads, libvips). */
function threadCpu(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const key = Number(t) === pid ? 'main' : name;
      out.set(key, (out.get(key) ?? 0) + (Number(f[11]) + Number(f[12])) * 10);
    } catch {
      /* gone */
    }
  }
  return out;
}

async function main(): Promise<void> {
  const stack = benchStackUp({ fresh: true });
  const orthancPid = stackPid('orthanc/orthanc.pid');
  const pgPid = stackPid('pg/postmaster.pid');
  const gw = await startGatewayProcess(
    stack,
    Number(process.env.BENCH_RENDER_PORT ?? 18085),
    { AUTH_ENABLED: 'false', INDEXER_ENABLED: 'false' },
    NODE_ARGS,
  );
  try {
    const objects = await renderObjects(stack, gw.url);
    const auth = { authorization: orthancAuth(stack) };
    const pgCpu = () => cpuMsOfTree(pgPid);
    const measure = async (urls: string[], headers: Record<string, string>) => {
      for (const u of urls.slice(0, 4)) await (await fetch(u, { headers })).arrayBuffer();
      const before = {
        gw: cpuMsOf(gw.pid),
        orthanc: cpuMsOf(orthancPid),
        pg: pgCpu(),
        me: process.cpuUsage(),
        threads: threadCpu(gw.pid),
      };
      const t0 = performance.now();
      let n = 0;
      let failed = 0;
      const lat: number[] = [];
      await Promise.all(
        Array.from({ length: CLIENTS }, async () => {
          while (performance.now() - t0 < SECONDS * 1000) {
            const t = performance.now();
            const res = await fetch(urls[n++ % urls.length], { headers });
            await res.arrayBuffer();
            if (!res.ok) failed++;
            lat.push(performance.now() - t);
          }
        }),
      );
      const s = (performance.now() - t0) / 1000;
      const me = process.cpuUsage(before.me);
      lat.sort((a, b) => a - b);
      const per = (ms: number) => Math.round((ms / n) * 100) / 100;
      const threads: Record<string, number> = {};
      for (const [k, v] of threadCpu(gw.pid)) {
        const d = per(v - (before.threads.get(k) ?? 0));
        if (d > 0) threads[k] = d;
      }
      return {
        perSecond: Math.round((n / s) * 10) / 10,
        failed,
        p50: Math.round(lat[Math.floor(lat.length / 2)]),
        p95: Math.round(lat[Math.floor(lat.length * 0.95)]),
        cpuMsPerRequest: {
          gateway: per(cpuMsOf(gw.pid) - before.gw),
          orthanc: per(cpuMsOf(orthancPid) - before.orthanc),
          postgres: per(pgCpu() - before.pg),
          client: per((me.user + me.system) / 1000),
        },
        gatewayThreads: threads,
      };
    };
    for (const o of objects) {
      if (ONLY && !o.label.includes(ONLY)) continue;
      const thumbs = o.paths.map((p) => `${p}/thumbnail?viewport=128,128&quality=80`);
      console.log(o.label, 'gateway thumbnails', JSON.stringify(await measure(thumbs, {})));
      if (o.orthancRenders) {
        const ot = o.orthanc.map((u) => `${u}/rendered?width=128&height=128&quality=80`);
        console.log(o.label, 'Orthanc /rendered 128', JSON.stringify(await measure(ot, auth)));
      }
      console.log(
        o.label,
        'gateway /rendered',
        JSON.stringify(
          await measure(
            o.paths.map((p) => `${p}/rendered`),
            {},
          ),
        ),
      );
      if (o.orthancRenders) {
        console.log(
          o.label,
          'Orthanc /rendered',
          JSON.stringify(
            await measure(
              o.orthanc.map((u) => `${u}/rendered`),
              auth,
            ),
          ),
        );
      }
    }
    console.log('load average', readFileSync('/proc/loadavg', 'utf8').trim());
  } finally {
    await gw.stop();
    benchStackDown();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
