/**
 * Synthetic study generator ("mock PACS") for the demo, tests and benchmarks: realistic-looking CT, MR and CR
 * Part-10 objects with phantom pixel data. Pure (no network, no files). Every value derives from the seed and the
 * object's place in the hierarchy, so the same options give byte-identical output, and patient 7 is the same
 * person whatever the other counts are.
 */
import { createHash } from 'node:crypto';
import dcmjs from 'dcmjs';
import { BadRequestError } from '../src/errors';
import { LONG_VRS } from '../src/dicom/structure';

// Jest runs modules in a vm context where every global lookup (Math.sqrt...) goes through an interceptor and
// costs ~50x more; module-level bindings keep the per-pixel loops fast under test too.
const { sqrt, exp, round, min, max, abs, floor, ceil } = Math;

export type SynthModality = 'CT' | 'MR' | 'CR';
export const SYNTH_MODALITIES: readonly SynthModality[] = ['CT', 'MR', 'CR'];

export const SOP_CLASS_UIDS: Readonly<Record<SynthModality, string>> = {
  CT: '1.2.840.10008.5.1.4.1.1.2',
  MR: '1.2.840.10008.5.1.4.1.1.4',
  CR: '1.2.840.10008.5.1.4.1.1.1',
};
export const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1';
/** Identifies files written by this generator (a fixed UUID in 2.25 form). */
export const SYNTH_IMPLEMENTATION_CLASS_UID = '2.25.12751866666437461224605374702080801808';
export const SYNTH_IMPLEMENTATION_VERSION_NAME = 'APERTURE_SYNTH_1';

export interface SynthOptions {
  patients?: number;
  studiesPerPatient?: number;
  seriesPerStudy?: number;
  instancesPerSeries?: number;
  /** Modalities to draw series from (default CT, MR, CR). */
  modalities?: readonly SynthModality[];
  /** Image size for every modality; by default 64x64 for CT/MR and 128x128 for CR. */
  rows?: number;
  cols?: number;
  seed?: number | string;
  /** Study dates fall in [dateFrom, dateTo]: Date, 'YYYY-MM-DD' or 'YYYYMMDD' (default 2015-01-01..2024-12-31). */
  dateFrom?: Date | string;
  dateTo?: Date | string;
  /** Acquisition noise in the pixel data (default true). */
  noise?: boolean;
  /** 'fast' (default) writes Part 10 directly; 'dcmjs' goes through dcmjs' DicomDict (same bytes, slower). */
  encoder?: 'fast' | 'dcmjs';
}

export interface ResolvedSynthOptions {
  patients: number;
  studiesPerPatient: number;
  seriesPerStudy: number;
  instancesPerSeries: number;
  modalities: readonly SynthModality[];
  rows: number | null;
  cols: number | null;
  seed: string;
  dateFrom: Date;
  dateTo: Date;
  noise: boolean;
  encoder: 'fast' | 'dcmjs';
}

export interface SyntheticInstance {
  buffer: Buffer;
  patientId: string;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  sopInstanceUid: string;
  sopClassUid: string;
  modality: SynthModality;
}

const MAX_COUNT = 1_000_000;
const MAX_STUDIES = 100_000_000;
// Room for the 2k x 2.5k CR the render benchmark asks for; the bound keeps a typo from asking for gigabytes.
const MAX_MATRIX = 3072;

/** Fills in defaults and rejects options that cannot produce a valid data set. */
export function resolveSynthOptions(opts: SynthOptions = {}): ResolvedSynthOptions {
  const count = (name: string, v: number | undefined, dflt: number): number => {
    const n = v ?? dflt;
    if (!Number.isInteger(n) || n < 1 || n > MAX_COUNT) {
      throw new BadRequestError(`${name} must be an integer between 1 and ${MAX_COUNT}`);
    }
    return n;
  };
  const matrix = (name: string, v: number | undefined): number | null => {
    if (v === undefined) return null;
    if (!Number.isInteger(v) || v < 8 || v > MAX_MATRIX) {
      throw new BadRequestError(`${name} must be an integer between 8 and ${MAX_MATRIX}`);
    }
    return v;
  };
  const modalities = opts.modalities ?? SYNTH_MODALITIES;
  if (modalities.length === 0) throw new BadRequestError('modalities must not be empty');
  for (const m of modalities) {
    if (!SYNTH_MODALITIES.includes(m)) {
      throw new BadRequestError(`unsupported modality ${String(m)} (use ${SYNTH_MODALITIES.join(', ')})`);
    }
  }
  const dateFrom = parseDate('dateFrom', opts.dateFrom ?? '2015-01-01');
  const dateTo = parseDate('dateTo', opts.dateTo ?? '2024-12-31');
  if (dateTo.getTime() < dateFrom.getTime()) throw new BadRequestError('dateTo is before dateFrom');
  const rows = matrix('rows', opts.rows);
  const cols = matrix('cols', opts.cols);
  const patients = count('patients', opts.patients, 1);
  const studiesPerPatient = count('studiesPerPatient', opts.studiesPerPatient, 1);
  // Accession numbers (SH, 16 characters) number the studies of a run.
  if (patients * studiesPerPatient > MAX_STUDIES) throw new BadRequestError(`at most ${MAX_STUDIES} studies`);
  return {
    patients,
    studiesPerPatient,
    seriesPerStudy: count('seriesPerStudy', opts.seriesPerStudy, 1),
    instancesPerSeries: count('instancesPerSeries', opts.instancesPerSeries, 1),
    modalities: [...new Set(modalities)],
    // One of rows/cols alone means a square image.
    rows: rows ?? cols,
    cols: cols ?? rows,
    seed: String(opts.seed ?? 1),
    dateFrom,
    dateTo,
    noise: opts.noise ?? true,
    encoder: opts.encoder ?? 'fast',
  };
}

/** Number of instances generateInstances yields for these options. */
export function countSynthInstances(opts: SynthOptions = {}): number {
  const o = resolveSynthOptions(opts);
  return o.patients * o.studiesPerPatient * o.seriesPerStudy * o.instancesPerSeries;
}

/**
 * Lazily yields Part-10 objects patient by patient, study by study, series by series (so instances of one study
 * are consecutive). Only the current object is held in memory. Options are checked at the call.
 */
export function generateInstances(opts: SynthOptions = {}): Generator<SyntheticInstance> {
  return instancesOf(resolveSynthOptions(opts));
}

function* instancesOf(o: ResolvedSynthOptions): Generator<SyntheticInstance> {
  for (let p = 0; p < o.patients; p++) {
    const patient = makePatient(o, p);
    for (let s = 0; s < o.studiesPerPatient; s++) {
      const study = makeStudy(o, patient, s);
      for (let e = 0; e < o.seriesPerStudy; e++) {
        const series = makeSeries(o, study, e);
        for (let i = 0; i < o.instancesPerSeries; i++) {
          yield makeInstance(o, series, i);
        }
      }
    }
  }
}

/** Groups consecutive instances of the same study (as generateInstances yields them); holds one study at a time. */
export function* groupByStudy<T extends { studyInstanceUid: string }>(
  instances: Iterable<T>,
): Generator<T[]> {
  let current: T[] = [];
  for (const inst of instances) {
    if (current.length > 0 && current[0].studyInstanceUid !== inst.studyInstanceUid) {
      yield current;
      current = [];
    }
    current.push(inst);
  }
  if (current.length > 0) yield current;
}

// ---------------------------------------------------------------------------------------------------------------
// Determinism: UIDs and random streams are derived by hashing the seed and the object's path in the hierarchy.

const UID_NAMESPACE = Buffer.from('97c1299c6fbf4985ab7c637a8404bd75', 'hex');

/** A UUID v5 (SHA-1, RFC 9562) of the name, as a `2.25.<decimal>` UID (PS3.5 B.2). */
export function uuidDerivedUid(name: string): string {
  const h = createHash('sha1').update(UID_NAMESPACE).update(name).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  return `2.25.${BigInt('0x' + h.subarray(0, 16).toString('hex')).toString()}`;
}

/** sfc32: small, fast, and good enough for picking names and adding noise. */
class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spare: number | null = null;

  constructor(name: string) {
    const h = createHash('sha256').update(name).digest();
    this.a = h.readUInt32LE(0);
    this.b = h.readUInt32LE(4);
    this.c = h.readUInt32LE(8);
    this.d = h.readUInt32LE(12);
    for (let i = 0; i < 12; i++) this.next();
  }

  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return (t >>> 0) / 4294967296;
  }

  range(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }

  /** Standard normal deviate (Box-Muller, both values used). */
  normal(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    const u = 1 - this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}

const GAUSS_TABLE: Float32Array = (() => {
  const rng = new Rng('aperture-synth/gauss');
  return Float32Array.from({ length: 1 << 16 }, () => rng.normal());
})();

