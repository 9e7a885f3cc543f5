import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRunCgroup, detectCgroup } from './cgroups';
import { sandboxArgv } from './sandbox';
import { runLimits } from './runner';
import type { BoutiquesDescriptor } from './descriptor';

/**
 * The cgroup plumbing against a folder laid out like a delegated cgroup v2 (the files the kernel shows). This host
 * has no writable cgroup v2 with memory and cpu controllers, so the kernel's enforcement itself is not exercised
 * here; what is checked is what the worker detects, writes and reads.
 */
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
    expect(await detectCgroup(dir)).toEqual({ available: true, dir });
    expect(readFileSync(join(dir, 'cgroup.subtree_control'), 'utf8')).toBe('+memory +cpu +pids');
  });

  it("writes a run's memory.max, swap, cpu.max and pids.max, and reads an OOM kill from memory.events", async () => {
    const cg = await createRunCgroup(dir, 'r1', { memoryBytes: 256 * 1024 ** 2, cpuCores: 1.5, pids: 4096 });
    const run = join(dir, 'run-r1');
    const read = (f: string) => readFileSync(join(run, f), 'utf8');
    expect([read('memory.max'), read('memory.swap.max'), read('cpu.max'), read('pids.max')]).toEqual([
      String(256 * 1024 ** 2),
      '0',
      '150000 100000',
      '4096',
    ]);
    expect(cg.procsFile).toBe(join(run, 'cgroup.procs'));
    writeFileSync(join(run, 'memory.events'), 'low 0\nhigh 0\nmax 12\noom 1\noom_kill 0\n');
    expect(await cg.oomKilled()).toBe(false);
    writeFileSync(join(run, 'memory.events'), 'low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n');
    expect(await cg.oomKilled()).toBe(true);
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
    const inCg = sandboxArgv({ ...base, cgroupProcs: join(dir, 'run-x/cgroup.procs') });
    expect(inCg.slice(0, 5)).toEqual([
      '/bin/sh',
      '-c',
      'echo $$ > "$0" && exec "$@"',
      join(dir, 'run-x/cgroup.procs'),
      'prlimit',
    ]);
    expect(inCg.some((a) => a.startsWith('--as='))).toBe(false);
  });

  it('the wrapper really writes its own pid before it execs the command', () => {
    mkdirSync(join(dir, 'run-y'));
    const procs = join(dir, 'run-y/cgroup.procs');
    const pid = execFileSync(
      '/bin/sh',
      ['-c', 'echo $$ > "$0" && exec "$@"', procs, '/bin/sh', '-c', 'echo $$'],
      {
        encoding: 'utf8',
      },
    ).trim();
    expect(readFileSync(procs, 'utf8').trim()).toBe(pid);
    expect(existsSync(procs)).toBe(true);
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
