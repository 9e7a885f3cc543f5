import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createRunCgroup,
  detectCgroup,
  detectCgroups,
  detectCgroupV1,
  ownV1Cgroups,
  sweepV1Leftovers,
} from './cgroups';
import { sandboxArgv } from './sandbox';
import { runLimits } from './runner';
import type { BoutiquesDescriptor } from './descriptor';

/**
 * The cgroup plumbing against folders laid out like cgroupfs (the files the kernel shows): what the worker detects,
 * writes and reads. The kernel's enforcement is exercised by test/pipelines-limits.itest.ts on a real hierarchy.
 */
const WRAPPER = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"';

describe('cgroup v2 limits of pipeline runs', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'cg-'));
    writeFileSync(join(dir, 'cgroup.controllers'), 'cpuset cpu io memory pids\n');
    writeFileSync(join(dir, 'cgroup.subtree_control'), '');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('is unavailable, with the reason, when no folder is configured or it lacks a controller', async () => {
    const none = await detectCgroup(undefined);
    expect(none).toEqual({
      available: false,
      reason: expect.stringMatching(/^PIPELINE_CGROUP_DIR is not set \(/),
    });
    writeFileSync(join(dir, 'cgroup.controllers'), 'cpu pids\n');
    expect(await detectCgroup(dir)).toEqual({
      available: false,
      reason: `${dir} does not offer the memory controller`,
    });
    expect(await detectCgroup(join(dir, 'absent'))).toEqual({
      available: false,
      reason: `${join(dir, 'absent')} is not a cgroup v2 folder`,
    });
  });

  it('enables memory, cpu and pids for the run cgroups of a delegated folder', async () => {
    expect(await detectCgroup(dir)).toEqual({ available: true, version: 2, dir });
    expect(readFileSync(join(dir, 'cgroup.subtree_control'), 'utf8')).toBe('+memory +cpu +pids');
  });

  it("writes a run's memory.max, swap, cpu.max and pids.max, and reads an OOM kill from memory.events", async () => {
    const cg = await createRunCgroup({ available: true, version: 2, dir }, 'r1', {
      memoryBytes: 256 * 1024 ** 2,
      cpuCores: 1.5,
      pids: 4096,
    });
    const run = join(dir, 'run-r1');
    const read = (f: string) => readFileSync(join(run, f), 'utf8');
    expect([read('memory.max'), read('memory.swap.max'), read('cpu.max'), read('pids.max')]).toEqual([
      String(256 * 1024 ** 2),
      '0',
      '150000 100000',
      '4096',
    ]);
    expect(cg.procsFiles).toEqual([join(run, 'cgroup.procs')]);
    expect(cg.memoryFile).toBe('memory.max');
    writeFileSync(join(run, 'memory.events'), 'low 0\nhigh 0\nmax 12\noom 1\noom_kill 0\n');
    expect(await cg.oomKilled()).toBe(false);
    writeFileSync(join(run, 'memory.events'), 'low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n');
    expect(await cg.oomKilled()).toBe(true);
    expect(await cg.pidsLimited()).toBe(false);
    writeFileSync(join(run, 'pids.events'), 'max 3\n');
    expect(await cg.pidsLimited()).toBe(true);
  });

  it('starts the sandbox inside the run cgroup and leaves memory to it (no RLIMIT_AS)', () => {
    const base = {
      command: 'true',
      inDir: '/i',
      outDir: '/o',
      limits: { cpuS: 5, memoryBytes: 1e8, fileBytes: 1e6 },
    };
    const plain = sandboxArgv(base);
    expect(plain[0]).toBe('prlimit');
    expect(plain).toContain('--as=100000000');
    const inCg = sandboxArgv({ ...base, cgroupProcs: ['/m/cgroup.procs', '/p/cgroup.procs'] });
    expect(inCg.slice(0, 8)).toEqual([
      '/bin/sh',
      '-c',
      WRAPPER,
      'aperture-cgroup',
      '/m/cgroup.procs',
      '/p/cgroup.procs',
      '--',
      'prlimit',
    ]);
    expect(inCg.some((a) => a.startsWith('--as='))).toBe(false);
  });

  it('the wrapper really writes its own pid into every procs file before it execs the command', () => {
    mkdirSync(join(dir, 'run-y'));
    mkdirSync(join(dir, 'run-z'));
    const procs = [join(dir, 'run-y/cgroup.procs'), join(dir, 'run-z/cgroup.procs')];
    const pid = execFileSync(
      '/bin/sh',
      ['-c', WRAPPER, 'aperture-cgroup', ...procs, '--', '/bin/sh', '-c', 'echo $$'],
      { encoding: 'utf8' },
    ).trim();
    for (const f of procs) expect(readFileSync(f, 'utf8').trim()).toBe(pid);
    // A procs file it cannot write stops it before the command runs (exit 125).
    expect(() =>
      execFileSync('/bin/sh', ['-c', WRAPPER, 'x', join(dir, 'absent/cgroup.procs'), '--', 'true'], {
        stdio: 'ignore',
      }),
    ).toThrow(expect.objectContaining({ status: 125 }));
  });

  it("lowers the site's limits to a descriptor's suggested resources, never raises them", () => {
    const d = (res?: Record<string, number>) =>
      ({ 'suggested-resources': res }) as unknown as BoutiquesDescriptor;
    const config = { PIPELINE_MEMORY_BYTES: 4 * 1024 ** 3, PIPELINE_CPU_CORES: 2 };
    expect(runLimits(config, d())).toEqual({ memoryBytes: 4 * 1024 ** 3, cpuCores: 2 });
    expect(runLimits(config, d({ ram: 0.25, 'cpu-cores': 1 }))).toEqual({
      memoryBytes: 256 * 1024 ** 2,
      cpuCores: 1,
    });
    expect(runLimits(config, d({ ram: 64, 'cpu-cores': 16 }))).toEqual({
      memoryBytes: 4 * 1024 ** 3,
      cpuCores: 2,
    });
  });
});

