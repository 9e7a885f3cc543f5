/**
 * Boutiques descriptors (https://boutiques.github.io, schema 0.5): validation of a descriptor against the schema,
 * of a run's parameters against the descriptor, and the command line a run executes. Pure: no I/O but the schema
 * file read once.
 *
 * How Aperture maps a descriptor onto a run: the one `File` input is the folder of the run's input series
 * (`/data/in`, one sub-folder per series, read-only); every other input is a parameter the user gives (String,
 * Number, Flag); `output-files` path templates are resolved under the writable working folder `/data/out`, which is
 * also the tool's current directory. After the tool exits, every DICOM file left under `/data/out` is stored back
 * into the project, every other file is kept as a run artefact.
 */
import Ajv, { type ErrorObject } from 'ajv';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Where the sandbox shows the run's inputs and its working folder. */
export const INPUT_DIR = '/data/in';
export const OUTPUT_DIR = '/data/out';

/** One input of a descriptor (the fields Aperture reads). */
export interface BoutiquesInput {
  id: string;
  name: string;
  type: 'String' | 'File' | 'Flag' | 'Number';
  description?: string;
  'value-key'?: string;
  list?: boolean;
  'list-separator'?: string;
  optional?: boolean;
  'command-line-flag'?: string;
  'command-line-flag-separator'?: string;
  'default-value'?: unknown;
  'value-choices'?: Array<string | number>;
  integer?: boolean;
  minimum?: number;
  maximum?: number;
  'exclusive-minimum'?: boolean;
  'exclusive-maximum'?: boolean;
}

/** One output file of a descriptor. */
export interface BoutiquesOutput {
  id: string;
  name: string;
  'value-key'?: string;
  'path-template'?: string;
  optional?: boolean;
  'command-line-flag'?: string;
  'command-line-flag-separator'?: string;
}

/** A descriptor that passed validateDescriptor. */
export interface BoutiquesDescriptor {
  name: string;
  'tool-version': string;
  description: string;
  'command-line': string;
  'schema-version': '0.5';
  'container-image'?: { type: string; image?: string; url?: string; 'working-directory'?: string };
  inputs: BoutiquesInput[];
  'output-files'?: BoutiquesOutput[];
  'environment-variables'?: Array<{ name: string; value: string }>;
  'suggested-resources'?: { 'cpu-cores'?: number; ram?: number; 'walltime-estimate'?: number };
  [k: string]: unknown;
}

/** A descriptor or parameter set that is not acceptable, with every reason found. */
export class DescriptorError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('; '));
  }
}

let validator: ReturnType<Ajv['compile']> | undefined;

function schemaValidator(): ReturnType<Ajv['compile']> {
  if (!validator) {
    const schema = JSON.parse(
      readFileSync(join(__dirname, 'schema', 'descriptor.schema.json'), 'utf8'),
    ) as object;
    // strict: false because the Boutiques schema uses `$id` on nested properties and draft-07 keywords freely.
    validator = new Ajv({ allErrors: true, strict: false }).compile(schema);
  }
  return validator;
}

