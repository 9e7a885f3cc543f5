/**
 * Points this jest worker at its own test stack (global-setup.ts started one per worker): settings of stack number
 * JEST_WORKER_ID. Runs before each test file's modules are loaded, so every loadConfig() sees them.
 */
const stacks = JSON.parse(process.env.APERTURE_TEST_STACKS ?? '[]') as Array<Record<string, string>>;
if (stacks.length) {
  const worker = Math.max(1, Number(process.env.JEST_WORKER_ID ?? '1'));
  Object.assign(process.env, stacks[(worker - 1) % stacks.length]);
}
