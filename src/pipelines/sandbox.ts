/**
 * The host sandbox of a tool run: bubblewrap (Debian `bubblewrap`) with every namespace unshared (no network: only
 * a loopback of its own; no view of the host's processes), the host's /usr read-only (with /etc/alternatives and the loader cache), the run's inputs read-only
 * at /data/in, its working folder the only writable place (/data/out, plus a private tmpfs /tmp), no /etc, /home,
 * /root, /work or anything else of the host, all capabilities dropped, an empty environment, and the sandbox dies
 * with the worker (--die-with-parent). Resource limits are rlimits set by util-linux `prlimit`: CPU seconds, file
 * size, open files, and address space (memory) unless the run has a cgroup (src/pipelines/cgroups.ts), whose
 * memory limit bounds resident memory instead: the sandbox then first writes its pid into the run cgroup's
 * cgroup.procs (each hierarchy's, on cgroup v1), so bwrap and the tool start inside it. The wall clock is the worker's timer, which kills the
 * sandbox's process group.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Where the tools shipped with Aperture (pipelines/bin) appear inside the sandbox. */
export const TOOLS_DIR = '/opt/aperture/pipelines';

/** Limits of one run. */
export interface SandboxLimits {
  timeoutMs: number;
  cpuS: number;
  memoryBytes: number;
  fileBytes: number;
  logMaxBytes: number;
}

/** What a sandboxed run did. */
export interface SandboxResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  cancelled: boolean;
  stdout: Buffer;
  stderr: Buffer;
  /** True when a log was cut at logMaxBytes. */
  truncated: boolean;
}

/** Keeps the first `max` bytes of a stream (the start of a log says what went wrong first). */
class BoundedLog {
  private chunks: Buffer[] = [];
  private size = 0;
  truncated = false;
  constructor(private readonly max: number) {}
  push(chunk: Buffer): void {
    const room = this.max - this.size;
    if (room <= 0) {
      this.truncated = true;
      return;
    }
    const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
    if (part.length < chunk.length) this.truncated = true;
    this.chunks.push(part);
    this.size += part.length;
  }
  value(): Buffer {
    const b = Buffer.concat(this.chunks);
    return this.truncated
      ? Buffer.concat([b, Buffer.from('\n[aperture: log cut at the configured limit]\n')])
      : b;
  }
}

/** The argv of a sandboxed shell command (exported for the unit test and the benchmark). */
export function sandboxArgv(opts: {
  command: string;
  inDir: string;
  outDir: string;
  toolsDir?: string;
  env?: Record<string, string>;
  limits: Pick<SandboxLimits, 'cpuS' | 'memoryBytes' | 'fileBytes'>;
  /** cgroup.procs of the run's cgroup(s) (one per v1 hierarchy): memory is then the cgroup's, not RLIMIT_AS. */
  cgroupProcs?: string[];
}): string[] {
  const { limits } = opts;
  const cgroup = (opts.cgroupProcs?.length ?? 0) > 0;
  const argv = [
    ...(cgroup
      ? [
          '/bin/sh',
          '-c',
          // Into every hierarchy's run cgroup (v1 has one per controller) before anything of the tool starts.
          'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"',
          'aperture-cgroup',
          ...opts.cgroupProcs!,
          '--',
        ]
      : []),
    'prlimit',
    ...(cgroup ? [] : [`--as=${limits.memoryBytes}`]),
    `--cpu=${limits.cpuS}`,
    `--fsize=${limits.fileBytes}`,
    '--nofile=1024',
    '--core=0',
    '--',
    'bwrap',
    '--unshare-all',
    '--die-with-parent',
    '--new-session',
    '--cap-drop',
    'ALL',
    '--uid',
    '65534',
    '--gid',
    '65534',
    '--hostname',
    'aperture-run',
    '--clearenv',
    '--setenv',
    'PATH',
    '/usr/local/bin:/usr/bin:/bin',
    '--setenv',
    'HOME',
    '/data/out',
    '--setenv',
    'TMPDIR',
    '/tmp',
    '--setenv',
    'LANG',
    'C.UTF-8',
  ];
  for (const [k, v] of Object.entries(opts.env ?? {})) argv.push('--setenv', k, v);
  argv.push(
    '--ro-bind',
    '/usr',
    '/usr',
    '--symlink',
    'usr/bin',
    '/bin',
    '--symlink',
    'usr/lib',
    '/lib',
    '--symlink',
    'usr/lib64',
    '/lib64',
    '--symlink',
    'usr/sbin',
    '/sbin',
    // Library symlinks (BLAS for numpy) and the loader cache; nothing else of /etc (no passwd, hosts, secrets).
    '--ro-bind-try',
    '/etc/alternatives',
    '/etc/alternatives',
    '--ro-bind-try',
    '/etc/ld.so.cache',
    '/etc/ld.so.cache',
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    '--tmpfs',
    '/tmp',
    '--ro-bind',
    opts.inDir,
    '/data/in',
    '--bind',
    opts.outDir,
    '/data/out',
  );
  if (opts.toolsDir) argv.push('--ro-bind', opts.toolsDir, TOOLS_DIR);
  argv.push('--chdir', '/data/out', '--', '/bin/sh', '-c', opts.command);
  return argv;
}

