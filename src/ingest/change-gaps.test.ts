import { ChangeGaps } from './change-gaps';

describe('ChangeGaps', () => {
  let t = 0;
  const now = () => t;
  beforeEach(() => {
    t = 1000;
  });

  it('records the numbers skipped between observations, once', () => {
    const g = new ChangeGaps(500, 100, now);
    g.reset(10);
    for (const s of [11, 12, 15, 16, 20]) g.observe(s);
    expect(g.open.map((r) => [r.from, r.to])).toEqual([
      [13, 14],
      [17, 19],
    ]);
    // A re-read of the same page and numbers below the highest seen change nothing.
    for (const s of [12, 15, 16, 20, 13]) g.observe(s);
    expect(g.size).toBe(5);
    expect(g.lowest).toBe(13);
  });

  it('treats the numbers after the starting cursor as possible holes', () => {
    const g = new ChangeGaps(500, 100, now);
    g.reset(100);
    g.observe(103);
    expect(g.open.map((r) => [r.from, r.to])).toEqual([[101, 102]]);
  });

  it('splits a hole when a late change fills one of its numbers', () => {
    const g = new ChangeGaps(500, 100, now);
    g.reset(0);
    g.observe(1);
    g.observe(6); // hole 2..5
    expect(g.has(3)).toBe(true);
    g.fill(3);
    expect(g.has(3)).toBe(false);
    expect(g.open.map((r) => [r.from, r.to])).toEqual([
      [2, 2],
      [4, 5],
    ]);
    g.fill(2);
    g.fill(5);
    g.fill(4);
    expect(g.size).toBe(0);
    expect(g.lowest).toBeUndefined();
    g.fill(99); // not a hole: nothing happens
    expect(g.size).toBe(0);
  });

  it('gives up on holes older than the wait, oldest first, and counts them', () => {
    const g = new ChangeGaps(500, 100, now);
    g.reset(0);
    g.observe(3); // 1..2 at t=1000
    t = 1400;
    g.observe(10); // 4..9 at t=1400
    t = 1600;
    expect(g.expire()).toBe(2);
    expect(g.lowest).toBe(4);
    t = 2000;
    expect(g.expire()).toBe(6);
    expect(g.lowest).toBeUndefined();
    expect(g.expiredCount).toBe(8);
  });

  it('keeps at most maxRanges holes, forgetting the oldest', () => {
    const g = new ChangeGaps(500, 3, now);
    g.reset(0);
    for (const s of [2, 4, 6, 8, 10]) g.observe(s);
    expect(g.open.map((r) => r.from)).toEqual([5, 7, 9]);
    expect(g.expiredCount).toBe(2);
  });

  it('reset forgets everything below the new start', () => {
    const g = new ChangeGaps(500, 100, now);
    g.reset(0);
    g.observe(5);
    g.reset(50);
    expect(g.size).toBe(0);
    g.observe(50);
    g.observe(51);
    expect(g.size).toBe(0);
  });
});
