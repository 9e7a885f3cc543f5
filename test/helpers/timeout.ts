// Integration tests talk to real services on a shared 2-core machine: give each test two minutes.
// (A per-project `testTimeout` in jest.config.js is not applied by jest, hence this setup file.)
jest.setTimeout(120_000);