/**
 * Fills `row` with sigma-scaled Gaussian noise: a walk through a fixed table of deviates with a random start and
 * odd stride per row. Two draws per row instead of one per pixel; noise is a third of the render cost otherwise.
 */
function noiseRow(rng: Rng | null, sigma: number, row: Float32Array): void {
  if (!rng) return;
  const mask = GAUSS_TABLE.length - 1;
  const start = (rng.next() * GAUSS_TABLE.length) | 0;
  const stride = ((rng.next() * GAUSS_TABLE.length) | 0 | 1) & mask;
  for (let i = 0, k = start; i < row.length; i++, k = (k + stride) & mask) row[i] = GAUSS_TABLE[k] * sigma;
}

// ---------------------------------------------------------------------------------------------------------------
// People and places. Mostly ASCII; a minority of non-ASCII names exercise ISO_IR 192 (UTF-8) handling downstream.

interface PersonName {
  Alphabetic: string;
  Ideographic?: string;
}

/** Comma-separated names (one template literal instead of one line per name after formatting). */
const names = (text: string): readonly string[] => text.trim().split(/\s*,\s*/);

const FAMILY_ASCII = names(`
  Smith, Johnson, Williams, Brown, Jones, Garcia, Miller, Davis, Rodriguez, Martinez, Nguyen, Tran,
  Kim, Park, Lee, Patel, Singh, Kumar, Sharma, Chen, Wang, Liu, Zhang, Okafor, Adeyemi, Mensah,
  Okonkwo, Kowalski, Nowak, Novak, Rossi, Russo, Bianchi, Schmidt, Schneider, Fischer, Weber, Meyer,
  Wagner, Dubois, Martin, Bernard, Petit, Jansen, de Vries, van Dijk, Andersen, Hansen, Johansson,
  Larsen, Ivanov, Petrov, Cohen, Levi, Haddad, Khoury, Ahmed, Hassan, O'Brien, MacDonald, Murphy,
  Kelly, Silva, Santos, Oliveira, Costa, Pereira, Yilmaz, Kaya, Demir, Sato, Watanabe, Takahashi
`);
const FAMILY_NON_ASCII = names(`
  Müller, Ñúñez, Gonçalves, Sørensen, Østergaard, Dvořák, Šimić, Jørgensen, Çelik, Öztürk, Peña, Muñoz,
  Björk, Ångström, Wójcik, Hämäläinen, Lefèvre, Groß, Łukasiewicz, Nuñez
`);
const GIVEN_ASCII = {
  M: names(`
    James, John, Robert, Michael, David, William, Carlos, Luis, Ahmed, Mohammed, Omar, Wei, Jun,
    Hiroshi, Kenji, Raj, Arjun, Kwame, Chinedu, Piotr, Jan, Lars, Erik, Luca, Marco, Hans, Pierre,
    Ivan, Dmitri, Yusuf, Daniel, Thomas, Samuel, Minh
  `),
  F: names(`
    Mary, Patricia, Jennifer, Linda, Elizabeth, Maria, Ana, Sofia, Fatima, Aisha, Mei, Yuki, Sakura,
    Priya, Ananya, Amara, Ngozi, Anna, Katarzyna, Ingrid, Astrid, Giulia, Chiara, Emma, Claire, Olga,
    Sarah, Leila, Laura, Hana, Lan
  `),
};
const GIVEN_NON_ASCII = {
  M: names(`
    José, Jürgen, Søren, Björn, Łukasz, François, Zoltán, Jiří, Çağan, Ömer
  `),
  F: names(`
    Zoë, Inés, Chloé, Małgorzata, Åsa, Renée, Begoña, Sinéad, Mélanie, Dörte
  `),
};
/** [romanised, ideographic] pairs: PN with an ideographic component group (PS3.5 6.2.1.2). */
const FAMILY_CJK: readonly (readonly [string, string])[] = [
  ['Yamada', '山田'],
  ['Tanaka', '田中'],
  ['Suzuki', '鈴木'],
  ['Wang', '王'],
  ['Li', '李'],
  ['Zhang', '张'],
];
const GIVEN_CJK: Record<'M' | 'F', readonly (readonly [string, string])[]> = {
  M: [
    ['Tarou', '太郎'],
    ['Hiroshi', '博'],
    ['Wei', '伟'],
    ['Jian', '建'],
  ],
  F: [
    ['Hanako', '花子'],
    ['Yoko', '洋子'],
    ['Fang', '芳'],
    ['Xiu', '秀'],
  ],
};
const INSTITUTIONS_ASCII = names(`
  Aperture General Hospital, Riverside Medical Center, Northgate Imaging Clinic,
  Lakeside University Hospital, St. Elsewhere Hospital, Harbour View Radiology, Mercy Valley Health
`);
const INSTITUTIONS_NON_ASCII = names(`
  Hôpital Saint-Éloi, Klinikum Süd, Clínica San José, Sjukhuset Väst
`);

type Sex = 'M' | 'F' | 'O';

function personName(rng: Rng, sex: Sex): PersonName {
  const s: 'M' | 'F' = sex === 'O' ? rng.pick(['M', 'F'] as const) : sex;
  if (rng.chance(0.03)) {
    const [famLatin, famIdeo] = rng.pick(FAMILY_CJK);
    const [givLatin, givIdeo] = rng.pick(GIVEN_CJK[s]);
    return { Alphabetic: `${famLatin}^${givLatin}`, Ideographic: `${famIdeo}^${givIdeo}` };
  }
  const family = rng.chance(0.08) ? rng.pick(FAMILY_NON_ASCII) : rng.pick(FAMILY_ASCII);
  const given = rng.chance(0.06) ? rng.pick(GIVEN_NON_ASCII[s]) : rng.pick(GIVEN_ASCII[s]);
  const middle = rng.chance(0.2) ? `^${String.fromCharCode(65 + rng.int(0, 25))}` : '';
  return { Alphabetic: `${family}^${given}${middle}` };
}

// ---------------------------------------------------------------------------------------------------------------
// Anatomy: each body region is a small set of ellipsoids (tissue + centre + semi-axes in a [-1, 1] box), painted
// in order. CT/MR sample a plane through them, CR integrates attenuation along the beam, so shapes change with
// slice position and projections look like radiographs.

type Tissue =
  | 'air'
  | 'lung'
  | 'fat'
  | 'soft'
  | 'muscle'
  | 'fluid'
  | 'blood'
  | 'gm'
  | 'wm'
  | 'bone'
  | 'marrow'
  | 'liver'
  | 'kidney'
  | 'lesion'
  | 'cartilage'
  | 'contrast';

type MrWeighting = 'T1' | 'T2' | 'PD' | 'FLAIR' | 'DWI';

interface TissueProps {
  hu: number;
  mr: Record<'T1' | 'T2' | 'PD', number>;
  /** Linear attenuation per mm at a typical radiographic energy. */
  mu: number;
}

const TISSUES: Record<Tissue, TissueProps> = {
  air: { hu: -1000, mr: { T1: 0, T2: 0, PD: 0 }, mu: 0 },
  lung: { hu: -850, mr: { T1: 40, T2: 50, PD: 60 }, mu: 0.004 },
  fat: { hu: -100, mr: { T1: 1100, T2: 800, PD: 1000 }, mu: 0.018 },
  soft: { hu: 40, mr: { T1: 600, T2: 450, PD: 800 }, mu: 0.02 },
  muscle: { hu: 50, mr: { T1: 500, T2: 300, PD: 700 }, mu: 0.021 },
  fluid: { hu: 5, mr: { T1: 150, T2: 1500, PD: 1100 }, mu: 0.02 },
  blood: { hu: 45, mr: { T1: 450, T2: 550, PD: 900 }, mu: 0.021 },
  gm: { hu: 38, mr: { T1: 550, T2: 650, PD: 950 }, mu: 0.0205 },
  wm: { hu: 28, mr: { T1: 750, T2: 450, PD: 800 }, mu: 0.0205 },
  bone: { hu: 1100, mr: { T1: 80, T2: 60, PD: 100 }, mu: 0.055 },
  marrow: { hu: 250, mr: { T1: 900, T2: 600, PD: 900 }, mu: 0.03 },
  liver: { hu: 60, mr: { T1: 650, T2: 250, PD: 750 }, mu: 0.0215 },
  kidney: { hu: 35, mr: { T1: 450, T2: 700, PD: 900 }, mu: 0.0205 },
  lesion: { hu: 75, mr: { T1: 350, T2: 1100, PD: 1000 }, mu: 0.022 },
  cartilage: { hu: 90, mr: { T1: 500, T2: 550, PD: 850 }, mu: 0.022 },
  contrast: { hu: 220, mr: { T1: 800, T2: 500, PD: 900 }, mu: 0.026 },
};
const TISSUE_NAMES = Object.keys(TISSUES) as Tissue[];

