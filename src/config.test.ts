import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { configSchema, loadConfig } from './config';

describe('configuration', () => {
  it('documents every setting in the README configuration table', () => {
    const readme = readFileSync(join(__dirname, '../README.md'), 'utf8');
    const table = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('## Limits'));
    const missing = Object.keys(configSchema.shape).filter((key) => !table.includes(`\`${key}\``));
    expect(missing).toEqual([]);
  });

  it('lists every invalid setting at once', () => {
    expect(() => loadConfig({ PORT: 'eighty', AUTH_ENABLED: 'maybe', ORTHANC_URL: 'not a url' })).toThrow(
      /PORT[\s\S]*ORTHANC_URL[\s\S]*AUTH_ENABLED|PORT[\s\S]*AUTH_ENABLED[\s\S]*ORTHANC_URL/,
    );
  });

  it('falls back to defaults for unset and empty variables', () => {
    const c = loadConfig({ QIDO_MAX_LIMIT: '' });
    expect(c.QIDO_MAX_LIMIT).toBe(1000);
    expect(c.QIDO_DEFAULT_LIMIT).toBe(100);
  });
});