function ajvProblems(errors: ErrorObject[] | null | undefined): string[] {
  return (errors ?? []).slice(0, 20).map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`);
}

/**
 * Validates a descriptor: the Boutiques JSON Schema first, then the rules the schema cannot say (unique ids,
 * value-keys present in the command line) and Aperture's mapping (exactly one File input, for the input series).
 */
export function validateDescriptor(value: unknown): BoutiquesDescriptor {
  const validate = schemaValidator();
  if (!validate(value)) throw new DescriptorError(ajvProblems(validate.errors));
  const d = value as BoutiquesDescriptor;
  const problems: string[] = [];
  const ids = new Set<string>();
  for (const x of [...d.inputs, ...(d['output-files'] ?? [])]) {
    if (ids.has(x.id)) problems.push(`id '${x.id}' is used twice`);
    ids.add(x.id);
    const key = x['value-key'];
    if (key !== undefined && !d['command-line'].includes(key))
      problems.push(`value-key '${key}' of '${x.id}' does not occur in command-line`);
  }
  const files = d.inputs.filter((i) => i.type === 'File');
  if (files.length !== 1)
    problems.push('exactly one input of type File is needed: it receives the folder of the input series');
  else if (files[0].list) problems.push(`the File input '${files[0].id}' cannot be a list`);
  for (const i of d.inputs) {
    if (i.type === 'Flag' && i.list) problems.push(`Flag input '${i.id}' cannot be a list`);
    if (i.type === 'Flag' && !i['command-line-flag'])
      problems.push(`Flag input '${i.id}' needs a command-line-flag`);
  }
  for (const o of d['output-files'] ?? []) {
    const t = o['path-template'];
    if (t && (t.startsWith('/') || t.split('/').includes('..')))
      problems.push(`path-template of '${o.id}' must stay inside the working folder`);
  }
  if (problems.length) throw new DescriptorError(problems);
  return d;
}

/** The parameters of a run after validation: input id → value (defaults filled in, Flags as booleans). */
export type RunParams = Record<string, string | number | boolean | Array<string | number>>;

function checkScalar(input: BoutiquesInput, v: unknown, where: string, problems: string[]): void {
  if (input.type === 'Number') {
    if (typeof v !== 'number' || !Number.isFinite(v))
      return void problems.push(`${where}: a number is needed`);
    if (input.integer && !Number.isInteger(v)) problems.push(`${where}: an integer is needed`);
    if (input.minimum !== undefined && (input['exclusive-minimum'] ? v <= input.minimum : v < input.minimum))
      problems.push(`${where}: must be ${input['exclusive-minimum'] ? '>' : '>='} ${input.minimum}`);
    if (input.maximum !== undefined && (input['exclusive-maximum'] ? v >= input.maximum : v > input.maximum))
      problems.push(`${where}: must be ${input['exclusive-maximum'] ? '<' : '<='} ${input.maximum}`);
  } else if (input.type === 'String') {
    if (typeof v !== 'string') return void problems.push(`${where}: a string is needed`);
    if (v.length > 1024) problems.push(`${where}: at most 1024 characters`);
    if (/[\0\r\n]/.test(v)) problems.push(`${where}: control characters are not allowed`);
  }
  if (input['value-choices'] && !input['value-choices'].includes(v as string | number))
    problems.push(
      `${where}: must be one of ${input['value-choices'].map((c) => JSON.stringify(c)).join(', ')}`,
    );
}

/**
 * Validates a run's parameters against the descriptor: known ids only, types, choices, bounds, required inputs;
 * the File input is Aperture's to fill (the input series), so a value for it is refused.
 */
export function validateParams(d: BoutiquesDescriptor, given: unknown): RunParams {
  const problems: string[] = [];
  if (given === undefined || given === null) given = {};
  if (typeof given !== 'object' || Array.isArray(given))
    throw new DescriptorError(['params: an object is needed']);
  const values = given as Record<string, unknown>;
  const byId = new Map(d.inputs.map((i) => [i.id, i]));
  for (const k of Object.keys(values)) {
    const input = byId.get(k);
    if (!input) problems.push(`params.${k}: no such input in the descriptor`);
    else if (input.type === 'File') problems.push(`params.${k}: filled by Aperture with the input series`);
  }
  const out: RunParams = {};
  for (const input of d.inputs) {
    if (input.type === 'File') continue;
    const where = `params.${input.id}`;
    const v = values[input.id] ?? input['default-value'];
    if (v === undefined || v === null) {
      if (!input.optional && input.type !== 'Flag') problems.push(`${where}: required`);
      continue;
    }
    if (input.type === 'Flag') {
      if (typeof v !== 'boolean') problems.push(`${where}: true or false`);
      else out[input.id] = v;
      continue;
    }
    if (input.list) {
      if (!Array.isArray(v) || v.length === 0 || v.length > 100) {
        problems.push(`${where}: a list of 1 to 100 values is needed`);
        continue;
      }
      v.forEach((x, n) => checkScalar(input, x, `${where}[${n}]`, problems));
      out[input.id] = v as Array<string | number>;
    } else {
      checkScalar(input, v, where, problems);
      out[input.id] = v as string | number;
    }
  }
  if (problems.length) throw new DescriptorError(problems);
  return out;
}

/** A value as one POSIX shell word. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function withFlag(
  x: { 'command-line-flag'?: string; 'command-line-flag-separator'?: string },
  value: string,
): string {
  const flag = x['command-line-flag'];
  if (!flag) return value;
  return `${flag}${x['command-line-flag-separator'] ?? ' '}${value}`;
}

/**
 * The command line of a run (Boutiques substitution): each input's value-key becomes its flag and shell-quoted
 * value (nothing for an absent optional input or a false Flag); the File input becomes INPUT_DIR; output value-keys
 * become their path templates (themselves substituted, relative to OUTPUT_DIR).
 */
export function buildCommandLine(d: BoutiquesDescriptor, params: RunParams): string {
  const inputValue = new Map<string, string>();
  const raw = new Map<string, string>();
  for (const input of d.inputs) {
    const key = input['value-key'];
    if (!key) continue;
    if (input.type === 'File') {
      inputValue.set(key, withFlag(input, INPUT_DIR));
      raw.set(key, INPUT_DIR);
      continue;
    }
    const v = params[input.id];
    if (v === undefined || v === false) {
      inputValue.set(key, '');
      raw.set(key, '');
    } else if (input.type === 'Flag') {
      inputValue.set(key, input['command-line-flag'] ?? '');
      raw.set(key, '');
    } else {
      const words = Array.isArray(v) ? v.map(String) : [String(v)];
      const joined = words.map(shellQuote).join(input['list-separator'] ?? ' ');
      inputValue.set(key, withFlag(input, joined));
      raw.set(key, words.join('_').replace(/[^A-Za-z0-9._-]/g, '_'));
    }
  }
  // Path templates may name input value-keys (Boutiques): they get the bare value, made safe for a file name.
  const substitute = (template: string) => {
    let s = template;
    for (const [k, v] of raw) s = s.split(k).join(v);
    return s;
  };
  let cmd = d['command-line'];
  for (const o of d['output-files'] ?? []) {
    const key = o['value-key'];
    if (!key || !o['path-template']) continue;
    cmd = cmd.split(key).join(withFlag(o, shellQuote(substitute(o['path-template']))));
  }
  // Longest keys first, so that a key that is a prefix of another does not eat it.
  for (const [k, v] of [...inputValue].sort((a, b) => b[0].length - a[0].length)) cmd = cmd.split(k).join(v);
  return cmd;
}