interface Ellipsoid {
  t: Tissue;
  /** Centre x (patient left +), y (posterior +), z (superior +), in the region's [-1, 1] box. */
  c: readonly [number, number, number];
  r: readonly [number, number, number];
  /** In-plane rotation about z, degrees. */
  phi?: number;
}

interface CtSeriesDef {
  desc: string;
  thickness: number;
  wc: number;
  ww: number;
  kernel: string;
}
interface MrSeriesDef {
  desc: string;
  plane: 'AX' | 'SAG' | 'COR';
  w: MrWeighting;
  fatSat?: boolean;
  thickness: number;
}
interface CrSeriesDef {
  desc: string;
  view: 'PA' | 'AP' | 'LL';
}

interface RegionDef {
  bodyPart: string;
  /** Half-width of the axial field of view and half-length along z, mm. */
  halfFov: number;
  halfLength: number;
  /** Table position of the region centre, mm. */
  tableZ: number;
  paired: boolean;
  patientPosition: 'HFS' | 'FFS';
  phantom: readonly Ellipsoid[];
  lesion: (rng: Rng) => Ellipsoid;
  ct: { study: string; series: readonly CtSeriesDef[] };
  mr: { study: string; series: readonly MrSeriesDef[] };
  cr: { study: string; series: readonly CrSeriesDef[] };
}

const blob = (t: Tissue, c: Ellipsoid['c'], r: Ellipsoid['r'], phi = 0): Ellipsoid => ({ t, c, r, phi });

const REGIONS: readonly RegionDef[] = [
  {
    bodyPart: 'HEAD',
    halfFov: 120,
    halfLength: 100,
    tableZ: 80,
    paired: false,
    patientPosition: 'HFS',
    // A 3D Shepp-Logan head with tissues instead of additive densities.
    phantom: [
      blob('soft', [0, 0, 0], [0.72, 0.95, 0.84]),
      blob('bone', [0, 0, 0], [0.69, 0.92, 0.81]),
      blob('gm', [0, 0.0184, 0], [0.6624, 0.874, 0.78]),
      blob('wm', [0, 0.02, 0.05], [0.5, 0.7, 0.6]),
      blob('fluid', [0.22, 0, 0], [0.11, 0.31, 0.22], -18),
      blob('fluid', [-0.22, 0, 0], [0.16, 0.41, 0.28], 18),
      blob('gm', [0, -0.35, -0.15], [0.21, 0.25, 0.41]),
      blob('blood', [0, -0.1, 0.25], [0.046, 0.046, 0.05]),
      blob('blood', [0, 0.1, 0.25], [0.046, 0.046, 0.05]),
      blob('fluid', [-0.08, 0.605, 0], [0.046, 0.023, 0.05]),
      blob('fluid', [0.06, 0.605, 0], [0.023, 0.046, 0.02]),
      blob('air', [0, -0.85, -0.55], [0.18, 0.12, 0.2]),
    ],
    lesion: (rng) => {
      const s = rng.range(0.04, 0.1);
      return blob(
        'lesion',
        [rng.range(-0.4, 0.4), rng.range(-0.5, 0.5), rng.range(-0.3, 0.4)],
        [s, s * 1.2, s],
      );
    },
    ct: {
      study: 'CT HEAD WO CONTRAST',
      series: [
        { desc: 'AXIAL 5MM', thickness: 5, wc: 40, ww: 80, kernel: 'H30' },
        { desc: 'AXIAL BONE 1MM', thickness: 1, wc: 500, ww: 2000, kernel: 'H70' },
        { desc: 'AXIAL 2.5MM', thickness: 2.5, wc: 40, ww: 80, kernel: 'H30' },
      ],
    },
    mr: {
      study: 'MRI BRAIN WO CONTRAST',
      series: [
        { desc: 'AX T1 SE', plane: 'AX', w: 'T1', thickness: 5 },
        { desc: 'AX T2 FSE', plane: 'AX', w: 'T2', thickness: 5 },
        { desc: 'AX FLAIR', plane: 'AX', w: 'FLAIR', thickness: 5 },
        { desc: 'SAG T1', plane: 'SAG', w: 'T1', thickness: 4 },
        { desc: 'COR T2', plane: 'COR', w: 'T2', thickness: 4 },
        { desc: 'AX DWI B1000', plane: 'AX', w: 'DWI', thickness: 5 },
      ],
    },
    cr: {
      study: 'XR SKULL 2 VIEWS',
      series: [
        { desc: 'SKULL AP', view: 'AP' },
        { desc: 'SKULL LAT', view: 'LL' },
      ],
    },
  },
  {
    bodyPart: 'CHEST',
    halfFov: 200,
    halfLength: 160,
    tableZ: -150,
    paired: false,
    patientPosition: 'HFS',
    phantom: [
      blob('fat', [0, 0, 0], [0.9, 0.6, 1.4]),
      blob('muscle', [0, 0, 0], [0.84, 0.55, 1.4]),
      blob('soft', [0, 0.02, 0], [0.76, 0.49, 1.4]),
      blob('lung', [-0.4, -0.02, 0.1], [0.32, 0.4, 0.85]),
      blob('lung', [0.42, -0.02, 0.1], [0.3, 0.4, 0.85]),
      blob('blood', [0.12, -0.12, -0.25], [0.25, 0.22, 0.35], 30),
      blob('blood', [0.06, 0.12, 0.05], [0.06, 0.06, 0.95]),
      blob('bone', [0, 0.4, 0], [0.1, 0.1, 1.5]),
      blob('marrow', [0, 0.4, 0], [0.07, 0.07, 1.5]),
      blob('fluid', [0, 0.52, 0], [0.035, 0.035, 1.5]),
      blob('bone', [0, -0.5, 0.05], [0.08, 0.03, 0.6]),
      blob('bone', [-0.72, 0.2, 0.55], [0.06, 0.22, 0.3], 25),
      blob('bone', [0.72, 0.2, 0.55], [0.06, 0.22, 0.3], -25),
    ],
    lesion: (rng) => {
      const s = rng.range(0.03, 0.07);
      const side = rng.chance(0.5) ? -1 : 1;
      return blob(
        'lesion',
        [side * rng.range(0.3, 0.5), rng.range(-0.2, 0.2), rng.range(-0.3, 0.6)],
        [s, s, s],
      );
    },
    ct: {
      study: 'CT CHEST W CONTRAST',
      series: [
        { desc: 'AXIAL 3MM MEDIASTINUM', thickness: 3, wc: 40, ww: 400, kernel: 'B31' },
        { desc: 'AXIAL 1MM LUNG', thickness: 1, wc: -600, ww: 1500, kernel: 'B70' },
        { desc: 'AXIAL 5MM', thickness: 5, wc: 40, ww: 400, kernel: 'B31' },
      ],
    },
    mr: {
      study: 'MRI CHEST WO CONTRAST',
      series: [
        { desc: 'AX T2 HASTE', plane: 'AX', w: 'T2', thickness: 6 },
        { desc: 'COR T2 HASTE', plane: 'COR', w: 'T2', thickness: 6 },
        { desc: 'AX T1 VIBE', plane: 'AX', w: 'T1', thickness: 3 },
      ],
    },
    cr: {
      study: 'XR CHEST 2 VIEWS',
      series: [
        { desc: 'CHEST PA', view: 'PA' },
        { desc: 'CHEST LAT', view: 'LL' },
      ],
    },
  },
  {
    bodyPart: 'ABDOMEN',
    halfFov: 200,
    halfLength: 200,
    tableZ: -420,
    paired: false,
    patientPosition: 'HFS',
    phantom: [
      blob('fat', [0, 0, 0], [0.9, 0.62, 1.4]),
      blob('muscle', [0, 0, 0], [0.85, 0.57, 1.4]),
      blob('fat', [0, 0.02, 0], [0.78, 0.5, 1.4]),
      blob('liver', [-0.35, -0.05, 0.45], [0.42, 0.36, 0.5], -15),
      blob('soft', [0.5, 0.15, 0.5], [0.15, 0.2, 0.28]),
      blob('soft', [0.15, -0.2, 0.1], [0.3, 0.15, 0.5]),
      blob('kidney', [-0.35, 0.3, 0.05], [0.1, 0.16, 0.26]),
      blob('kidney', [0.35, 0.3, 0.1], [0.1, 0.16, 0.26]),
      blob('fluid', [0.15, -0.2, -0.35], [0.12, 0.1, 0.12]),
      blob('air', [-0.15, -0.25, -0.15], [0.08, 0.06, 0.1]),
      blob('contrast', [0.05, 0.22, 0], [0.05, 0.05, 1.4]),
      blob('blood', [-0.1, 0.2, 0.1], [0.06, 0.05, 1.2]),
      blob('muscle', [-0.17, 0.36, -0.4], [0.08, 0.08, 0.9]),
      blob('muscle', [0.17, 0.36, -0.4], [0.08, 0.08, 0.9]),
      blob('bone', [0, 0.42, 0], [0.11, 0.1, 1.5]),
      blob('marrow', [0, 0.42, 0], [0.08, 0.07, 1.5]),
    ],
    lesion: (rng) => {
      const s = rng.range(0.04, 0.09);
      return blob('lesion', [rng.range(-0.5, -0.2), rng.range(-0.2, 0.15), rng.range(0.2, 0.6)], [s, s, s]);
    },
    ct: {
      study: 'CT ABDOMEN PELVIS W CONTRAST',
      series: [
        { desc: 'PORTAL VENOUS 5MM', thickness: 5, wc: 50, ww: 350, kernel: 'B30' },
        { desc: 'ARTERIAL 2.5MM', thickness: 2.5, wc: 50, ww: 350, kernel: 'B30' },
        { desc: 'CORONAL MPR 3MM', thickness: 3, wc: 50, ww: 350, kernel: 'B30' },
      ],
    },
    mr: {
      study: 'MRI ABDOMEN WO CONTRAST',
      series: [
        { desc: 'AX T2 HASTE', plane: 'AX', w: 'T2', thickness: 6 },
        { desc: 'AX T1 IN-PHASE', plane: 'AX', w: 'T1', thickness: 6 },
        { desc: 'COR T2 HASTE', plane: 'COR', w: 'T2', thickness: 6 },
        { desc: 'AX DWI B800', plane: 'AX', w: 'DWI', thickness: 6 },
      ],
    },
    cr: { study: 'XR ABDOMEN 1 VIEW', series: [{ desc: 'ABDOMEN AP SUPINE', view: 'AP' }] },
  },
  {
    bodyPart: 'KNEE',
    halfFov: 80,
    halfLength: 110,
    tableZ: -1050,
    paired: true,
    patientPosition: 'FFS',
    phantom: [
      blob('fat', [0, 0, 0], [0.78, 0.82, 1.4]),
      blob('muscle', [0, 0.05, 0], [0.68, 0.7, 1.4]),
      blob('fluid', [0, 0, -0.02], [0.48, 0.38, 0.08]),
      blob('cartilage', [0, 0, 0.1], [0.42, 0.36, 0.12]),
      blob('bone', [0, 0, 0.6], [0.4, 0.34, 0.55]),
      blob('marrow', [0, 0, 0.6], [0.34, 0.28, 0.52]),
      blob('cartilage', [0, 0.02, -0.14], [0.4, 0.34, 0.1]),
      blob('bone', [0, 0.05, -0.6], [0.38, 0.34, 0.52]),
      blob('marrow', [0, 0.05, -0.6], [0.32, 0.28, 0.5]),
      blob('bone', [0.28, 0.2, -0.55], [0.08, 0.08, 0.4]),
      blob('bone', [0, -0.52, 0.18], [0.2, 0.08, 0.22]),
      blob('marrow', [0, -0.52, 0.18], [0.16, 0.05, 0.18]),
    ],
    lesion: (rng) => {
      const s = rng.range(0.03, 0.06);
      return blob(
        'lesion',
        [rng.range(-0.3, 0.3), rng.range(-0.2, 0.2), rng.range(0.2, 0.7)],
        [s, s, s * 1.5],
      );
    },
    ct: {
      study: 'CT KNEE WO CONTRAST',
      series: [
        { desc: 'AXIAL BONE 1MM', thickness: 1, wc: 500, ww: 2000, kernel: 'B70' },
        { desc: 'AXIAL SOFT 2MM', thickness: 2, wc: 50, ww: 400, kernel: 'B30' },
      ],
    },
    mr: {
      study: 'MRI KNEE WO CONTRAST',
      series: [
        { desc: 'SAG PD FS', plane: 'SAG', w: 'PD', fatSat: true, thickness: 3 },
        { desc: 'COR T1', plane: 'COR', w: 'T1', thickness: 3 },
        { desc: 'AX PD FS', plane: 'AX', w: 'PD', fatSat: true, thickness: 3 },
        { desc: 'SAG T2', plane: 'SAG', w: 'T2', thickness: 3 },
      ],
    },
    cr: {
      study: 'XR KNEE 2 VIEWS',
      series: [
        { desc: 'KNEE AP', view: 'AP' },
        { desc: 'KNEE LAT', view: 'LL' },
      ],
    },
  },
  {
    bodyPart: 'LSPINE',
    halfFov: 180,
    halfLength: 130,
    tableZ: -380,
    paired: false,
    patientPosition: 'HFS',
    phantom: [
      blob('fat', [0, 0, 0], [0.9, 0.62, 1.4]),
      blob('muscle', [0, 0, 0], [0.85, 0.57, 1.4]),
      blob('fat', [0, -0.05, 0], [0.75, 0.4, 1.4]),
      blob('muscle', [-0.2, 0.32, 0], [0.12, 0.12, 1.3]),
      blob('muscle', [0.2, 0.32, 0], [0.12, 0.12, 1.3]),
      blob('muscle', [-0.22, 0.62, 0], [0.16, 0.1, 1.4]),
      blob('muscle', [0.22, 0.62, 0], [0.16, 0.1, 1.4]),
      blob('fluid', [0, 0.3, 0], [0.14, 0.12, 1.4]),
      ...[-0.8, -0.4, 0, 0.4, 0.8].flatMap((z) => [
        blob('bone', [0, 0.3, z], [0.15, 0.13, 0.16]),
        blob('marrow', [0, 0.3, z], [0.12, 0.1, 0.14]),
      ]),
      blob('fluid', [0, 0.49, 0], [0.05, 0.05, 1.4]),
      blob('bone', [0, 0.6, 0], [0.04, 0.06, 1.4]),
    ],
    lesion: (rng) => {
      const s = rng.range(0.03, 0.06);
      return blob('lesion', [rng.range(-0.06, 0.06), 0.3, rng.pick([-0.8, -0.4, 0, 0.4, 0.8])], [s, s, s]);
    },
    ct: {
      study: 'CT LUMBAR SPINE WO CONTRAST',
      series: [
        { desc: 'AXIAL BONE 2MM', thickness: 2, wc: 500, ww: 2000, kernel: 'B70' },
        { desc: 'AXIAL SOFT 3MM', thickness: 3, wc: 50, ww: 400, kernel: 'B30' },
      ],
    },
    mr: {
      study: 'MRI LUMBAR SPINE WO CONTRAST',
      series: [
        { desc: 'SAG T1', plane: 'SAG', w: 'T1', thickness: 4 },
        { desc: 'SAG T2', plane: 'SAG', w: 'T2', thickness: 4 },
        { desc: 'AX T2', plane: 'AX', w: 'T2', thickness: 4 },
      ],
    },
    cr: {
      study: 'XR LUMBAR SPINE 2 VIEWS',
      series: [
        { desc: 'LSPINE AP', view: 'AP' },
        { desc: 'LSPINE LAT', view: 'LL' },
      ],
    },
  },
];

