/** Writes docs/conformance-statement.md from the code (`npm run conformance`). */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { conformanceStatement } from '../src/dicomweb/conformance-statement';

const target = join(__dirname, '..', 'docs', 'conformance-statement.md');
writeFileSync(target, conformanceStatement());
console.log(`wrote ${target}`);
