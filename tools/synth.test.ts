import dcmjs from 'dcmjs';
import { BadRequestError } from '../src/errors';
import {
  countSynthInstances,
  EXPLICIT_VR_LITTLE_ENDIAN,
  generateInstances,
  groupByStudy,
  SOP_CLASS_UIDS,
  resolveSynthOptions,
  SYNTH_IMPLEMENTATION_CLASS_UID,
  type SynthOptions,
  type SyntheticInstance,
} from './synth';

dcmjs.log.setLevel?.('error');

type Attrs = Record<string, unknown> & { _meta: Record<string, unknown> };

function parse(buffer: Buffer): Attrs {
  const ab = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength) as ArrayBuffer;
  const file = dcmjs.data.DicomMessage.readFile(ab, { ignoreErrors: false });
  const naturalize = dcmjs.data.DicomMetaDictionary.naturalizeDataset;
  return { ...naturalize(file.dict), _meta: naturalize(file.meta) } as Attrs;
}

const numbers = (v: unknown): number[] => (Array.isArray(v) ? v : [v]).map(Number);

describe('synthetic study generator', () => {
  const mixed: SynthOptions = {
    patients: 3,
    studiesPerPatient: 2,
    seriesPerStudy: 2,
    instancesPerSeries: 3,
    modalities: ['CT', 'MR', 'CR'],
    seed: 'unit',
  };

  it('gives byte-identical objects for the same seed and different UIDs for another seed', () => {
    const first = [...generateInstances(mixed)];
    const again = [...generateInstances(mixed)];
    expect(again).toHaveLength(first.length);
    first.forEach((inst, k) => expect(inst.buffer.equals(again[k].buffer)).toBe(true));

    const other = [...generateInstances({ ...mixed, seed: 'another' })];
    const uids = new Set(first.map((i) => i.sopInstanceUid));
    expect(other.some((i) => uids.has(i.sopInstanceUid))).toBe(false);
  });

  it('yields patients x studies x series x instances, each study contiguous', () => {
    const all = [...generateInstances(mixed)];
    expect(all).toHaveLength(3 * 2 * 2 * 3);
    expect(countSynthInstances(mixed)).toBe(all.length);
    expect(new Set(all.map((i) => i.patientId)).size).toBe(3);
    expect(new Set(all.map((i) => i.studyInstanceUid)).size).toBe(6);
    expect(new Set(all.map((i) => i.seriesInstanceUid)).size).toBe(12);

    const studies = [...groupByStudy(all)];
    expect(studies).toHaveLength(6);
    for (const study of studies) {
      expect(study).toHaveLength(2 * 3);
      expect(new Set(study.map((i) => i.patientId)).size).toBe(1);
      expect(new Set(study.map((i) => i.seriesInstanceUid)).size).toBe(2);
    }
  });

  it('writes objects that parse back with the UIDs, modality, SOP class and pixel size it reports', () => {
    const sizes: SynthOptions[] = [mixed, { ...mixed, rows: 48, cols: 80, seed: 'rect' }];
    const seenModalities = new Set<string>();
    for (const opts of sizes) {
      for (const inst of generateInstances(opts)) {
        const ds = parse(inst.buffer);
        seenModalities.add(inst.modality);
        expect(ds._meta.TransferSyntaxUID).toBe(EXPLICIT_VR_LITTLE_ENDIAN);
        expect(ds._meta.MediaStorageSOPClassUID).toBe(inst.sopClassUid);
        expect(ds._meta.MediaStorageSOPInstanceUID).toBe(inst.sopInstanceUid);
        expect(ds._meta.ImplementationClassUID).toBe(SYNTH_IMPLEMENTATION_CLASS_UID);
        expect(ds.SOPClassUID).toBe(SOP_CLASS_UIDS[inst.modality]);
        expect(ds.SOPInstanceUID).toBe(inst.sopInstanceUid);
        expect(ds.SeriesInstanceUID).toBe(inst.seriesInstanceUid);
        expect(ds.StudyInstanceUID).toBe(inst.studyInstanceUid);
        expect(ds.PatientID).toBe(inst.patientId);
        expect(ds.Modality).toBe(inst.modality);
        const defaultSize = inst.modality === 'CR' ? 128 : 64;
        const rows = opts.rows ?? defaultSize;
        const cols = opts.cols ?? defaultSize;
        expect([ds.Rows, ds.Columns]).toEqual([rows, cols]);
        expect([ds.BitsAllocated, ds.PhotometricInterpretation]).toEqual([16, 'MONOCHROME2']);
        const pixelData = ds.PixelData as ArrayBuffer[];
        expect(pixelData[0].byteLength).toBe(rows * cols * 2);
        // A phantom, not a blank frame: plenty of distinct values.
        expect(new Set(new Uint16Array(pixelData[0])).size).toBeGreaterThan(20);
      }
    }
    expect([...seenModalities].sort()).toEqual(['CR', 'CT', 'MR']);
  });

  it('gives every object, series and study its own 2.25 UID', () => {
    const all = [...generateInstances({ patients: 20, seriesPerStudy: 2, instancesPerSeries: 2, seed: 7 })];
    const uids = all.flatMap((i) => [i.sopInstanceUid, i.seriesInstanceUid, i.studyInstanceUid]);
    const distinct = new Set(uids);
    expect(distinct.size).toBe(all.length + all.length / 2 + 20);
    for (const uid of distinct) {
      expect(uid).toMatch(/^2\.25\.(0|[1-9][0-9]*)$/);
      expect(uid.length).toBeLessThanOrEqual(64);
    }
  });

  it('produces the same bytes as writing through dcmjs, non-ASCII names included', () => {
    const opts: SynthOptions = { patients: 40, seed: 'charset' };
    const fast = [...generateInstances(opts)];
    const viaDcmjs = [...generateInstances({ ...opts, encoder: 'dcmjs' })];
    fast.forEach((inst, k) => expect(inst.buffer.equals(viaDcmjs[k].buffer)).toBe(true));
    // The comparison only means something if it covered UTF-8 text.
    expect(fast.some((i) => parse(i.buffer).SpecificCharacterSet === 'ISO_IR 192')).toBe(true);
  });

  it('marks non-ASCII text ISO_IR 192 and keeps most names ASCII', () => {
    const all = [...generateInstances({ patients: 120, modalities: ['CT'], seed: 'names' })].map((i) =>
      parse(i.buffer),
    );
    const nonAscii = all.filter((ds) =>
      /[^\x20-\x7e]/.test(JSON.stringify([ds.PatientName, ds.ReferringPhysicianName, ds.InstitutionName])),
    );
    expect(nonAscii.length).toBeGreaterThan(0);
    expect(nonAscii.length).toBeLessThan(all.length * 0.4);
    for (const ds of nonAscii) expect(ds.SpecificCharacterSet).toBe('ISO_IR 192');
    for (const ds of all.filter((d) => !nonAscii.includes(d)))
      expect(ds.SpecificCharacterSet).toBeUndefined();
  });

  it('keeps a patient the same person when the other counts change', () => {
    const small = [...generateInstances({ patients: 5, seed: 'stable' })];
    const large = [
      ...generateInstances({
        patients: 5,
        studiesPerPatient: 3,
        seriesPerStudy: 2,
        instancesPerSeries: 2,
        seed: 'stable',
      }),
    ];
    const p4small = parse(small[4].buffer);
    const p4large = parse(large.find((i) => i.patientId === small[4].patientId)!.buffer);
    for (const key of [
      'PatientName',
      'PatientBirthDate',
      'PatientSex',
      'StudyInstanceUID',
      'StudyDate',
      'StudyID',
    ]) {
      expect(p4large[key]).toEqual(p4small[key]);
    }
  });

  it('stacks CT and MR slices along the plane normal with matching positions and slice locations', () => {
    for (const modality of ['CT', 'MR'] as const) {
      const series = [
        ...generateInstances({ modalities: [modality], instancesPerSeries: 12, seed: modality }),
      ];
      const slices = series.map((i) => parse(i.buffer));
      const iop = numbers(slices[0].ImageOrientationPatient);
      const [r, c] = [iop.slice(0, 3), iop.slice(3)];
      expect(r[0] * c[0] + r[1] * c[1] + r[2] * c[2]).toBeCloseTo(0, 6);
      const normal = [r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0]];
      const along = slices.map((ds) => {
        const ipp = numbers(ds.ImagePositionPatient);
        return ipp[0] * normal[0] + ipp[1] * normal[1] + ipp[2] * normal[2];
      });
      const steps = along.slice(1).map((v, k) => v - along[k]);
      const spacing = Math.abs(steps[0]);
      expect(spacing).toBeGreaterThan(0);
      for (const step of steps) expect(Math.abs(step)).toBeCloseTo(spacing, 2);
      slices.forEach((ds, k) => {
        expect(Number(ds.InstanceNumber)).toBe(k + 1);
        expect(Number(ds.SliceLocation)).toBeCloseTo(along[k], 2);
        expect(Number(ds.SliceThickness)).toBeCloseTo(spacing, 2);
        expect(numbers(ds.PixelSpacing)).toHaveLength(2);
      });
    }
  });

  it('fills in the modality-specific attributes', () => {
    const byModality = new Map<string, Attrs>();
    for (const inst of generateInstances({ patients: 12, seed: 'attrs' })) {
      byModality.set(inst.modality, parse(inst.buffer));
    }
    const ct = byModality.get('CT')!;
    expect([ct.RescaleIntercept, ct.RescaleSlope]).toEqual([-1024, 1]);
    expect(Number(ct.KVP)).toBeGreaterThan(0);
    const mr = byModality.get('MR')!;
    expect(Number(mr.EchoTime)).toBeGreaterThan(0);
    expect(Number(mr.RepetitionTime)).toBeGreaterThan(Number(mr.EchoTime));
    expect([1.5, 3]).toContain(Number(mr.MagneticFieldStrength));
    const cr = byModality.get('CR')!;
    expect(['PA', 'AP', 'LL']).toContain(cr.ViewPosition);
    for (const ds of [ct, mr, cr]) {
      expect(ds.StudyDescription).toEqual(expect.any(String));
      expect(ds.SeriesDescription).toEqual(expect.any(String));
      expect(ds.BodyPartExamined).toEqual(expect.any(String));
      expect(ds.Manufacturer).toEqual(expect.any(String));
      expect(ds.AccessionNumber).toEqual(expect.any(String));
      expect(numbers(ds.WindowWidth)[0]).toBeGreaterThan(0);
    }
  });

  it('dates studies inside the range and gives an age that matches the birth date', () => {
    const all = [
      ...generateInstances({ patients: 30, dateFrom: '2020-03-01', dateTo: '20200331', seed: 'dates' }),
    ];
    for (const inst of all) {
      const ds = parse(inst.buffer);
      expect(String(ds.StudyDate) >= '20200301' && String(ds.StudyDate) <= '20200331').toBe(true);
      expect(String(ds.PatientBirthDate) < String(ds.StudyDate)).toBe(true);
      const age = String(ds.PatientAge);
      if (age.endsWith('Y')) {
        const years =
          Number(String(ds.StudyDate).slice(0, 4)) - Number(String(ds.PatientBirthDate).slice(0, 4));
        expect([years - 1, years]).toContain(Number(age.slice(0, 3)));
      }
    }
  });

  it('generates lazily: the first object of a huge request comes straight away', () => {
    const started = Date.now();
    const first: SyntheticInstance = generateInstances({
      patients: 1_000_000,
      instancesPerSeries: 1000,
    }).next().value as SyntheticInstance;
    expect(first.buffer.length).toBeGreaterThan(8192);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('accepts the 2048 x 2560 matrix of a computed radiograph', () => {
    const o = resolveSynthOptions({ rows: 2560, cols: 2048, modalities: ['CR'] });
    expect([o.rows, o.cols]).toEqual([2560, 2048]);
    expect(() => resolveSynthOptions({ rows: 3073 })).toThrow(BadRequestError);
  });

  it('rejects options that cannot produce a data set', () => {
    const bad: SynthOptions[] = [
      { patients: 0 },
      { instancesPerSeries: 1.5 },
      { rows: 4 },
      { cols: 4096 },
      { modalities: [] },
      { modalities: ['US' as never] },
      { dateFrom: '2020-02-30' },
      { dateFrom: '2021-01-01', dateTo: '2020-01-01' },
    ];
    for (const opts of bad) expect(() => generateInstances(opts).next()).toThrow(BadRequestError);
  });
});
