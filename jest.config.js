/**
 * Two tiers: pure unit tests next to the code, integration tests in test/ against a real stack.
 * ts-jest only transpiles (isolatedModules); type checking is `tsc --noEmit`, run first by `npm test`.
 */
const tsJest = ['ts-jest', { tsconfig: 'tsconfig.jest.json' }];
// jose 6 and oidc-provider 9 ship ES modules only; Node 20 loads them through require(esm), jest's runtime cannot,
// so jest compiles them.
const esmToCjs = [
  'ts-jest',
  {
    tsconfig: { allowJs: true, isolatedModules: true, module: 'commonjs', target: 'ES2022' },
    diagnostics: false,
  },
];
const transform = { '^.+\\.ts$': tsJest, '/node_modules/(jose|oidc-provider)/.+\\.js$': esmToCjs };
const transformIgnorePatterns = ['/node_modules/(?!jose/|oidc-provider/)'];
module.exports = {
  projects: [
    {
      displayName: 'unit',
      testEnvironment: 'node',
      roots: ['<rootDir>/src', '<rootDir>/tools'],
      testMatch: ['**/*.test.ts'],
      transform,
      transformIgnorePatterns,
    },
    {
      displayName: 'integration',
      testEnvironment: 'node',
      roots: ['<rootDir>/test'],
      testMatch: ['**/*.itest.ts'],
      transform,
      transformIgnorePatterns,
      globalSetup: '<rootDir>/test/helpers/global-setup.ts',
      globalTeardown: '<rootDir>/test/helpers/global-teardown.ts',
      setupFiles: ['<rootDir>/test/helpers/worker-stack.ts'],
      setupFilesAfterEnv: ['<rootDir>/test/helpers/timeout.ts'],
    },
  ],
};
