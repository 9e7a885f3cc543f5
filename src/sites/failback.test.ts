import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { conninfoOf, failback } from './failback';

describe('failback', () => {
  it("writes primary_conninfo in libpq's quoting, application_name included", () => {
    expect(conninfoOf('postgres://aperture:p%27w@10.0.0.2:5433/aperture', 'site1')).toBe(
      "host='10.0.0.2' port='5433' user='aperture' password='p\\'w' application_name='site1'",
    );
    expect(conninfoOf('postgres://db.site2/x', 'site1')).toBe(
      "host='db.site2' port='5432' user='postgres' application_name='site1'",
    );
  });

  it('refuses while a postmaster still runs on the folder', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'failback-unit-'));
    try {
      // This very process stands in for a live postmaster.
      writeFileSync(join(dir, 'postmaster.pid'), `${process.pid}\n${dir}\n`);
      await expect(
        failback({ pgData: dir, newPrimaryUrl: 'postgres://127.0.0.1:1/x', name: 'site1' }),
      ).rejects.toThrow(/still running/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
