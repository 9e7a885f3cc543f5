/**
 * Holes in the archive's change log that may still fill.
 *
 * Orthanc numbers changes from a sequence when its transaction inserts them, but they become visible when it
 * commits. With concurrent writers (Orthanc's PostgreSQL index with IndexConnectionsCount > 1, or several Orthancs on
 * one index) a transaction that took number 100 can commit after the one that took 101: a reader that saw 101 and
 * moved on would never see 100. Holes are also permanent: a rolled-back or retried transaction burns its number, and a
 * deleted resource's changes vanish with it. So a hole is remembered and re-read for a while (`waitMs`); what appears
 * in it is handled like any change; what is still missing after that is taken for burnt and forgotten.
 */

/** An inclusive range of missing sequence numbers and when it was first seen. */
export interface ChangeGap {
  from: number;
  to: number;
  seenAt: number;
}

export class ChangeGaps {
  private ranges: ChangeGap[] = [];
  /** Highest sequence number observed: only numbers below a later observation can be a hole. */
  private observedTo = 0;
  /** Missing numbers given up on since the start (for logs and metrics). */
  expiredCount = 0;

  constructor(
    private readonly waitMs: number,
    /** Bound on remembered ranges: the oldest are forgotten first. */
    private readonly maxRanges = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Starts over from `seq` (a new leadership, a restarted log): nothing below it is a hole. */
  reset(seq: number): void {
    this.ranges = [];
    this.observedTo = seq;
  }

  /**
   * Records that `seq` is visible. Everything between the highest number seen before and `seq` is a hole. Seeing a
   * number again, or one inside a hole (a late commit: see fill), changes nothing here.
   */
  observe(seq: number): void {
    if (seq <= this.observedTo) return;
    if (seq > this.observedTo + 1) {
      this.ranges.push({ from: this.observedTo + 1, to: seq - 1, seenAt: this.now() });
      if (this.ranges.length > this.maxRanges) {
        const dropped = this.ranges.shift()!;
        this.expiredCount += dropped.to - dropped.from + 1;
      }
    }
    this.observedTo = seq;
  }

  /** Whether `seq` lies in a hole. */
  has(seq: number): boolean {
    return this.ranges.some((r) => seq >= r.from && seq <= r.to);
  }

  /** `seq` appeared (its change was handled): it is no longer missing. */
  fill(seq: number): void {
    const i = this.ranges.findIndex((r) => seq >= r.from && seq <= r.to);
    if (i < 0) return;
    const r = this.ranges[i];
    const parts: ChangeGap[] = [];
    if (r.from < seq) parts.push({ from: r.from, to: seq - 1, seenAt: r.seenAt });
    if (seq < r.to) parts.push({ from: seq + 1, to: r.to, seenAt: r.seenAt });
    this.ranges.splice(i, 1, ...parts);
  }

  /** Forgets the holes older than `waitMs`; returns how many numbers were given up on. */
  expire(): number {
    const limit = this.now() - this.waitMs;
    let n = 0;
    this.ranges = this.ranges.filter((r) => {
      if (r.seenAt > limit) return true;
      n += r.to - r.from + 1;
      return false;
    });
    this.expiredCount += n;
    return n;
  }

  /** The lowest missing number, if any: the stored cursor must stay below it. */
  get lowest(): number | undefined {
    return this.ranges[0]?.from;
  }

  /** The open holes, lowest first (ranges are recorded in increasing order and only ever split). */
  get open(): readonly ChangeGap[] {
    return this.ranges;
  }

  /** Missing numbers remembered now. */
  get size(): number {
    return this.ranges.reduce((n, r) => n + r.to - r.from + 1, 0);
  }
}
