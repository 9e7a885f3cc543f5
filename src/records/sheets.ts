/**
 * Spreadsheets in and out, row by row: CSV through csv-parse / csv-stringify, XLSX through exceljs' streaming
 * reader and writer, so a large sheet never sits in memory as a whole.
 */
import { parse } from 'csv-parse';
import { stringify } from 'csv-stringify';
import ExcelJS from 'exceljs';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { PassThrough, type Readable } from 'node:stream';
import { BadRequestError } from '../errors';

export type SheetFormat = 'csv' | 'xlsx';

/** One data row: its row number in the sheet (header = 1) and its cells by column name. */
export interface SheetRow {
  row: number;
  cells: Record<string, unknown>;
}

/** The format of an uploaded sheet, from its file name or media type (CSV unless it says XLSX). */
export function sheetFormat(filename: string, mimeType: string): SheetFormat {
  return /\.xlsx$/i.test(filename) || mimeType.includes('spreadsheetml') ? 'xlsx' : 'csv';
}

/** The column names of a sheet (its first row, as the import reads them), reading no further than that row. */
export async function readSheetHeader(path: string, format: SheetFormat): Promise<string[]> {
  let header: string[] = [];
  try {
    for await (const _row of readSheet(path, format, (h) => (header = h))) break;
  } catch (err) {
    // A CSV sent cut short (its first bytes only) may end inside a quoted value: the header was read before that.
    if (header.length === 0 || format !== 'csv') throw err;
  }
  return header;
}

/**
 * Reads the rows of the first worksheet (XLSX) or the file (CSV); the first row names the columns (handed to
 * onHeader when it is read).
 */
export async function* readSheet(
  path: string,
  format: SheetFormat,
  onHeader?: (header: string[]) => void,
): AsyncGenerator<SheetRow, void, undefined> {
  if (format === 'csv') {
    const parser = createReadStream(path).pipe(
      parse({
        bom: true,
        relax_column_count: true,
        skip_empty_lines: true,
        trim: true,
        delimiter: await sniffDelimiter(path),
      }),
    );
    let header: string[] | undefined;
    let n = 0;
    try {
      for await (const rec of parser as AsyncIterable<string[]>) {
        n++;
        if (!header) {
          header = uniqueHeader(rec);
          onHeader?.(header);
          continue;
        }
        yield { row: n, cells: Object.fromEntries(header.map((h, i) => [h, rec[i]])) };
      }
    } catch (err) {
      if ((err as { code?: string }).code?.startsWith('CSV_'))
        throw new BadRequestError(`the CSV file cannot be read (${(err as { code: string }).code})`);
      throw err;
    }
    return;
  }
  const reader = new ExcelJS.stream.xlsx.WorkbookReader(createReadStream(path), {
    worksheets: 'emit',
    sharedStrings: 'cache',
    styles: 'cache', // dates are numbers with a date style; without styles they read as numbers
    hyperlinks: 'ignore',
    entries: 'ignore',
  });
  try {
    for await (const sheet of reader) {
      let header: string[] | undefined;
      for await (const r of sheet) {
        const values = (r.values as unknown[]).slice(1); // exceljs rows are 1-based
        if (!header) {
          header = uniqueHeader(
            values.map((v) => (v === undefined || v === null ? '' : String(cellText(v)))),
          );
          onHeader?.(header);
          continue;
        }
        if (values.every((v) => v === undefined || v === null || v === '')) continue;
        yield { row: r.number, cells: Object.fromEntries(header.map((h, i) => [h, values[i]])) };
      }
      return; // the first worksheet only
    }
  } catch (err) {
    if (err instanceof BadRequestError) throw err;
    // exceljs / its unzipper say "invalid signature", "end of central directory" and the like for a non-XLSX file.
    throw new BadRequestError('the XLSX file cannot be read');
  }
}

/** The delimiter of a CSV file: whichever of , ; and tab its header line holds most (Excel writes ; in many locales). */
async function sniffDelimiter(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(65536);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const line = buf.subarray(0, bytesRead).toString('utf8').split(/\r?\n/)[0];
    const counts = [',', ';', '\t'].map((d) => [d, line.split(d).length - 1] as const);
    counts.sort((a, b) => b[1] - a[1]);
    return counts[0][1] > 0 ? counts[0][0] : ',';
  } finally {
    await fh.close();
  }
}

function cellText(v: unknown): unknown {
  if (v && typeof v === 'object') {
    const o = v as { text?: unknown; result?: unknown; richText?: Array<{ text: string }> };
    if (o.richText) return o.richText.map((x) => x.text).join('');
    if (o.text !== undefined) return o.text;
    if (o.result !== undefined) return o.result;
  }
  return v;
}

function uniqueHeader(cells: string[]): string[] {
  const seen = new Set<string>();
  return cells.map((c, i) => {
    let h = String(c ?? '').trim() || `column_${i + 1}`;
    while (seen.has(h)) h = `${h}_`;
    seen.add(h);
    return h;
  });
}

/** Streams rows out as CSV (RFC 4180, UTF-8 with a header line). */
export function csvOut(header: string[], rows: AsyncIterable<unknown[]>): Readable {
  const s = stringify({ header: true, columns: header, cast: { boolean: (b) => (b ? 'true' : 'false') } });
  void (async () => {
    try {
      for await (const r of rows) if (!s.write(r)) await new Promise((res) => s.once('drain', res));
      s.end();
    } catch (err) {
      s.destroy(err as Error);
    }
  })();
  return s;
}

/** Streams rows out as one XLSX worksheet. */
export function xlsxOut(sheetName: string, header: string[], rows: AsyncIterable<unknown[]>): Readable {
  const out = new PassThrough();
  const wb = new ExcelJS.stream.xlsx.WorkbookWriter({
    stream: out,
    useStyles: false,
    useSharedStrings: false,
  });
  const ws = wb.addWorksheet(sheetName.slice(0, 31));
  void (async () => {
    try {
      ws.addRow(header).commit();
      for await (const r of rows) ws.addRow(r).commit();
      ws.commit();
      await wb.commit();
    } catch (err) {
      out.destroy(err as Error);
    }
  })();
  return out;
}
