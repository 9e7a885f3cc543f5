import { unzip } from 'fflate';
import { useRef, useState, type DragEvent } from 'react';
import { dicomwebRoot, explain, gatewayFetchAny, getJson, type DicomJson, UserFacingError } from '../api';
import { failureReasonText, sniffPart10 } from '../dicom-file';
import { ErrorPanel } from '../components';

/** STOW-RS requests carry at most this many files or bytes, so one refusal costs little and progress moves. */
const BATCH_FILES = 50;
const BATCH_BYTES = 16 * 1024 * 1024;

type Outcome = 'pending' | 'stored' | 'already' | 'failed' | 'skipped';
interface Item {
  path: string;
  blob: Blob;
  uid?: string;
  outcome: Outcome;
  reason?: string;
}

/** A dropped folder, walked recursively (the entries API hands out directories in chunks). */
async function walkEntry(entry: FileSystemEntry, prefix: string, out: Array<{ path: string; blob: Blob }>) {
  if (entry.isFile) {
    const file = await new Promise<File>((res, rej) => (entry as FileSystemFileEntry).file(res, rej));
    out.push({ path: `${prefix}${entry.name}`, blob: file });
    return;
  }
  const reader = (entry as FileSystemDirectoryEntry).createReader();
  for (;;) {
    const chunk = await new Promise<FileSystemEntry[]>((res, rej) => reader.readEntries(res, rej));
    if (chunk.length === 0) break;
    for (const e of chunk) await walkEntry(e, `${prefix}${entry.name}/`, out);
  }
}

function unzipBlob(zip: Blob, name: string): Promise<Array<{ path: string; blob: Blob }>> {
  return zip.arrayBuffer().then(
    (buf) =>
      new Promise((resolve, reject) =>
        unzip(new Uint8Array(buf), (err, files) => {
          if (err)
            return reject(
              new UserFacingError(
                0,
                `${name} is not a readable ZIP file.`,
                'Check the file and drop it again.',
              ),
            );
          resolve(
            Object.entries(files)
              .filter(([p]) => !p.endsWith('/'))
              .map(([p, bytes]) => ({
                path: `${name}/${p}`,
                blob: new Blob([bytes as Uint8Array<ArrayBuffer>]),
              })),
          );
        }),
      ),
  );
}

/** Sorts the files: Part-10 files are queued with their SOP Instance UID, everything else is skipped and listed. */
async function classify(files: Array<{ path: string; blob: Blob }>): Promise<Item[]> {
  const expanded: Array<{ path: string; blob: Blob }> = [];
  for (const f of files) {
    if (/\.zip$/i.test(f.path)) expanded.push(...(await unzipBlob(f.blob, f.path)));
    else expanded.push(f);
  }
  const items: Item[] = [];
  for (const f of expanded) {
    const head = new Uint8Array(await f.blob.slice(0, 64 * 1024).arrayBuffer());
    const sniffed = sniffPart10(head);
    items.push(
      sniffed
        ? { path: f.path, blob: f.blob, uid: sniffed.sopInstanceUid, outcome: 'pending' }
        : { path: f.path, blob: f.blob, outcome: 'skipped', reason: 'Not a DICOM file (no DICM marker).' },
    );
  }
  return items;
}

function multipart(items: Item[]): { body: Blob; type: string } {
  const boundary = `aperture-${crypto.randomUUID()}`;
  const parts: BlobPart[] = [];
  for (const it of items) {
    parts.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, it.blob, '\r\n');
  }
  parts.push(`--${boundary}--\r\n`);
  return { body: new Blob(parts), type: `multipart/related; type="application/dicom"; boundary=${boundary}` };
}

