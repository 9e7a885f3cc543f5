import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { conformanceStatement } from './conformance-statement';
import { DICOMWEB_ROUTES } from './routes';

describe('the conformance statement', () => {
  it('is what the code generates (run `npm run conformance` after changing routes or transfer syntaxes)', () => {
    const committed = readFileSync(join(__dirname, '..', '..', 'docs', 'conformance-statement.md'), 'utf8');
    expect(committed).toBe(conformanceStatement());
  });

  it('names every transaction of the route table', () => {
    const text = conformanceStatement();
    for (const r of DICOMWEB_ROUTES) expect(text).toContain(`| ${r.id} | ${r.method} |`);
  });
});