/**
 * Runs a shell command in the sandbox; resolves when it has exited (never rejects for the tool's own failure).
 * `shouldCancel` is polled every second; a true answer kills the sandbox like the timeout does.
 */
export function runSandboxed(opts: {
  command: string;
  inDir: string;
  outDir: string;
  toolsDir?: string;
  env?: Record<string, string>;
  limits: SandboxLimits;
  cgroupProcs?: string[];
  shouldCancel?: () => Promise<boolean>;
}): Promise<SandboxResult> {
  const [file, ...args] = sandboxArgv(opts);
  const stdout = new BoundedLog(opts.limits.logMaxBytes);
  const stderr = new BoundedLog(opts.limits.logMaxBytes);
  return new Promise((resolve, reject) => {
    // Its own process group, so that the timer kills the tool and everything it started.
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: {} });
    let timedOut = false;
    let cancelled = false;
    const kill = () => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
      // What left the process group (bwrap's new session, a daemonised child) is still in the run's cgroup: kill it
      // there too, so that a cancel or a timeout ends the tool now, not when it chooses to exit.
      for (const file of opts.cgroupProcs ?? []) {
        let pids: string[];
        try {
          pids = readFileSync(file, 'utf8').split('\n').filter(Boolean);
        } catch {
          continue; // the cgroup is gone already
        }
        for (const pid of pids)
          try {
            process.kill(Number(pid), 'SIGKILL');
          } catch {
            // exited meanwhile
          }
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, opts.limits.timeoutMs);
    let polling = false;
    const poll = opts.shouldCancel
      ? setInterval(() => {
          if (polling) return;
          polling = true;
          opts.shouldCancel!()
            .then((yes) => {
              if (yes) {
                cancelled = true;
                kill();
              }
            })
            .catch(() => undefined)
            .finally(() => (polling = false));
        }, 1000)
      : undefined;
    child.stdout.on('data', (c: Buffer) => stdout.push(c));
    child.stderr.on('data', (c: Buffer) => stderr.push(c));
    child.once('error', (err) => {
      clearTimeout(timer);
      if (poll) clearInterval(poll);
      reject(err);
    });
    child.once('close', (exitCode, signal) => {
      clearTimeout(timer);
      if (poll) clearInterval(poll);
      resolve({
        exitCode,
        signal,
        timedOut,
        cancelled,
        stdout: stdout.value(),
        stderr: stderr.value(),
        truncated: stdout.truncated || stderr.truncated,
      });
    });
  });
}