const uidOf = (d: DicomJson) => String(d['00081155']?.Value?.[0] ?? '');
const seq = (d: DicomJson, tag: string) => (d[tag]?.Value ?? []) as DicomJson[];

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} kB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** Drag a folder or a ZIP (or pick one), send it by STOW-RS in batches, and see each file's outcome in words. */
export function UploadPage({ project }: { project: string }) {
  const root = dicomwebRoot(project);
  const [items, setItems] = useState<Item[]>([]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const [progress, setProgress] = useState({
    files: 0,
    bytes: 0,
    totalFiles: 0,
    totalBytes: 0,
    started: 0,
    now: 0,
  });
  const folderInput = useRef<HTMLInputElement>(null);

  const update = () => setItems((xs) => [...xs]);

  /** Which of these UIDs the project holds already (QIDO-RS with a UID list, PS3.18 §8.3.4.1). */
  async function present(uids: string[]): Promise<Set<string>> {
    if (uids.length === 0) return new Set();
    const q = new URLSearchParams({
      SOPInstanceUID: uids.join(','),
      includefield: '00080018',
      limit: String(uids.length),
    });
    const found = await getJson<DicomJson[]>(`${root}/instances?${q.toString()}`, 'application/dicom+json');
    return new Set(found.map((d) => String(d['00080018']?.Value?.[0] ?? '')));
  }

  async function sendBatch(batch: Item[]): Promise<Item[]> {
    const uids = batch.map((b) => b.uid).filter((u): u is string => Boolean(u));
    const before = await present(uids).catch(() => new Set<string>());
    const { body, type } = multipart(batch);
    try {
      const res = await gatewayFetchAny(`${root}/studies`, {
        method: 'POST',
        body,
        headers: { 'Content-Type': type, Accept: 'application/dicom+json' },
      });
      // 400 and 409 still carry the per-file answer; anything else fails the whole batch with its reason.
      if (![200, 202, 400, 409].includes(res.status)) throw await explain(res);
      return record(batch, before, (await res.json().catch(() => ({}))) as DicomJson);
    } catch (err) {
      const why = err instanceof UserFacingError ? `${err.message} ${err.advice}` : 'The upload failed.';
      for (const it of batch) Object.assign(it, { outcome: 'failed', reason: why });
      return [];
    }
  }

  function record(batch: Item[], before: Set<string>, answer: DicomJson): Item[] {
    const stored = new Set(seq(answer, '00081199').map(uidOf));
    const failed = new Map(seq(answer, '00081198').map((d) => [uidOf(d), Number(d['00081197']?.Value?.[0])]));
    const unmatched: Item[] = [];
    for (const it of batch) {
      if (it.uid && stored.has(it.uid)) {
        it.outcome = before.has(it.uid) ? 'already' : 'stored';
        it.reason = undefined;
      } else if (it.uid && failed.has(it.uid)) {
        it.outcome = 'failed';
        it.reason = failureReasonText(failed.get(it.uid));
      } else if (batch.length === 1) {
        it.outcome = 'failed';
        it.reason = failureReasonText([...failed.values()][0]);
      } else unmatched.push(it);
    }
    // A file the answer does not name (its UIDs could not be read) is sent again alone to learn its own reason.
    return unmatched;
  }

  async function run(queue: Item[]) {
    setBusy(true);
    setError(undefined);
    const totalBytes = queue.reduce((n, it) => n + it.blob.size, 0);
    const p = {
      files: 0,
      bytes: 0,
      totalFiles: queue.length,
      totalBytes,
      started: Date.now(),
      now: Date.now(),
    };
    setProgress({ ...p });
    const pending = [...queue];
    const advance = (done: Item[]) => {
      p.files += done.length;
      p.bytes += done.reduce((n, it) => n + it.blob.size, 0);
      p.now = Date.now();
      setProgress({ ...p });
      update();
    };
    try {
      while (pending.length) {
        const batch: Item[] = [];
        let size = 0;
        while (
          pending.length &&
          batch.length < BATCH_FILES &&
          (batch.length === 0 || size + pending[0].blob.size <= BATCH_BYTES)
        ) {
          const it = pending.shift()!;
          size += it.blob.size;
          batch.push(it);
        }
        const again = await sendBatch(batch);
        advance(batch.filter((b) => !again.includes(b)));
        // Files the answer did not name (their UIDs could not be read) go again alone, to learn their own reason.
        for (const single of again) {
          const rest = await sendBatch([single]);
          if (rest.length) Object.assign(single, { outcome: 'failed', reason: failureReasonText(undefined) });
          advance([single]);
        }
      }
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
      update();
    }
  }

  async function accept(files: Array<{ path: string; blob: Blob }>) {
    setError(undefined);
    try {
      const classified = await classify(files);
      setItems(classified);
      await run(classified.filter((it) => it.outcome === 'pending'));
    } catch (err) {
      setError(err);
    }
  }

  const onDrop = async (e: DragEvent) => {
    e.preventDefault();
    const out: Array<{ path: string; blob: Blob }> = [];
    const entries = Array.from(e.dataTransfer.items)
      .map((i) => i.webkitGetAsEntry())
      .filter((x): x is FileSystemEntry => Boolean(x));
    for (const en of entries) await walkEntry(en, '', out);
    await accept(out);
  };

  const onPick = async (list: FileList | null) => {
    if (!list) return;
    await accept(Array.from(list).map((f) => ({ path: f.webkitRelativePath || f.name, blob: f })));
  };

  const count = (o: Outcome) => items.filter((it) => it.outcome === o).length;
  const failedItems = items.filter((it) => it.outcome === 'failed');
  const elapsedS = Math.max(0.001, (progress.now - progress.started) / 1000);
  const rate = progress.bytes / elapsedS;
  const leftS = rate > 0 ? (progress.totalBytes - progress.bytes) / rate : 0;
  const order: Outcome[] = ['failed', 'skipped', 'pending', 'stored', 'already'];
  const label: Record<Outcome, string> = {
    pending: 'waiting',
    stored: 'stored',
    already: 'already there',
    failed: 'failed',
    skipped: 'skipped',
  };
  return (
    <section>
      <h1>Upload to {project}</h1>
      <div
        className="dropzone"
        id="dropzone"
        onDragOver={(e) => e.preventDefault()}
        onDrop={(e) => void onDrop(e)}
      >
        <p>Drop a folder or a ZIP of DICOM files here, or</p>
        <label className="button">
          Choose a folder
          <input
            ref={folderInput}
            id="pick-folder"
            type="file"
            multiple
            {...{ webkitdirectory: '' }}
            disabled={busy}
            onChange={(e) => void onPick(e.target.files)}
          />
        </label>{' '}
        <label className="button">
          Choose files or a ZIP
          <input
            id="pick-files"
            type="file"
            multiple
            disabled={busy}
            onChange={(e) => void onPick(e.target.files)}
          />
        </label>
      </div>
      {error !== undefined && <ErrorPanel error={error} />}
      {progress.totalFiles > 0 && (
        <div id="upload-progress">
          <progress max={progress.totalBytes || 1} value={progress.bytes} />
          <p>
            {progress.files} of {progress.totalFiles} files, {formatBytes(progress.bytes)} of{' '}
            {formatBytes(progress.totalBytes)}, {formatBytes(rate)}/s
            {busy ? `, about ${Math.ceil(leftS)} s left` : ''}
          </p>
        </div>
      )}
      {items.length > 0 && !busy && (
        <p id="upload-summary">
          <span data-count="stored">{count('stored')}</span> stored,{' '}
          <span data-count="already">{count('already')}</span> already there,{' '}
          <span data-count="failed">{count('failed')}</span> failed,{' '}
          <span data-count="skipped">{count('skipped')}</span> skipped (not DICOM).{' '}
          {failedItems.length > 0 && (
            <button
              id="retry-failed"
              onClick={() =>
                void run(
                  failedItems.map((it) =>
                    Object.assign(it, { outcome: 'pending' as Outcome, reason: undefined }),
                  ),
                )
              }
            >
              Retry the {failedItems.length} failed
            </button>
          )}
        </p>
      )}
      {items.length > 0 && (
        <table id="upload-results">
          <thead>
            <tr>
              <th>File</th>
              <th>Outcome</th>
              <th>Why</th>
            </tr>
          </thead>
          <tbody>
            {[...items]
              .sort((a, b) => order.indexOf(a.outcome) - order.indexOf(b.outcome))
              .slice(0, 1000)
              .map((it) => (
                <tr key={it.path} data-file={it.path} data-outcome={it.outcome}>
                  <td>{it.path}</td>
                  <td>{label[it.outcome]}</td>
                  <td>{it.reason ?? ''}</td>
                </tr>
              ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