interface Equipment {
  manufacturer: string;
  model: string;
  fieldStrength?: number;
}
// Fictional vendors: the data must never pass for a real device's output.
const EQUIPMENT: Record<SynthModality, readonly Equipment[]> = {
  CT: [
    { manufacturer: 'Aperture Medical', model: 'Lumen CT 64' },
    { manufacturer: 'Phantom Imaging Co.', model: 'Helix 128' },
    { manufacturer: 'Synthetica Healthcare', model: 'Tomo S16' },
  ],
  MR: [
    { manufacturer: 'Aperture Medical', model: 'Resonance 15', fieldStrength: 1.5 },
    { manufacturer: 'Phantom Imaging Co.', model: 'Magnus 3T', fieldStrength: 3 },
    { manufacturer: 'Synthetica Healthcare', model: 'Field One', fieldStrength: 1.5 },
  ],
  CR: [
    { manufacturer: 'Aperture Medical', model: 'Plate CR-1' },
    { manufacturer: 'Synthetica Healthcare', model: 'Radia CR 35' },
  ],
};

// ---------------------------------------------------------------------------------------------------------------
// Hierarchy

interface Patient {
  key: string;
  index: number;
  id: string;
  name: PersonName;
  sex: Sex;
  birth: Date;
  heightM: number;
  weightKg: number;
  /** Body habitus: scales the phantom in x and y. */
  scaleX: number;
  scaleY: number;
}

interface Study {
  key: string;
  patient: Patient;
  uid: string;
  start: Date;
  accession: string;
  studyId: string;
  region: RegionDef;
  description: string;
  referring: PersonName | null;
  institution: string;
  age: string;
  phantom: readonly Ellipsoid[];
  seriesModalities: readonly SynthModality[];
  /** Study-level elements shared by all its instances. */
  elements: Element[];
}

