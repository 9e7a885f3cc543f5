import ExcelJS from 'exceljs';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSheet, readSheetHeader, type SheetRow, sheetFormat } from './sheets';

const dir = mkdtempSync(join(tmpdir(), 'aperture-sheets-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function all(path: string, format: 'csv' | 'xlsx'): Promise<SheetRow[]> {
  const out: SheetRow[] = [];
  for await (const r of readSheet(path, format)) out.push(r);
  return out;
}

describe('reading spreadsheets row by row', () => {
  it('reads a semicolon CSV (Excel in many locales) with commas inside values, a BOM and a blank line', async () => {
    const p = join(dir, 'a.csv');
    writeFileSync(
      p,
      '\ufeffPatient ID;Dose;Notes\r\nP1;59,4;left, upper lobe\r\n\r\nP2;60;"a ""quoted"" note"\r\n',
    );
    expect(await all(p, 'csv')).toEqual([
      { row: 2, cells: { 'Patient ID': 'P1', Dose: '59,4', Notes: 'left, upper lobe' } },
      { row: 3, cells: { 'Patient ID': 'P2', Dose: '60', Notes: 'a "quoted" note' } },
    ]);
  });

  it('reads the first worksheet of an XLSX with numbers, dates and sheet row numbers', async () => {
    const wb = new ExcelJS.Workbook();
    const ws = wb.addWorksheet('one');
    ws.addRow(['Patient ID', 'Dose', 'Start']);
    ws.addRow(['P1', 59.4, new Date(Date.UTC(2020, 2, 2))]);
    ws.addRow([]);
    ws.addRow(['P2', 60, new Date(Date.UTC(2021, 0, 31))]);
    wb.addWorksheet('two').addRow(['ignored']);
    const p = join(dir, 'a.xlsx');
    writeFileSync(p, Buffer.from(await wb.xlsx.writeBuffer()));
    const rows = await all(p, 'xlsx');
    expect(rows.map((r) => r.row)).toEqual([2, 4]);
    expect(rows[0].cells['Patient ID']).toBe('P1');
    expect(rows[0].cells.Dose).toBe(59.4);
    expect((rows[1].cells.Start as Date).toISOString().slice(0, 10)).toBe('2021-01-31');
  });

  it('reads the column names of an XLSX (also one with no data row) and of a CSV, as the import names them', async () => {
    const wb = new ExcelJS.Workbook();
    wb.addWorksheet('one').addRow([
      'Patient ID',
      'T stage',
      { richText: [{ text: 'OS ' }, { text: '(months)' }] },
    ]);
    const p = join(dir, 'header-only.xlsx');
    writeFileSync(p, Buffer.from(await wb.xlsx.writeBuffer()));
    expect(await readSheetHeader(p, 'xlsx')).toEqual(['Patient ID', 'T stage', 'OS (months)']);
    const c = join(dir, 'h.csv');
    writeFileSync(c, 'Patient ID;Dose\r\nP1;60\r\n');
    expect(await readSheetHeader(c, 'csv')).toEqual(['Patient ID', 'Dose']);
    expect(sheetFormat('Sheet.XLSX', 'application/octet-stream')).toBe('xlsx');
    expect(sheetFormat('blob', 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet')).toBe(
      'xlsx',
    );
    expect(sheetFormat('a.csv', 'text/csv')).toBe('csv');
  });

  it('refuses a file that is not XLSX with a 400', async () => {
    const p = join(dir, 'bad.xlsx');
    writeFileSync(p, 'not a zip');
    await expect(all(p, 'xlsx')).rejects.toMatchObject({ status: 400 });
  });
});
