/**
 * cgroup v2 limits of a tool run, when the host gives the worker a delegated cgroup (PIPELINE_CGROUP_DIR): each run
 * gets a child cgroup with memory.max (resident memory, swap off), cpu.max (cores) and pids.max, the sandbox is
 * moved into it before it starts, and memory.events tells afterwards whether the kernel's OOM killer ended it.
 * Without one, the runner falls back to rlimits (prlimit: address space, CPU seconds), which bound virtual memory,
 * not resident memory, and cannot tell an OOM kill from another failure.
 *
 * A delegated cgroup is what systemd gives a unit with `Delegate=yes` (or `systemd-run --user --scope -p
 * Delegate=yes`), or a container runtime gives a container whose cgroup namespace is private and writable: a folder
 * of cgroupfs whose cgroup.controllers offers memory and cpu, writable by the worker, holding no process itself (the
 * worker lives in a sibling leaf), so that its subtree_control can enable them for the run cgroups.
 */
import { access, mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { constants } from 'node:fs';
import { join } from 'node:path';

/** Whether run cgroups can be made, and if not why (said in the worker's log and the run's limits). */
export type CgroupSupport = { available: true; dir: string } | { available: false; reason: string };

/** What the host offers, in words: where cgroup v2 is mounted and with which controllers (for logs and docs). */
export async function describeHostCgroups(): Promise<string> {
  for (const mount of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']) {
    const controllers = await readFile(join(mount, 'cgroup.controllers'), 'utf8').catch(() => undefined);
    if (controllers !== undefined)
      return `cgroup v2 at ${mount} offers [${controllers.trim().split(/\s+/).filter(Boolean).join(', ')}]`;
  }
  return 'no cgroup v2 hierarchy is mounted';
}

const NEEDED = ['memory', 'cpu'];

/** Checks a delegated cgroup folder and enables memory, cpu (and pids, when offered) for its children. */
export async function detectCgroup(dir: string | undefined): Promise<CgroupSupport> {
  if (!dir)
    return { available: false, reason: `PIPELINE_CGROUP_DIR is not set (${await describeHostCgroups()})` };
  const controllers = await readFile(join(dir, 'cgroup.controllers'), 'utf8').then(
    (t) => t.trim().split(/\s+/),
    () => undefined,
  );
  if (!controllers) return { available: false, reason: `${dir} is not a cgroup v2 folder` };
  const missing = NEEDED.filter((c) => !controllers.includes(c));
  if (missing.length)
    return { available: false, reason: `${dir} does not offer the ${missing.join(' and ')} controller` };
  try {
    await access(join(dir, 'cgroup.subtree_control'), constants.W_OK);
  } catch {
    return { available: false, reason: `${dir} is not writable by the worker (not delegated)` };
  }
  const wanted = [...NEEDED, ...(controllers.includes('pids') ? ['pids'] : [])];
  const enabled = (await readFile(join(dir, 'cgroup.subtree_control'), 'utf8')).trim().split(/\s+/);
  const toEnable = wanted.filter((c) => !enabled.includes(c));
  if (toEnable.length) {
    try {
      await writeFile(join(dir, 'cgroup.subtree_control'), toEnable.map((c) => `+${c}`).join(' '));
    } catch (err) {
      // EBUSY: the folder holds processes itself (cgroup v2's no-internal-process rule).
      return {
        available: false,
        reason: `cannot enable ${toEnable.join(', ')} under ${dir}: ${(err as NodeJS.ErrnoException).code ?? err}`,
      };
    }
  }
  return { available: true, dir };
}

/** The cgroup of one run, made before the sandbox starts and removed after it has exited. */
export interface RunCgroup {
  /** The file the sandbox writes its own pid to before it execs bwrap. */
  procsFile: string;
  /** True when the kernel's OOM killer killed a process of the run (memory.events oom_kill > 0). */
  oomKilled(): Promise<boolean>;
  /** Kills what is left (cgroup.kill) and removes the cgroup. */
  remove(): Promise<void>;
}

/** Creates `<dir>/run-<id>` with the run's limits. */
export async function createRunCgroup(
  dir: string,
  runId: string,
  limits: { memoryBytes: number; cpuCores: number; pids: number },
): Promise<RunCgroup> {
  const cg = join(dir, `run-${runId}`);
  await mkdir(cg);
  await writeFile(join(cg, 'memory.max'), String(limits.memoryBytes));
  // Swap would let a tool exceed memory.max by paging; absent when swap accounting is off.
  await writeFile(join(cg, 'memory.swap.max'), '0').catch(() => undefined);
  const period = 100_000;
  await writeFile(join(cg, 'cpu.max'), `${Math.max(1000, Math.round(limits.cpuCores * period))} ${period}`);
  await writeFile(join(cg, 'pids.max'), String(limits.pids)).catch(() => undefined);
  return {
    procsFile: join(cg, 'cgroup.procs'),
    async oomKilled() {
      const events = await readFile(join(cg, 'memory.events'), 'utf8').catch(() => '');
      const m = /^oom_kill (\d+)$/m.exec(events);
      return m !== null && Number(m[1]) > 0;
    },
    async remove() {
      await writeFile(join(cg, 'cgroup.kill'), '1').catch(() => undefined);
      // A cgroup can be removed once its last process has gone; that takes the kernel a moment after a kill.
      for (let i = 0; i < 50; i++) {
        try {
          await rmdir(cg);
          return;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    },
  };
}
