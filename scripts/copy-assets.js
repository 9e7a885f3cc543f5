// Copies non-TypeScript assets (SQL migrations) next to the compiled code.
const { cpSync } = require('node:fs');
const { join } = require('node:path');
cpSync(join(__dirname, '../src/index-db/migrations'), join(__dirname, '../dist/index-db/migrations'), {
  recursive: true,
});
// pipelines (issue 19): the Boutiques descriptor schema read by src/pipelines/descriptor.ts.
cpSync(join(__dirname, '../src/pipelines/schema'), join(__dirname, '../dist/pipelines/schema'), {
  recursive: true,
});
