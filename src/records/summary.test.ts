import { kaplanMeier, kmByGroup, kmSvg, summariseFields } from './summary';

describe('Kaplan–Meier estimator', () => {
  // Textbook example (Kleinbaum & Klein, remission times of the 6-MP group, weeks; + = censored):
  // 6,6,6,7,10,13,16,22,23 events and 6+,9+,10+,11+,17+,19+,20+,25+,32+,32+,34+,35+ censored.
  const events = [6, 6, 6, 7, 10, 13, 16, 22, 23];
  const censored = [6, 9, 10, 11, 17, 19, 20, 25, 32, 32, 34, 35];
  const obs = [
    ...events.map((t) => ({ time: t, event: true })),
    ...censored.map((t) => ({ time: t, event: false })),
  ];

  it('gives the published survival estimates at each event time', () => {
    const curve = kaplanMeier(obs);
    const at = (t: number) => curve.steps.find((s) => s.time === t)!;
    expect(curve.n).toBe(21);
    expect(curve.events).toBe(9);
    expect(at(6)).toMatchObject({ atRisk: 21, events: 3, censored: 1 });
    expect(at(6).survival).toBeCloseTo(0.8571, 4);
    expect(at(7).survival).toBeCloseTo(0.8067, 4);
    expect(at(10).survival).toBeCloseTo(0.7529, 4);
    expect(at(13).survival).toBeCloseTo(0.6902, 4);
    expect(at(16).survival).toBeCloseTo(0.6275, 4);
    expect(at(22).survival).toBeCloseTo(0.5378, 4);
    expect(at(23).survival).toBeCloseTo(0.4482, 4);
    // Greenwood SE at t = 6: S * sqrt(3 / (21 * 18)).
    expect(at(6).se).toBeCloseTo(0.8571 * Math.sqrt(3 / (21 * 18)), 3);
    expect(curve.median).toBe(23);
  });

  it('splits by a grouping field and draws one path per group', () => {
    const rows = [
      ...obs.map((o) => ({ t: o.time, dead: o.event, arm: '6-MP' })),
      { t: 1, dead: true, arm: 'placebo' },
      { t: 2, dead: true, arm: 'placebo' },
      { t: 'x', dead: true, arm: 'placebo' },
    ];
    const curves = kmByGroup(rows, 't', 'dead', 'arm');
    expect(curves.map((c) => [c.group, c.n])).toEqual([
      ['6-MP', 21],
      ['placebo', 2],
    ]);
    expect(curves[1].steps.at(-1)!.survival).toBe(0);
    const svg = kmSvg(curves, { title: 'remission <weeks>', timeLabel: 'weeks' });
    expect(svg.match(/<path /g)).toHaveLength(2);
    expect(svg).toContain('remission &#60;weeks&#62;');
  });
});

describe('field summaries', () => {
  it('counts codes (zeros included), describes numbers, and never shows free text', () => {
    const s = summariseFields(
      {
        fields: [
          { name: 'stage', kind: 'code', codes: ['T1', 'T2', 'T3'], required: true },
          { name: 'dose', kind: 'number', unit: 'Gy', required: false },
          { name: 'notes', kind: 'text', required: false },
        ],
      },
      [
        { stage: 'T1', dose: 60, notes: 'Mr Smith' },
        { stage: 'T1', dose: 70 },
        { stage: 'T3', dose: 50 },
      ],
    );
    expect(s[0].counts).toEqual({ T1: 2, T2: 0, T3: 1 });
    expect(s[1]).toMatchObject({ n: 3, min: 50, max: 70, mean: 60, median: 60, sd: 10, unit: 'Gy' });
    expect(JSON.stringify(s[2])).not.toContain('Smith');
    expect(s[2]).toMatchObject({ n: 1, missing: 2 });
  });
});
