/**
 * Kernel limits of a tool run: each run gets a child cgroup with a memory limit (resident memory, swap off), a CPU
 * quota and a process limit; the sandbox moves itself into it before it execs bwrap, and afterwards the kernel's
 * counters tell whether its OOM killer ended the tool or forks were refused. Two kinds of host:
 *
 * - **cgroup v2**, when the host gives the worker a delegated cgroup (PIPELINE_CGROUP_DIR): what systemd gives a unit
 *   with `Delegate=yes`, or a container runtime a container whose cgroup namespace is private and writable: a folder
 *   of cgroupfs whose cgroup.controllers offers memory and cpu, writable by the worker, holding no process itself (the
 *   worker lives in a sibling leaf), so that its subtree_control can enable them for the run cgroups. Files:
 *   memory.max, memory.swap.max, cpu.max, pids.max; memory.events (oom_kill), pids.events (max).
 * - **cgroup v1**, when the worker's own cgroups in the v1 memory (and pids, cpu) hierarchies are writable (a root
 *   worker on a v1 host, or a container given them read-write): the run cgroup is
 *   `<own cgroup>/aperture-runs/worker-<pid>/run-<id>` in each hierarchy. Files: memory.limit_in_bytes and
 *   memory.memsw.limit_in_bytes (when swap accounting is on), pids.max, cpu.cfs_quota_us / cpu.cfs_period_us;
 *   memory.oom_control (oom_kill) or memory.failcnt, pids.events (max). v1 has no cgroup.kill: what is left is
 *   killed pid by pid from cgroup.procs. A worker killed outright leaves its `worker-<pid>` folders behind; the next
 *   worker to make a run cgroup removes those whose worker is gone (their tools died with it: --die-with-parent).
 *
 * Without either, the runner falls back to rlimits (prlimit: address space, CPU seconds), which bound virtual memory,
 * not resident memory, cannot bound processes of a root worker, and cannot tell an OOM kill from another failure.
 */
import { access, mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { constants } from 'node:fs';
import { join } from 'node:path';

/** The cgroup v1 folders of this worker's run cgroups, one per hierarchy (memory required; pids, cpu if mounted). */
export interface V1Dirs {
  memory: string;
  pids?: string;
  cpu?: string;
}

/** Whether run cgroups can be made, and if not why (said in the worker's log and the run's limits). */
export type CgroupSupport =
  | { available: true; version: 2; dir: string }
  | { available: true; version: 1; dirs: V1Dirs }
  | { available: false; reason: string };

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

/** Checks a delegated cgroup v2 folder and enables memory, cpu (and pids, when offered) for its children. */
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
  return { available: true, version: 2, dir };
}

/**
 * Where this process's cgroup lies in each mounted cgroup v1 hierarchy (controller → folder), from the text of
 * /proc/self/cgroup and /proc/self/mountinfo (passed in by the unit test).
 */
export function ownV1Cgroups(procCgroup: string, mountinfo: string): Map<string, string> {
  const mounts = new Map<string, { root: string; point: string }>();
  for (const line of mountinfo.split('\n')) {
    // id parent major:minor root mountpoint options [optional fields] - fstype source superoptions
    const [pre, post] = line.split(' - ');
    if (!post) continue;
    const [fstype, , superOpts = ''] = post.split(' ');
    if (fstype !== 'cgroup') continue;
    const f = pre.split(' ');
    const unescape = (s: string) =>
      s.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    for (const opt of superOpts.split(','))
      if (!mounts.has(opt)) mounts.set(opt, { root: unescape(f[3]), point: unescape(f[4]) });
  }
  const out = new Map<string, string>();
  for (const line of procCgroup.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m || !m[1]) continue; // "0::/" is the v2 hierarchy
    for (const controller of m[1].split(',')) {
      const mount = mounts.get(controller);
      if (!mount) continue;
      // A mount of a sub-tree (a container's) shows the path relative to its root.
      const path = m[2].startsWith(mount.root) ? m[2].slice(mount.root.length) : m[2];
      out.set(controller, join(mount.point, path));
    }
  }
  return out;
}

/**
 * Finds the worker's own cgroup v1 memory, pids and cpu folders and makes its `aperture-runs/worker-<pid>` folder in
 * each; memory is required (it is the limit that matters most), pids and cpu are used when mounted and writable.
 */
