import { cellToValue, compileRecordType, validateRecord } from './schema';
import { changedFields } from './import';
import { shiftIsoDate } from './cohort-records';

const treatment = compileRecordType({
  name: 'Treatment',
  version: 1,
  key: 'treatment_id',
  schema: {
    type: 'object',
    properties: {
      treatment_id: { type: 'string' },
      technique: { type: 'string', enum: ['protons', 'carbon'] },
      dose: { type: 'number', minimum: 0, 'x-unit': 'Gy' },
      start: { type: 'string', format: 'date' },
      done: { type: 'boolean' },
      ct: { type: 'string', 'x-ref': 'study' },
    },
    required: ['treatment_id', 'technique'],
  },
});

describe('record types as JSON Schema', () => {
  it('derives typed fields: number with unit, code list, date, boolean, study reference', () => {
    expect(
      treatment.fields.map(
        (f) => `${f.name}:${f.kind}${f.unit ? `[${f.unit}]` : ''}${f.required ? '!' : ''}`,
      ),
    ).toEqual([
      'treatment_id:text!',
      'technique:code!',
      'dose:number[Gy]',
      'start:date',
      'done:boolean',
      'ct:ref',
    ]);
  });

  it('names the field of every validation problem', () => {
    const errs = validateRecord(treatment, { technique: 'x', dose: -1, start: '2020-02-30', extra: 1 });
    expect(errs.map((e) => e.field).sort()).toEqual(['dose', 'extra', 'start', 'technique', 'treatment_id']);
    expect(errs.find((e) => e.field === 'technique')?.message).toBe('must be one of protons, carbon');
    expect(validateRecord(treatment, { treatment_id: 'a', technique: 'carbon', dose: 3 })).toEqual([]);
  });

  it('refuses unsupported definitions with the path of every problem', () => {
    let message = '';
    try {
      compileRecordType({
        name: 'X',
        version: 1,
        key: 'k',
        schema: {
          type: 'object',
          properties: { k: { type: 'string' }, o: { type: 'object' }, Bad: { type: 'string' } },
          oneOf: [],
        },
      });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message.split('; ').sort()).toEqual([
      'key: k must be required',
      'schema.oneOf: not supported',
      'schema.properties.Bad: field names are lower case letters, digits and _',
      'schema.properties.o.type: number, integer, string or boolean',
    ]);
  });

  it('reads spreadsheet cells into field values (decimal comma, local dates, yes/no)', () => {
    const f = (name: string) => treatment.fields.find((x) => x.name === name)!;
    expect(cellToValue(f('dose'), '59,4')).toBe(59.4);
    expect(cellToValue(f('start'), '02.03.2020')).toBe('2020-03-02');
    expect(cellToValue(f('start'), '20200302')).toBe('2020-03-02');
    expect(cellToValue(f('start'), new Date(Date.UTC(2020, 2, 2)))).toBe('2020-03-02');
    expect(cellToValue(f('done'), 'Yes')).toBe(true);
    expect(cellToValue(f('done'), 'maybe')).toBe('maybe');
    expect(cellToValue(f('treatment_id'), 12)).toBe('12');
    expect(cellToValue(f('dose'), '  ')).toBeUndefined();
  });

  it('reports changed fields only, and shifts ISO dates like DICOM DA', () => {
    expect(changedFields({ a: 1, b: 'x' }, { b: 'x', a: 2, c: true })).toEqual(['a', 'c']);
    expect(shiftIsoDate('2020-03-01', -1)).toBe('2020-02-29');
    expect(shiftIsoDate('not a date', 3)).toBeUndefined();
  });
});