type Geometry = {
  rows: number;
  cols: number;
  /** Row direction (increasing column index) and column direction (increasing row index). */
  rowDir: Vec3;
  colDir: Vec3;
  pixelSpacing: number;
};

interface Series {
  key: string;
  study: Study;
  uid: string;
  modality: SynthModality;
  number: number;
  start: Date;
  equipment: Equipment;
  ct?: CtSeriesDef;
  mr?: MrSeriesDef;
  cr?: CrSeriesDef;
  geometry: Geometry;
  /** Through-plane: where slice 0 is and how far apart slices are (CT/MR). */
  normal: Vec3;
  firstCentre: Vec3;
  spacing: number;
  laterality: 'L' | 'R' | null;
  elements: Element[];
}

type Vec3 = readonly [number, number, number];

const seedTags = new Map<string, string>();
/** Four characters derived from the seed, so IDs from runs with different seeds do not collide. */
function seedTag(seed: string): string {
  let tag = seedTags.get(seed);
  if (!tag) {
    const n = parseInt(createHash('sha256').update(seed).digest('hex').slice(0, 8), 16) % 36 ** 4;
    tag = n.toString(36).toUpperCase().padStart(4, '0');
    seedTags.set(seed, tag);
  }
  return tag;
}

function makePatient(o: ResolvedSynthOptions, p: number): Patient {
  const key = `aperture-synth/${JSON.stringify(o.seed)}/p${p}`;
  const rng = new Rng(key);
  const r = rng.next();
  const sex: Sex = r < 0.49 ? 'M' : r < 0.98 ? 'F' : 'O';
  const ageYears = rng.chance(0.08) ? rng.range(0, 18) : 18 + 77 * ((rng.next() + rng.next()) / 2);
  const birth = new Date(o.dateFrom.getTime() - ageYears * 365.25 * DAY_MS);
  birth.setUTCHours(0, 0, 0, 0);
  const child = Math.min(1, ageYears / 18);
  const heightM = (sex === 'F' ? 1.63 : 1.76) * (0.55 + 0.45 * child) + rng.normal() * 0.07;
  const bmi = 18 + child * rng.range(2, 14);
  return {
    key,
    index: p,
    id: `SYN${seedTag(o.seed)}${String(p + 1).padStart(6, '0')}`,
    name: personName(rng, sex),
    sex,
    birth,
    heightM,
    weightKg: bmi * heightM * heightM,
    scaleX: rng.range(0.88, 1.06),
    scaleY: rng.range(0.88, 1.06),
  };
}

const DAY_MS = 86_400_000;

function makeStudy(o: ResolvedSynthOptions, patient: Patient, s: number): Study {
  const key = `${patient.key}/s${s}`;
  const rng = new Rng(key);
  const span = o.dateTo.getTime() - o.dateFrom.getTime();
  const day = new Date(o.dateFrom.getTime() + Math.floor(rng.next() * (span / DAY_MS + 1)) * DAY_MS);
  // Birth dates precede dateFrom, so every study date is after birth.
  const start = new Date(day.getTime() + (rng.int(7 * 3600, 19 * 3600 + 59 * 60) + rng.next()) * 1000);
  start.setUTCMilliseconds(0);

  const first = rng.pick(o.modalities);
  const region = rng.pick(REGIONS);
  const description = region[modalityKey(first)].study;
  const referring = rng.chance(0.1) ? null : personName(rng, rng.pick(['M', 'F'] as const));
  const institution = rng.chance(0.1) ? rng.pick(INSTITUTIONS_NON_ASCII) : rng.pick(INSTITUTIONS_ASCII);
  const phantom = rng.chance(0.6) ? [...region.phantom, region.lesion(rng)] : region.phantom;
  const studyId = String(rng.int(1000, 99999));
  // Drawn last: everything above stays the same whatever seriesPerStudy is.
  const seriesModalities: SynthModality[] = [];
  for (let k = 0; k < o.seriesPerStudy; k++) {
    // Mostly one modality per study, with the occasional extra (a CR localiser next to a CT, say).
    seriesModalities.push(k === 0 || rng.chance(0.85) ? first : rng.pick(o.modalities));
  }
  const serial = String(patient.index * o.studiesPerPatient + s + 1).padStart(7, '0');
  const study: Study = {
    key,
    patient,
    uid: uuidDerivedUid(key),
    start,
    accession: `${seedTag(o.seed)}${serial}`,
    studyId,
    region,
    description,
    referring,
    institution,
    age: ageString(patient.birth, start),
    phantom,
    seriesModalities,
    elements: [],
  };
  study.elements = studyElements(study);
  return study;
}

function modalityKey(m: SynthModality): 'ct' | 'mr' | 'cr' {
  return m === 'CT' ? 'ct' : m === 'MR' ? 'mr' : 'cr';
}

function ageString(birth: Date, at: Date): string {
  let years = at.getUTCFullYear() - birth.getUTCFullYear();
  const beforeBirthday =
    at.getUTCMonth() < birth.getUTCMonth() ||
    (at.getUTCMonth() === birth.getUTCMonth() && at.getUTCDate() < birth.getUTCDate());
  if (beforeBirthday) years--;
  if (years >= 2) return `${String(Math.min(years, 999)).padStart(3, '0')}Y`;
  const days = Math.floor((at.getTime() - birth.getTime()) / DAY_MS);
  if (days >= 60) return `${String(Math.floor(days / 30.44)).padStart(3, '0')}M`;
  return `${String(Math.max(days, 0)).padStart(3, '0')}D`;
}

function makeSeries(o: ResolvedSynthOptions, study: Study, index: number): Series {
  const key = `${study.key}/e${index}`;
  const rng = new Rng(key);
  const modality = study.seriesModalities[index];
  const region = study.region;
  const equipment = new Rng(`${study.key}/equipment/${modality}`).pick(EQUIPMENT[modality]);
  const start = new Date(study.start.getTime() + (index * 6 * 60 + rng.int(0, 240)) * 1000);
  const defaultSize = modality === 'CR' ? 128 : 64;
  const rows = o.rows ?? defaultSize;
  const cols = o.cols ?? defaultSize;
  const n = o.instancesPerSeries;
  const laterality = region.paired ? new Rng(`${study.key}/side`).pick(['L', 'R'] as const) : null;
  const suffix = (list: readonly unknown[]): string =>
    index >= list.length ? ` ${Math.floor(index / list.length) + 1}` : '';

  let ct: CtSeriesDef | undefined;
  let mr: MrSeriesDef | undefined;
  let cr: CrSeriesDef | undefined;
  let rowDir: Vec3 = [1, 0, 0];
  let colDir: Vec3 = [0, 1, 0];
  let pixelSpacing: number;
  let thickness: number;
  let extent: number;
  const centre: Vec3 = [0, 0, region.tableZ];
  if (modality === 'CR') {
    const def = region.cr.series[index % region.cr.series.length];
    cr = { ...def, desc: def.desc + suffix(region.cr.series) };
    rowDir = cr.view === 'LL' ? [0, 1, 0] : [1, 0, 0];
    colDir = [0, 0, -1];
    pixelSpacing = Math.max((2.3 * region.halfFov) / cols, (2 * region.halfLength) / rows);
    thickness = 0;
    extent = 0;
  } else if (modality === 'MR') {
    const def = region.mr.series[index % region.mr.series.length];
    mr = { ...def, desc: def.desc + suffix(region.mr.series) };
    if (mr.plane === 'SAG') {
      rowDir = [0, 1, 0];
      colDir = [0, 0, -1];
    } else if (mr.plane === 'COR') {
      rowDir = [1, 0, 0];
      colDir = [0, 0, -1];
    }
    pixelSpacing =
      mr.plane === 'AX'
        ? (2 * region.halfFov) / Math.max(rows, cols)
        : Math.max((2 * region.halfFov) / cols, (2 * region.halfLength) / rows);
    thickness = mr.thickness;
    extent = mr.plane === 'AX' ? 1.6 * region.halfLength : 1.4 * region.halfFov;
  } else {
    const def = region.ct.series[index % region.ct.series.length];
    ct = { ...def, desc: def.desc + suffix(region.ct.series) };
    pixelSpacing = (2 * region.halfFov) / Math.max(rows, cols);
    thickness = ct.thickness;
    extent = 1.6 * region.halfLength;
  }
  const normal = cross(rowDir, colDir);
  // Long stacks get thinner slices instead of running off the end of the anatomy.
  const spacing = n > 1 ? Math.min(thickness, extent / (n - 1)) : thickness;
  // Axial stacks run head to foot (normal is +z, so step backwards); sagittal left to right, coronal front to back.
  const step = normal[2] !== 0 ? -spacing : spacing;
  const firstCentre = add(centre, scale(normal, (-step * (n - 1)) / 2));
  const series: Series = {
    key,
    study,
    uid: uuidDerivedUid(key),
    modality,
    number: index + 1,
    start,
    equipment,
    ct,
    mr,
    cr,
    geometry: { rows, cols, rowDir, colDir, pixelSpacing },
    normal,
    firstCentre,
    spacing: step,
    laterality,
    elements: [],
  };
  series.elements = seriesElements(series, rng);
  return series;
}