export async function detectCgroupV1(
  proc: { cgroup: string; mountinfo: string } | undefined = undefined,
  pid = process.pid,
): Promise<CgroupSupport> {
  const text = proc ?? {
    cgroup: await readFile('/proc/self/cgroup', 'utf8').catch(() => ''),
    mountinfo: await readFile('/proc/self/mountinfo', 'utf8').catch(() => ''),
  };
  const own = ownV1Cgroups(text.cgroup, text.mountinfo);
  const memory = own.get('memory');
  if (!memory) return { available: false, reason: 'no cgroup v1 memory hierarchy is mounted' };
  const make = async (base: string, probe: string): Promise<string> => {
    const dir = join(base, 'aperture-runs', `worker-${pid}`);
    try {
      await mkdir(dir, { recursive: true });
    } catch (err) {
      throw new Error(`cannot make ${dir}: ${(err as NodeJS.ErrnoException).code ?? err}`, { cause: err });
    }
    // A plain folder (not cgroupfs) would take the mkdir but show no controller files.
    if (
      !(await access(join(dir, probe)).then(
        () => true,
        () => false,
      ))
    )
      throw new Error(`${dir} is not a cgroup (no ${probe})`);
    return dir;
  };
  const dirs: V1Dirs = { memory: '' };
  try {
    dirs.memory = await make(memory, 'memory.limit_in_bytes');
  } catch (err) {
    return { available: false, reason: `cgroup v1 memory: ${(err as Error).message}` };
  }
  for (const [c, probe] of [
    ['pids', 'pids.max'],
    ['cpu', 'cpu.cfs_quota_us'],
  ] as const) {
    const base = own.get(c);
    if (base) dirs[c] = await make(base, probe).catch(() => undefined);
  }
  await sweepV1Leftovers(dirs); // what workers killed outright left, at start
  return { available: true, version: 1, dirs };
}

/** Detects what the configuration asks for: v2 (PIPELINE_CGROUP_DIR) first, else v1, else nothing, with reasons. */
export async function detectCgroups(
  config: { PIPELINE_CGROUP?: 'auto' | 'v2' | 'v1' | 'off'; PIPELINE_CGROUP_DIR?: string },
  proc?: { cgroup: string; mountinfo: string },
): Promise<CgroupSupport> {
  const mode = config.PIPELINE_CGROUP ?? 'auto';
  if (mode === 'off') return { available: false, reason: 'PIPELINE_CGROUP=off' };
  const reasons: string[] = [];
  if (mode !== 'v1') {
    const v2 = await detectCgroup(config.PIPELINE_CGROUP_DIR);
    if (v2.available || mode === 'v2') return v2;
    reasons.push(v2.reason);
  }
  const v1 = await detectCgroupV1(proc);
  if (v1.available) return v1;
  reasons.push(v1.reason);
  return { available: false, reason: reasons.join('; ') };
}

/** The cgroup of one run, made before the sandbox starts and removed after it has exited. */
export interface RunCgroup {
  /** The files the sandbox writes its own pid to before it execs bwrap (one per v1 hierarchy). */
  procsFiles: string[];
  /** Which file holds the memory limit, for the run's failure reason. */
  memoryFile: 'memory.max' | 'memory.limit_in_bytes';
  /** True when the kernel's OOM killer killed a process of the run. */
  oomKilled(): Promise<boolean>;
  /** True when the kernel refused a fork of the run at pids.max (pids.events max > 0). */
  pidsLimited(): Promise<boolean>;
  /** Kills what is left and removes the cgroup. */
  remove(): Promise<void>;
}

