// Copies non-TypeScript assets (SQL migrations) next to the compiled code.
const { cpSync } = require('node:fs');
const { join } = require('node:path');
cpSync(join(__dirname, '../src/index-db/migrations'), join(__dirname, '../dist/index-db/migrations'), {
  recursive: true,
});