// ---------------------------------------------------------------------------------------------------------------
// Data elements and encoding. Objects are flat (no sequences), so a direct Explicit VR Little Endian writer is
// short; it produces the same bytes as dcmjs' DicomDict.write (a unit test holds it to that) at a small fraction
// of the cost, which matters when a benchmark needs tens of thousands of objects.

type ElementValue = string | number | ArrayBuffer;
type Element = readonly [tag: string, vr: string, values: readonly ElementValue[]];

const dcmjsData = dcmjs.data;

const tagCache = new Map<string, { tag: string; vr: string }>();
/** An element by keyword, with the VR from the data dictionary. Empty values mean a zero-length (Type 2) element. */
function el(keyword: string, ...values: ElementValue[]): Element {
  let entry = tagCache.get(keyword);
  if (!entry) {
    const found = dcmjsData.DicomMetaDictionary.nameMap[keyword];
    if (!found) throw new Error(`unknown DICOM keyword ${keyword}`);
    entry = { tag: found.tag.replace(/[(),]/g, ''), vr: keyword === 'PixelData' ? 'OW' : found.vr };
    tagCache.set(keyword, entry);
  }
  return [entry.tag, entry.vr, values];
}

/** A Decimal String value: at most 16 characters, no float noise like 0.30000000000000004. */
function ds(x: number, decimals = 4): string {
  let s = x.toFixed(decimals);
  if (s.includes('.')) s = s.replace(/0+$/, '').replace(/\.$/, '');
  if (s === '-0') s = '0';
  return s.length <= 16 ? s : x.toPrecision(10);
}
const da = (d: Date): string =>
  `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}${String(d.getUTCDate()).padStart(2, '0')}`;
const tm = (d: Date): string =>
  `${String(d.getUTCHours()).padStart(2, '0')}${String(d.getUTCMinutes()).padStart(2, '0')}${String(
    d.getUTCSeconds(),
  ).padStart(2, '0')}`;

function studyElements(study: Study): Element[] {
  const p = study.patient;
  const els: Element[] = [
    el('StudyDate', da(study.start)),
    el('StudyTime', tm(study.start)),
    el('AccessionNumber', study.accession),
    el('InstitutionName', study.institution),
    study.referring ? el('ReferringPhysicianName', refName(study.referring)) : el('ReferringPhysicianName'),
    el('StudyDescription', study.description),
    el('PatientName', pn(p.name)),
    el('PatientID', p.id),
    el('PatientBirthDate', da(p.birth)),
    el('PatientSex', p.sex),
    el('PatientAge', study.age),
    el('PatientSize', ds(p.heightM, 2)),
    el('PatientWeight', ds(p.weightKg, 1)),
    el('StudyInstanceUID', study.uid),
    el('StudyID', study.studyId),
  ];
  // Decided on the text actually written: the default repertoire unless something needs UTF-8.
  const text = els.flatMap(([, vr, values]) => (['PN', 'LO', 'SH'].includes(vr) ? values : []));
  if (text.some((t) => typeof t === 'string' && /[^\x20-\x7e]/.test(t))) {
    els.push(el('SpecificCharacterSet', 'ISO_IR 192'));
  }
  return els;
}

/** PN as encoded in Part 10: component groups separated by '=' (PS3.5 6.2). */
function pn(n: PersonName): string {
  return n.Ideographic ? `${n.Alphabetic}=${n.Ideographic}` : n.Alphabetic;
}

function refName(n: PersonName): string {
  const [family, given] = n.Alphabetic.split('^');
  return `${family}^${given}^^Dr`;
}

function seriesElements(series: Series, rng: Rng): Element[] {
  const { study, modality, equipment } = series;
  const region = study.region;
  const description = series.ct?.desc ?? series.mr?.desc ?? series.cr?.desc ?? '';
  const els: Element[] = [
    el('Modality', modality),
    el('SeriesDate', da(series.start)),
    el('SeriesTime', tm(series.start)),
    el('Manufacturer', equipment.manufacturer),
    el('ManufacturerModelName', equipment.model),
    el('StationName', `${modality}${String(new Rng(`${study.key}/station`).int(1, 4)).padStart(2, '0')}`),
    el('DeviceSerialNumber', String(new Rng(`${equipment.model}/${study.institution}`).int(10000, 99999))),
    el('SoftwareVersions', 'SYNTH 1.0'),
    el('SeriesDescription', description),
    el('ProtocolName', `${region.bodyPart} ${description}`.slice(0, 64)),
    el('BodyPartExamined', region.bodyPart),
    el('SeriesInstanceUID', series.uid),
    el('SeriesNumber', String(series.number)),
  ];
  // Type 2C: present only for paired body parts, where it must have a value.
  if (series.laterality) els.push(el('Laterality', series.laterality));
  if (modality !== 'CR') {
    els.push(
      el('PatientPosition', region.patientPosition),
      el('FrameOfReferenceUID', uuidDerivedUid(`${study.key}/for/${modality}`)),
      el('PositionReferenceIndicator'),
    );
  }
  if (modality === 'CT' && series.ct) {
    const kvp = rng.pick([100, 120, 120, 140]);
    const ma = rng.int(80, 350);
    els.push(
      el('ScanOptions', 'HELICAL MODE'),
      el('KVP', String(kvp)),
      el('DataCollectionDiameter', ds(2 * region.halfFov + 100, 1)),
      el('ReconstructionDiameter', ds(series.geometry.pixelSpacing * series.geometry.cols, 2)),
      el('GantryDetectorTilt', '0'),
      el('TableHeight', ds(rng.range(120, 180), 1)),
      el('RotationDirection', 'CW'),
      el('ExposureTime', String(rng.int(500, 1000))),
      el('XRayTubeCurrent', String(ma)),
      el('Exposure', String(Math.round(ma * 0.8))),
      el('ConvolutionKernel', series.ct.kernel),
    );
  } else if (modality === 'MR' && series.mr) {
    const mr = series.mr;
    const fs = mr.fatSat ? ['FS'] : [];
    const seq: Record<MrWeighting, [string, string, number, number, number, number]> = {
      // ScanningSequence, SequenceVariant, TR, TE, echo train length, flip angle
      T1: ['SE', 'NONE', 550, 12, 1, 90],
      T2: ['SE', 'SK', 4200, 100, 16, 150],
      PD: ['SE', 'SK', 3000, 30, 8, 150],
      FLAIR: ['SE\\IR', 'SK\\MP', 9000, 120, 20, 150],
      DWI: ['EP', 'SK', 5200, 85, 1, 90],
    };
    const [ss, sv, tr, te, etl, flip] = seq[mr.w];
    const field = equipment.fieldStrength ?? 1.5;
    els.push(
      el('ScanningSequence', ...ss.split('\\')),
      el('SequenceVariant', ...sv.split('\\')),
      el('ScanOptions', ...fs),
      el('MRAcquisitionType', '2D'),
      el('SequenceName', `${mr.w.toLowerCase()}_${mr.plane.toLowerCase()}`),
      el('AngioFlag', 'N'),
      el('RepetitionTime', ds(tr * rng.range(0.95, 1.05), 1)),
      el('EchoTime', ds(te * rng.range(0.95, 1.05), 2)),
      el('NumberOfAverages', '1'),
      el('ImagingFrequency', ds(42.577478 * field, 6)),
      el('ImagedNucleus', '1H'),
      el('EchoNumbers', '1'),
      el('MagneticFieldStrength', ds(field, 1)),
      el('SpacingBetweenSlices', ds(Math.abs(series.spacing), 3)),
      el('EchoTrainLength', String(etl)),
      el('FlipAngle', String(flip)),
    );
    if (mr.w === 'FLAIR') els.push(el('InversionTime', ds(2500, 1)));
  } else if (modality === 'CR' && series.cr) {
    els.push(
      el('KVP', String(region.bodyPart === 'CHEST' ? rng.int(110, 125) : rng.int(65, 85))),
      el('DistanceSourceToDetector', ds(region.bodyPart === 'CHEST' ? 1800 : 1000, 1)),
      el('ExposureTime', String(rng.int(5, 80))),
      el('XRayTubeCurrent', String(rng.int(200, 500))),
      el('ViewPosition', series.cr.view),
      el('PlateID', `PL${rng.int(1000, 9999)}`),
      el('ImagerPixelSpacing', ds(series.geometry.pixelSpacing, 4), ds(series.geometry.pixelSpacing, 4)),
    );
  }
  return els;
}

