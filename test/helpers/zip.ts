/** Reading ZIP archives the gateway answered, in tests (yauzl, as the gateway's own ZIP import uses). */
import yauzl from 'yauzl';

/** Every entry of a ZIP in memory: path → bytes. */
export async function unzip(buf: Buffer): Promise<Map<string, Buffer>> {
  const zip = await new Promise<yauzl.ZipFile>((res, rej) =>
    yauzl.fromBuffer(buf, { lazyEntries: true }, (e, z) => (e ? rej(e) : res(z))),
  );
  const out = new Map<string, Buffer>();
  await new Promise<void>((res, rej) => {
    zip.on('entry', (entry: yauzl.Entry) => {
      zip.openReadStream(entry, (err, s) => {
        if (err) return rej(err);
        const chunks: Buffer[] = [];
        s.on('data', (c: Buffer) => chunks.push(c));
        s.on('end', () => {
          out.set(entry.fileName, Buffer.concat(chunks));
          zip.readEntry();
        });
      });
    });
    zip.on('end', () => res());
    zip.on('error', rej);
    zip.readEntry();
  });
  return out;
}
