#!/usr/bin/env node
import { Command } from 'commander';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

/**
 * `aperture` command line: every module in ./commands exports `register(program)`, so adding a command
 * means adding a file. Run with `npm run cli -- <command> ...`.
 */
async function main(): Promise<void> {
  const program = new Command('aperture').description('Aperture DICOMweb gateway: administration and tools');
  const dir = join(__dirname, 'commands');
  const files = readdirSync(dir)
    .filter((f) => /\.(ts|js)$/.test(f) && !/\.(test|d)\.(ts|js)$/.test(f))
    .sort();
  for (const file of files) {
    const mod = (await import(join(dir, file))) as { register?: (p: Command) => void };
    mod.register?.(program);
  }
  await program.parseAsync(process.argv);
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