function makeInstance(o: ResolvedSynthOptions, series: Series, i: number): SyntheticInstance {
  const { study, modality, geometry: g } = series;
  const key = `${series.key}/i${i}`;
  const sopInstanceUid = uuidDerivedUid(key);
  const sopClassUid = SOP_CLASS_UIDS[modality];
  const rng = new Rng(key);
  const acquired = new Date(series.start.getTime() + i * (modality === 'MR' ? 12_000 : 700));

  const els: Element[] = [...study.elements, ...series.elements];
  els.push(
    el('SOPClassUID', sopClassUid),
    el('SOPInstanceUID', sopInstanceUid),
    el('InstanceNumber', String(i + 1)),
    el('AcquisitionNumber', '1'),
    el('AcquisitionDate', da(acquired)),
    el('AcquisitionTime', tm(acquired)),
    el('ContentDate', da(acquired)),
    el('ContentTime', tm(acquired)),
    el('SamplesPerPixel', 1),
    el('PhotometricInterpretation', 'MONOCHROME2'),
    el('Rows', g.rows),
    el('Columns', g.cols),
    el('BitsAllocated', 16),
    el('BitsStored', 12),
    el('HighBit', 11),
    el('PixelRepresentation', 0),
    el('BurnedInAnnotation', 'NO'),
    el('LossyImageCompression', '00'),
  );

  let pixels: Uint16Array;
  let window: [number, number, string];
  if (modality === 'CR') {
    const view = series.cr?.view ?? 'PA';
    pixels = renderProjection(series, o.noise ? rng : null);
    window = autoWindow(pixels);
    els.push(
      el('ImageType', 'ORIGINAL', 'PRIMARY'),
      el('PatientOrientation', view === 'LL' ? 'P' : 'L', 'F'),
    );
  } else {
    const centre = add(series.firstCentre, scale(series.normal, series.spacing * i));
    const origin = add(
      centre,
      add(
        scale(g.rowDir, (-g.pixelSpacing * (g.cols - 1)) / 2),
        scale(g.colDir, (-g.pixelSpacing * (g.rows - 1)) / 2),
      ),
    );
    const thickness = Math.abs(series.spacing) || (series.ct?.thickness ?? series.mr?.thickness ?? 1);
    els.push(
      el('ImagePositionPatient', ds(origin[0], 3), ds(origin[1], 3), ds(origin[2], 3)),
      el('ImageOrientationPatient', ...[...g.rowDir, ...g.colDir].map((v) => ds(v, 6))),
      el('SliceLocation', ds(dot(centre, series.normal), 3)),
      el('SliceThickness', ds(thickness, 3)),
      el('PixelSpacing', ds(g.pixelSpacing, 6), ds(g.pixelSpacing, 6)),
    );
    if (modality === 'CT' && series.ct) {
      pixels = renderSlice(series, origin, o.noise ? rng : null);
      window = [series.ct.wc, series.ct.ww, series.ct.ww >= 1500 ? 'BONE' : 'SOFT TISSUE'];
      els.push(
        el('ImageType', 'ORIGINAL', 'PRIMARY', 'AXIAL'),
        el('RescaleIntercept', '-1024'),
        el('RescaleSlope', '1'),
        el('RescaleType', 'HU'),
      );
    } else {
      pixels = renderSlice(series, origin, o.noise ? rng : null);
      window = autoWindow(pixels);
      els.push(el('ImageType', 'ORIGINAL', 'PRIMARY', 'OTHER'));
    }
  }
  els.push(
    el('WindowCenter', ds(window[0], 1)),
    el('WindowWidth', ds(window[1], 1)),
    el('WindowCenterWidthExplanation', window[2]),
    el('PixelData', pixels.buffer as ArrayBuffer),
  );

  const meta: Element[] = [
    ['00020001', 'OB', [new Uint8Array([0, 1]).buffer]],
    ['00020002', 'UI', [sopClassUid]],
    ['00020003', 'UI', [sopInstanceUid]],
    ['00020010', 'UI', [EXPLICIT_VR_LITTLE_ENDIAN]],
    ['00020012', 'UI', [SYNTH_IMPLEMENTATION_CLASS_UID]],
    ['00020013', 'SH', [SYNTH_IMPLEMENTATION_VERSION_NAME]],
  ];
  return {
    buffer: o.encoder === 'dcmjs' ? writeWithDcmjs(meta, els) : writePart10(meta, els),
    patientId: study.patient.id,
    studyInstanceUid: study.uid,
    seriesInstanceUid: series.uid,
    sopInstanceUid,
    sopClassUid,
    modality,
  };
}

const PREAMBLE = Buffer.concat([Buffer.alloc(128), Buffer.from('DICM', 'latin1')]);

/** Part 10 file (preamble, File Meta with group length, data set), Explicit VR Little Endian, tags ascending. */
export function writePart10(meta: readonly Element[], dataset: readonly Element[]): Buffer {
  const metaChunks = encodeElements(meta);
  const metaLength = metaChunks.reduce((n, b) => n + b.length, 0);
  const groupLength = encodeElements([['00020000', 'UL', [metaLength]]]);
  return Buffer.concat([PREAMBLE, ...groupLength, ...metaChunks, ...encodeElements(dataset)]);
}

function encodeElements(elements: readonly Element[]): Buffer[] {
  const sorted = [...elements].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const out: Buffer[] = [];
  for (const [tag, vr, values] of sorted) {
    const value = encodeValue(vr, values);
    const long = LONG_VRS.has(vr);
    const header = Buffer.alloc(long ? 12 : 8);
    header.writeUInt16LE(parseInt(tag.slice(0, 4), 16), 0);
    header.writeUInt16LE(parseInt(tag.slice(4), 16), 2);
    header.write(vr, 4, 'latin1');
    if (long) header.writeUInt32LE(value.length, 8);
    else header.writeUInt16LE(value.length, 6);
    out.push(header, value);
  }
  return out;
}

function encodeValue(vr: string, values: readonly ElementValue[]): Buffer {
  switch (vr) {
    case 'US':
    case 'UL': {
      const size = vr === 'US' ? 2 : 4;
      const b = Buffer.alloc(values.length * size);
      values.forEach((v, k) =>
        size === 2 ? b.writeUInt16LE(Number(v), k * 2) : b.writeUInt32LE(Number(v), k * 4),
      );
      return b;
    }
    case 'OB':
    case 'OW': {
      if (values.length === 0) return Buffer.alloc(0);
      const b = Buffer.from(values[0] as ArrayBuffer);
      return b.length % 2 ? Buffer.concat([b, Buffer.alloc(1)]) : b;
    }
    default: {
      if (!values.every((v) => typeof v === 'string' || typeof v === 'number')) {
        throw new Error(`no encoder for VR ${vr}`);
      }
      const b = Buffer.from(values.join('\\'), 'utf8');
      if (b.length % 2 === 0) return b;
      // UIDs pad with NUL, text with a space (PS3.5 6.2).
      return Buffer.concat([b, Buffer.from(vr === 'UI' ? [0] : [0x20])]);
    }
  }
}

/** The same object written by dcmjs: slower, kept as the reference writePart10 is tested against. */
function writeWithDcmjs(meta: readonly Element[], dataset: readonly Element[]): Buffer {
  const dict = (els: readonly Element[]): Record<string, { vr: string; Value: unknown[] }> =>
    Object.fromEntries(els.map(([tag, vr, values]) => [tag, { vr, Value: [...values] }]));
  const part10 = new dcmjsData.DicomDict(dict(meta));
  part10.dict = dict(dataset);
  return Buffer.from(part10.write());
}

/** Window that spans the body (2nd to 99.5th percentile of non-background pixels), like a scanner's auto-window. */
function autoWindow(pixels: Uint16Array): [number, number, string] {
  const hist = new Uint32Array(4096);
  let n = 0;
  for (let k = 0; k < pixels.length; k++) {
    if (pixels[k] > 40) {
      hist[pixels[k]]++;
      n++;
    }
  }
  if (n === 0) return [2048, 4096, 'AUTO'];
  let acc = 0;
  let lo = 0;
  let hi = 4095;
  for (let v = 0; v < 4096; v++) {
    acc += hist[v];
    if (acc < 0.02 * n) lo = v;
    if (acc >= 0.995 * n) {
      hi = v;
      break;
    }
  }
  const width = Math.max(hi - lo, 16);
  return [lo + width / 2, width, 'AUTO'];
}

// ---------------------------------------------------------------------------------------------------------------
// Rendering. Each image row is a line through the phantom: per ellipsoid, the pixels it covers on that row (or,
// for a projection, the pixels whose beam crosses it) form one interval found by solving a quadratic, so the cost
// is rows x ellipsoids plus the pixels actually covered.

interface Prepared {
  cx: number;
  cy: number;
  cz: number;
  cos: number;
  sin: number;
  ia: number;
  ib: number;
  ic: number;
  tissue: number;
  /** Attenuation added relative to what the ellipsoid is painted over (for projections). */
  dmu: number;
}

