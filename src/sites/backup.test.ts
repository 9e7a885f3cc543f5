import { backupName, backupsToKeep } from './backup';

const at = (iso: string) => ({ name: backupName(new Date(iso)), createdAt: new Date(iso).toISOString() });

describe('backup retention', () => {
  it('keeps the newest backup of each of the last N days and of each of the last N ISO weeks', () => {
    const backups = [
      at('2026-11-02T03:00:00Z'), // Monday, week of 11-02
      at('2026-11-08T03:00:00Z'), // Sunday, same week: the newest of that week
      at('2026-11-15T03:00:00Z'), // Sunday, week of 11-09
      at('2026-11-29T01:00:00Z'), // Sunday, week of 11-23
      at('2026-11-30T01:00:00Z'), // Monday
      at('2026-12-01T01:00:00Z'),
      at('2026-12-01T13:00:00Z'), // two the same day: the later one counts for the day
    ];
    const kept = backupsToKeep(backups, { daily: 3, weekly: 3 });
    expect([...kept].sort()).toEqual(
      ['2026-11-15T030000Z', '2026-11-29T010000Z', '2026-11-30T010000Z', '2026-12-01T130000Z'].sort(),
    );
  });

  it('always keeps the newest backup, even with a policy of zero', () => {
    expect([
      ...backupsToKeep([at('2026-12-01T01:00:00Z'), at('2026-12-01T02:00:00Z')], { daily: 0, weekly: 0 }),
    ]).toEqual(['2026-12-01T020000Z']);
  });
});