/** A v1 host: one mount per controller, the worker's memory cgroup nested (like a container's), pids and cpu at /. */
const MOUNTINFO = (root: string) =>
  [
    `31 23 0:28 / ${root} rw,relatime - tmpfs tmpfs rw,mode=755`,
    `32 31 0:29 / ${root}/cpu rw,relatime - cgroup cgroup rw,cpu`,
    `33 31 0:30 / ${root}/cpuacct rw,relatime - cgroup cgroup rw,cpuacct`,
    `35 31 0:32 / ${root}/memory rw,relatime - cgroup cgroup rw,memory`,
    `39 31 0:36 / ${root}/pids rw,relatime - cgroup cgroup rw,pids`,
    `41 31 0:38 / ${root}/unified rw,relatime - cgroup2 cgroup2 rw`,
  ].join('\n');
const PROC_CGROUP = '8:pids:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n';

describe('cgroup v1 limits of pipeline runs', () => {
  let root: string;
  const fakeCgroup = (d: string, files: string[]) => {
    mkdirSync(d, { recursive: true });
    for (const f of ['cgroup.procs', ...files]) writeFileSync(join(d, f), '');
  };
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'cg1-'));
    fakeCgroup(join(root, 'memory/process_api/abc'), ['memory.limit_in_bytes']);
    fakeCgroup(join(root, 'pids'), ['pids.max']);
    fakeCgroup(join(root, 'cpu'), ['cpu.cfs_quota_us']);
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  // cgroupfs makes a new cgroup's files itself; a plain folder needs them written in for the test.
  const seed = (pid: number) => {
    fakeCgroup(join(root, 'memory/process_api/abc/aperture-runs', `worker-${pid}`), [
      'memory.limit_in_bytes',
    ]);
    fakeCgroup(join(root, 'pids/aperture-runs', `worker-${pid}`), ['pids.max']);
    fakeCgroup(join(root, 'cpu/aperture-runs', `worker-${pid}`), ['cpu.cfs_quota_us']);
  };

  it("finds the worker's own cgroup in each v1 hierarchy from /proc/self/cgroup and mountinfo", () => {
    const own = ownV1Cgroups(PROC_CGROUP, MOUNTINFO('/sys/fs/cgroup'));
    expect(Object.fromEntries(own)).toEqual({
      pids: '/sys/fs/cgroup/pids',
      memory: '/sys/fs/cgroup/memory/process_api/abc',
      cpuacct: '/sys/fs/cgroup/cpuacct',
      cpu: '/sys/fs/cgroup/cpu',
    });
    // A container's mount of a sub-tree shows paths relative to its root.
    const sub = ownV1Cgroups(
      '4:memory:/kubepods/pod1/c1\n',
      '35 31 0:32 /kubepods/pod1/c1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory',
    );
    expect(sub.get('memory')).toBe('/sys/fs/cgroup/memory');
    expect(ownV1Cgroups('0::/\n', MOUNTINFO('/x')).size).toBe(0);
  });

  it('makes the worker folder in each hierarchy, v2 first when configured, else v1, else the reasons', async () => {
    seed(4242);
    const proc = { cgroup: PROC_CGROUP, mountinfo: MOUNTINFO(root) };
    const v1 = await detectCgroupV1(proc, 4242);
    expect(v1).toEqual({
      available: true,
      version: 1,
      dirs: {
        memory: join(root, 'memory/process_api/abc/aperture-runs/worker-4242'),
        pids: join(root, 'pids/aperture-runs/worker-4242'),
        cpu: join(root, 'cpu/aperture-runs/worker-4242'),
      },
    });
    // A folder that is not cgroupfs (no controller files appear) is refused.
    const notCg = await detectCgroupV1(proc, 4343);
    expect(notCg).toEqual({
      available: false,
      reason: expect.stringMatching(
        /^cgroup v1 memory: .*worker-4343 is not a cgroup \(no memory\.limit_in_bytes\)$/,
      ),
    });
    expect(await detectCgroups({ PIPELINE_CGROUP: 'off' }, proc)).toEqual({
      available: false,
      reason: 'PIPELINE_CGROUP=off',
    });
    const none = await detectCgroups({ PIPELINE_CGROUP: 'auto' }, { cgroup: '0::/\n', mountinfo: '' });
    expect(none).toEqual({
      available: false,
      reason: expect.stringMatching(
        /^PIPELINE_CGROUP_DIR is not set .*; no cgroup v1 memory hierarchy is mounted$/,
      ),
    });
  });

  it("writes a run's memory, swap, pids and cpu limits, reads the OOM kill and refused forks, and removes it", async () => {
    seed(process.pid);
    const support = await detectCgroupV1({ cgroup: PROC_CGROUP, mountinfo: MOUNTINFO(root) });
    if (!support.available || support.version !== 1) throw new Error(JSON.stringify(support));
    const { dirs } = support;
    // cgroupfs would show these in the new run cgroup; here they are planted where mkdir will find its folder.
    const cg = await createRunCgroup(support, 'r1', { memoryBytes: 64 * 1024 ** 2, cpuCores: 0.5, pids: 64 });
    const read = (d: string, f: string) => readFileSync(join(d, 'run-r1', f), 'utf8');
    expect([
      read(dirs.memory, 'memory.limit_in_bytes'),
      read(dirs.memory, 'memory.memsw.limit_in_bytes'),
      read(dirs.pids!, 'pids.max'),
      read(dirs.cpu!, 'cpu.cfs_period_us'),
      read(dirs.cpu!, 'cpu.cfs_quota_us'),
    ]).toEqual([String(64 * 1024 ** 2), String(64 * 1024 ** 2), '64', '100000', '50000']);
    expect(cg.procsFiles).toEqual([
      join(dirs.memory, 'run-r1/cgroup.procs'),
      join(dirs.pids!, 'run-r1/cgroup.procs'),
      join(dirs.cpu!, 'run-r1/cgroup.procs'),
    ]);
    expect(cg.memoryFile).toBe('memory.limit_in_bytes');
    const memFile = (f: string, t: string) => writeFileSync(join(dirs.memory, 'run-r1', f), t);
    memFile('memory.oom_control', 'oom_kill_disable 0\nunder_oom 0\noom_kill 0\n');
    memFile('memory.failcnt', '7\n'); // a charge that failed and was reclaimed is no kill
    expect(await cg.oomKilled()).toBe(false);
    memFile('memory.oom_control', 'oom_kill_disable 0\nunder_oom 0\noom_kill 1\n');
    expect(await cg.oomKilled()).toBe(true);
    memFile('memory.oom_control', 'oom_kill_disable 0\nunder_oom 0\n'); // before Linux 4.13
    expect(await cg.oomKilled()).toBe(true);
    expect(await cg.pidsLimited()).toBe(false);
    writeFileSync(join(dirs.pids!, 'run-r1/pids.events'), 'max 12\n');
    expect(await cg.pidsLimited()).toBe(true);
    // rmdir of a plain folder holding files fails where cgroupfs would succeed: emptied first here.
    for (const d of Object.values(dirs))
      for (const f of readdirSync(join(d, 'run-r1'))) rmSync(join(d, 'run-r1', f));
    await cg.remove();
    for (const d of Object.values(dirs)) expect(existsSync(join(d, 'run-r1'))).toBe(false);
  });

  it('removes the folders of workers that are gone at start, and only theirs', async () => {
    seed(process.pid);
    const gone = 2 ** 22 + 17; // above pid_max: no such process
    for (const h of ['memory/process_api/abc', 'pids', 'cpu']) {
      mkdirSync(join(root, h, 'aperture-runs', `worker-${gone}`, 'run-old'), { recursive: true });
      mkdirSync(join(root, h, 'aperture-runs', `worker-${process.ppid}`), { recursive: true });
    }
    const support = await detectCgroupV1({ cgroup: PROC_CGROUP, mountinfo: MOUNTINFO(root) });
    if (!support.available || support.version !== 1) throw new Error(JSON.stringify(support));
    // Detection (a worker's start) has swept them already; a later sweep finds nothing more.
    expect(await sweepV1Leftovers(support.dirs)).toEqual([]);
    for (const h of ['memory/process_api/abc', 'pids', 'cpu'])
      expect(existsSync(join(root, h, 'aperture-runs', `worker-${gone}`))).toBe(false);
    for (const h of ['memory/process_api/abc', 'pids', 'cpu']) {
      expect(existsSync(join(root, h, 'aperture-runs', `worker-${process.ppid}`))).toBe(true);
      expect(existsSync(join(root, h, 'aperture-runs', `worker-${process.pid}`))).toBe(true);
    }
  });
});
