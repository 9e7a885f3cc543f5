/**
 * De-identifier throughput on one file, in this process (no archive): `npx tsx scripts/deid-speed.ts FILE [mod]`.
 * The cohort benchmark against Orthanc's /anonymize lives in bench/; this isolates the pure part.
 */
import { readFileSync } from 'node:fs';
import { BASIC_PROFILE, type DeidResult, deidentify, leakCheck } from '../src/dicom/deid';

const file = process.argv[2];
if (!file) throw new Error('usage: npx tsx scripts/deid-speed.ts FILE [mod]');
const src = readFileSync(file);
const keys = { uidSecret: Buffer.from('bench'), patientName: 'P^1', patientId: 'P1', dateOffsetDays: -30 };
const options =
  process.argv[3] === 'mod'
    ? { ...BASIC_PROFILE, retainLongitudinalModifiedDates: true, cleanDescriptors: true }
    : BASIC_PROFILE;
for (let i = 0; i < 20; i++) deidentify(src, options, keys);
const n = 300;
let t = process.hrtime.bigint();
let last = deidentify(src, options, keys) as DeidResult;
for (let i = 0; i < n; i++) last = deidentify(src, options, keys) as DeidResult;
const deid = Number(process.hrtime.bigint() - t) / 1e6 / n;
t = process.hrtime.bigint();
for (let i = 0; i < n; i++) leakCheck(last.bytes, last.identifying);
const leak = Number(process.hrtime.bigint() - t) / 1e6 / n;
const rate = (1000 / (deid + leak)).toFixed(0);
console.log(
  `${file}: deidentify ${deid.toFixed(2)} ms, leakCheck ${leak.toFixed(2)} ms, ${rate} instances/s on one core`,
);
