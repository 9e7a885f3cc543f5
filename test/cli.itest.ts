import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { resetStack } from './helpers/gateway';

/*
 * The command line runs inside the common lifecycle (initServices / closeServices): each command opens the index,
 * does its work and closes everything again, so the process ends by itself, on success and on failure alike.
 */
const ROOT = join(__dirname, '..');

function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'src/cli/index.ts'), ...args],
      // A command that left a pool or a client open would never exit: the timeout turns that into a failure.
      { cwd: ROOT, env: { ...process.env, LOG_LEVEL: 'info' }, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe('aperture command line', () => {
  beforeAll(async () => resetStack());

  it('creates a project, lists it as JSON on a clean stdout, and exits by itself', async () => {
    const created = await cli('projects', 'create', 'cli-made', 'Made by the CLI');
    expect(created).toMatchObject({ code: 0, stdout: 'created project cli-made\n' });
    const listed = await cli('projects', 'list', '--json');
    expect(listed.code).toBe(0);
    const rows = JSON.parse(listed.stdout) as Array<{ id: string; name: string }>;
    expect(rows).toEqual(
      expect.arrayContaining([expect.objectContaining({ id: 'cli-made', name: 'Made by the CLI' })]),
    );
  });

  it('reports an up-to-date database once migrations ran', async () => {
    expect(await cli('migrate')).toMatchObject({ code: 0, stdout: 'database is up to date\n' });
  });

  it('fails a bad command with exit code 1 and a message, still closing what it opened', async () => {
    const bad = await cli('projects', 'create', 'Not_An_Id', 'x');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('project id: lowercase letters, digits and dashes');
  });

  it("lists a project's routing rules (none yet) as JSON", async () => {
    const routing = await cli('routing', 'list', '--project', 'cli-made', '--json');
    expect(routing.code).toBe(0);
    expect(JSON.parse(routing.stdout)).toEqual([]);
  });
});