const counter = async (file: string, key: string): Promise<number> => {
  const text = await readFile(file, 'utf8').catch(() => '');
  const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Kills every process of a v1 cgroup (it has no cgroup.kill) and removes it; retries while the kernel reaps. */
async function killAndRemoveV1(dir: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const procs = await readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
    for (const pid of procs.split('\n').filter(Boolean))
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // exited meanwhile
      }
    try {
      await rmdir(dir);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      await sleep(20);
    }
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** Removes the `worker-<pid>` folders (and their run cgroups) of workers that are gone. */
export async function sweepV1Leftovers(dirs: V1Dirs): Promise<string[]> {
  const removed: string[] = [];
  for (const own of Object.values(dirs).filter(Boolean) as string[]) {
    const parent = join(own, '..');
    const entries = await readdir(parent).catch(() => [] as string[]);
    for (const name of entries) {
      const m = /^worker-(\d+)$/.exec(name);
      const worker = join(parent, name);
      if (!m || worker === own || alive(Number(m[1]))) continue;
      for (const run of await readdir(worker, { withFileTypes: true }).catch(() => []))
        if (run.isDirectory() && run.name.startsWith('run-')) await killAndRemoveV1(join(worker, run.name));
      await rmdir(worker).then(
        () => removed.push(worker),
        () => undefined,
      );
    }
  }
  return removed;
}

/** The limits of a run cgroup. */
export interface CgroupLimits {
  memoryBytes: number;
  cpuCores: number;
  pids: number;
}

/** Creates the run's cgroup with its limits (v2: `<dir>/run-<id>`; v1: `run-<id>` in each hierarchy's folder). */
export async function createRunCgroup(
  support: Extract<CgroupSupport, { available: true }>,
  runId: string,
  limits: CgroupLimits,
): Promise<RunCgroup> {
  return support.version === 2
    ? createRunCgroupV2(support.dir, runId, limits)
    : createRunCgroupV1(support.dirs, runId, limits);
}

const PERIOD_US = 100_000;
const quota = (cores: number) => Math.max(1000, Math.round(cores * PERIOD_US));

async function createRunCgroupV2(dir: string, runId: string, limits: CgroupLimits): Promise<RunCgroup> {
  const cg = join(dir, `run-${runId}`);
  await removeV2(cg); // an earlier attempt's, on this host
  await mkdir(cg);
  await writeFile(join(cg, 'memory.max'), String(limits.memoryBytes));
  // Swap would let a tool exceed memory.max by paging; absent when swap accounting is off.
  await writeFile(join(cg, 'memory.swap.max'), '0').catch(() => undefined);
  await writeFile(join(cg, 'cpu.max'), `${quota(limits.cpuCores)} ${PERIOD_US}`);
  await writeFile(join(cg, 'pids.max'), String(limits.pids)).catch(() => undefined);
  return {
    procsFiles: [join(cg, 'cgroup.procs')],
    memoryFile: 'memory.max',
    oomKilled: async () => (await counter(join(cg, 'memory.events'), 'oom_kill')) > 0,
    pidsLimited: async () => (await counter(join(cg, 'pids.events'), 'max')) > 0,
    remove: () => removeV2(cg),
  };
}

async function removeV2(cg: string): Promise<void> {
  await writeFile(join(cg, 'cgroup.kill'), '1').catch(() => undefined);
  // A cgroup can be removed once its last process has gone; that takes the kernel a moment after a kill.
  for (let i = 0; i < 50; i++) {
    try {
      await rmdir(cg);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      await sleep(20);
    }
  }
}

async function createRunCgroupV1(dirs: V1Dirs, runId: string, limits: CgroupLimits): Promise<RunCgroup> {
  await sweepV1Leftovers(dirs);
  const name = `run-${runId}`;
  const mem = join(dirs.memory, name);
  const pids = dirs.pids && join(dirs.pids, name);
  const cpu = dirs.cpu && join(dirs.cpu, name);
  const all = [mem, pids, cpu].filter(Boolean) as string[];
  const remove = async () => {
    for (const d of all) await killAndRemoveV1(d);
  };
  await remove(); // an earlier attempt's in this process
  try {
    for (const d of all) await mkdir(d);
    await writeFile(join(mem, 'memory.limit_in_bytes'), String(limits.memoryBytes));
    // memory + swap = memory: no swapping past the limit (only present with swap accounting).
    await writeFile(join(mem, 'memory.memsw.limit_in_bytes'), String(limits.memoryBytes)).catch(
      () => undefined,
    );
    if (pids) await writeFile(join(pids, 'pids.max'), String(limits.pids));
    if (cpu) {
      await writeFile(join(cpu, 'cpu.cfs_period_us'), String(PERIOD_US));
      await writeFile(join(cpu, 'cpu.cfs_quota_us'), String(quota(limits.cpuCores)));
    }
  } catch (err) {
    await remove();
    throw err;
  }
  return {
    procsFiles: all.map((d) => join(d, 'cgroup.procs')),
    memoryFile: 'memory.limit_in_bytes',
    async oomKilled() {
      // oom_kill is in memory.oom_control since Linux 4.13; before, a failed charge is the best sign there is.
      const control = await readFile(join(mem, 'memory.oom_control'), 'utf8').catch(() => '');
      if (/^oom_kill \d+$/m.test(control))
        return (await counter(join(mem, 'memory.oom_control'), 'oom_kill')) > 0;
      return Number((await readFile(join(mem, 'memory.failcnt'), 'utf8').catch(() => '0')).trim()) > 0;
    },
    pidsLimited: async () => (pids ? (await counter(join(pids, 'pids.events'), 'max')) > 0 : false),
    remove,
  };
}