/** Converts a region phantom to the patient's size and mm. */
function prepare(study: Study): Prepared[] {
  const { region, patient } = study;
  const sx = region.halfFov * patient.scaleX;
  const sy = region.halfFov * patient.scaleY;
  const sz = region.halfLength;
  const out: Prepared[] = [];
  for (const ell of study.phantom) {
    const rad = ((ell.phi ?? 0) * Math.PI) / 180;
    const p: Prepared = {
      cx: ell.c[0] * sx,
      cy: ell.c[1] * sy,
      cz: region.tableZ + ell.c[2] * sz,
      cos: Math.cos(rad),
      sin: Math.sin(rad),
      ia: 1 / (ell.r[0] * sx),
      ib: 1 / (ell.r[1] * sy),
      ic: 1 / (ell.r[2] * sz),
      tissue: TISSUE_NAMES.indexOf(ell.t),
      dmu: 0,
    };
    let under = 0;
    for (const q of out) {
      const c = local(q, [p.cx, p.cy, p.cz], true);
      if (dot(c, c) <= 1) under = TISSUES[TISSUE_NAMES[q.tissue]].mu;
    }
    p.dmu = TISSUES[ell.t].mu - under;
    out.push(p);
  }
  return out;
}

/** A point (or, without translation, a direction) in the ellipsoid's frame, where it is the unit sphere. */
function local(q: Prepared, v: Vec3, isPoint: boolean): Vec3 {
  const dx = isPoint ? v[0] - q.cx : v[0];
  const dy = isPoint ? v[1] - q.cy : v[1];
  const dz = isPoint ? v[2] - q.cz : v[2];
  return [(dx * q.cos + dy * q.sin) * q.ia, (dy * q.cos - dx * q.sin) * q.ib, dz * q.ic];
}

/** Integer i in [0, n) where a*i^2 + 2*b*i + c has the sign of -a (between the roots), as [first, last]. */
function between(a: number, b: number, c: number, n: number): [number, number] | null {
  const disc = b * b - a * c;
  if (disc <= 0 || a === 0) return null;
  const r = sqrt(disc);
  const r1 = (-b - r) / a;
  const r2 = (-b + r) / a;
  const first = max(0, ceil(min(r1, r2)));
  const last = min(n - 1, floor(max(r1, r2)));
  return first <= last ? [first, last] : null;
}

const preparedCache = new WeakMap<Study, Prepared[]>();
function prepared(study: Study): Prepared[] {
  let p = preparedCache.get(study);
  if (!p) {
    p = prepare(study);
    preparedCache.set(study, p);
  }
  return p;
}

/** A CT (stored values, HU + 1024) or MR image of the plane through `origin`. */
function renderSlice(series: Series, origin: Vec3, rng: Rng | null): Uint16Array {
  const { rows, cols, rowDir, colDir, pixelSpacing: ps } = series.geometry;
  const ells = prepared(series.study);
  const lut = tissueLut(series);
  const values = Float64Array.from(lut.values);
  const out = new Uint16Array(rows * cols);
  const labels = new Int8Array(cols);
  const noise = new Float32Array(cols);
  const ct = series.modality === 'CT';
  const sigma = ct ? 5 : 18;
  const halfFov = series.study.region.halfFov;
  const steps = ells.map((q) => local(q, scale(rowDir, ps), false));
  for (let j = 0; j < rows; j++) {
    const rowStart = add(origin, scale(colDir, j * ps));
    labels.fill(-1);
    noiseRow(rng, sigma, noise);
    for (let k = 0; k < ells.length; k++) {
      const q0 = local(ells[k], rowStart, true);
      const q1 = steps[k];
      const span = between(dot(q1, q1), dot(q0, q1), dot(q0, q0) - 1, cols);
      if (span) labels.fill(ells[k].tissue, span[0], span[1] + 1);
    }
    for (let i = 0; i < cols; i++) {
      const label = labels[i];
      let v = label < 0 ? lut.air : values[label];
      if (ct) {
        out[j * cols + i] = clamp12(round(v + noise[i] + 1024));
      } else {
        // Receive-coil shading falls off from the centre; magnitude noise stays positive (Rician-like).
        const x = rowStart[0] + i * ps * rowDir[0];
        const y = rowStart[1] + i * ps * rowDir[1];
        const r2 = (x * x + y * y) / (halfFov * halfFov);
        v *= 1.1 - 0.25 * min(r2, 1);
        out[j * cols + i] = clamp12(round(abs(v + noise[i])));
      }
    }
  }
  return out;
}

function tissueLut(series: Series): { values: number[]; air: number } {
  if (series.modality === 'CT') return { values: TISSUE_NAMES.map((t) => TISSUES[t].hu), air: -1000 };
  const mr = series.mr;
  const w = mr?.w ?? 'T1';
  const values = TISSUE_NAMES.map((t) => {
    const props = TISSUES[t].mr;
    let v: number;
    if (w === 'FLAIR') v = t === 'fluid' ? 90 : props.T2 * 0.8;
    else if (w === 'DWI') v = t === 'lesion' ? 1400 : props.T2 * 0.35;
    else v = props[w];
    if (mr?.fatSat && (t === 'fat' || t === 'marrow')) v *= 0.15;
    return v;
  });
  return { values, air: 0 };
}

/** A radiograph: attenuation integrated along the beam through each ellipsoid, shown bright where dense. */
function renderProjection(series: Series, rng: Rng | null): Uint16Array {
  const { rows, cols, rowDir, colDir, pixelSpacing: ps } = series.geometry;
  const ells = prepared(series.study);
  const beam = cross(rowDir, colDir);
  const region = series.study.region;
  const out = new Uint16Array(rows * cols);
  const att = new Float64Array(cols);
  const noise = new Float32Array(cols);
  // The detector plane passes through the region centre; along the beam, position does not matter.
  const origin = add([0, 0, region.tableZ + (ps * (rows - 1)) / 2], scale(rowDir, (-ps * (cols - 1)) / 2));
  const dirs = ells.map((q) => ({ d: local(q, beam, false), u: local(q, scale(rowDir, ps), false) }));
  for (let j = 0; j < rows; j++) {
    const rowStart = add(origin, scale(colDir, j * ps));
    att.fill(0);
    noiseRow(rng, 14, noise);
    for (let k = 0; k < ells.length; k++) {
      // For the beam through pixel i: |p + t d|^2 = 1 with p = p0 + i u; the chord is 2 sqrt(disc(i)) / (d.d),
      // and disc(i) is itself a quadratic in i.
      const { d, u } = dirs[k];
      const p0 = local(ells[k], rowStart, true);
      const a = dot(d, d);
      const b0 = dot(p0, d);
      const b1 = dot(u, d);
      const c0 = dot(p0, p0) - 1;
      const c1 = dot(p0, u);
      const c2 = dot(u, u);
      const qa = b1 * b1 - a * c2;
      const qb = b0 * b1 - a * c1;
      const qc = b0 * b0 - a * c0;
      const span = between(qa, qb, qc, cols);
      if (!span) continue;
      const dmu = ells[k].dmu;
      for (let i = span[0]; i <= span[1]; i++) {
        const disc = qa * i * i + 2 * qb * i + qc;
        if (disc > 0) att[i] += (dmu * 2 * sqrt(disc)) / a;
      }
    }
    for (let i = 0; i < cols; i++) {
      const v = 120 + 3700 * (1 - exp(-att[i] / 4)) + noise[i];
      out[j * cols + i] = clamp12(round(v));
    }
  }
  return out;
}

const clamp12 = (v: number): number => (v < 0 ? 0 : v > 4095 ? 4095 : v);
const add = (a: Vec3, b: Vec3): Vec3 => [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
const scale = (a: Vec3, k: number): Vec3 => [a[0] * k, a[1] * k, a[2] * k];
const dot = (a: Vec3, b: Vec3): number => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a: Vec3, b: Vec3): Vec3 => [
  a[1] * b[2] - a[2] * b[1],
  a[2] * b[0] - a[0] * b[2],
  a[0] * b[1] - a[1] * b[0],
];

function parseDate(name: string, v: Date | string): Date {
  if (v instanceof Date) {
    if (Number.isNaN(v.getTime())) throw new BadRequestError(`${name} is not a valid date`);
    return new Date(Date.UTC(v.getUTCFullYear(), v.getUTCMonth(), v.getUTCDate()));
  }
  const m = /^(\d{4})-?(\d{2})-?(\d{2})$/.exec(v.trim());
  const d = m ? new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]))) : null;
  if (!d || !m || d.getUTCMonth() !== Number(m[2]) - 1 || d.getUTCDate() !== Number(m[3])) {
    throw new BadRequestError(`${name} must be a date as YYYY-MM-DD or YYYYMMDD`);
  }
  return d;
}
