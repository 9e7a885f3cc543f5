import { MetadataCache, metadataCacheFor } from './metadata-cache';

const answer = (n: number, fill = 1) => ({
  body: Buffer.alloc(n, fill),
  contentType: 'application/dicom+json',
});

describe('metadata answer cache', () => {
  it('never holds more bytes than its bound, dropping the least recently used answers first', () => {
    const cache = new MetadataCache(1000, 400);
    cache.set('a', answer(300));
    cache.set('b', answer(300));
    cache.set('c', answer(300));
    expect(cache.get('a')).toBeDefined(); // a is now the most recently used
    cache.set('d', answer(300));
    expect(cache.get('b')).toBeUndefined();
    expect(cache.get('a')).toBeDefined();
    expect(cache.get('c')).toBeDefined();
    expect(cache.get('d')).toBeDefined();
    expect(cache.size).toBeLessThanOrEqual(1000);
  });

  it('does not keep an answer larger than one entry may be', () => {
    const cache = new MetadataCache(1000, 400);
    cache.set('big', answer(401));
    expect(cache.get('big')).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it('keeps a streamed answer only once it ended, and stops collecting one that outgrows an entry', () => {
    const cache = new MetadataCache(1000, 400);
    const ok = cache.collector('ok', 'multipart/related; boundary=x');
    ok.push(Buffer.from('[{"a"'));
    expect(cache.get('ok')).toBeUndefined();
    ok.push(Buffer.from(':1}]'));
    ok.done();
    expect(cache.get('ok')).toEqual({
      body: Buffer.from('[{"a":1}]'),
      contentType: 'multipart/related; boundary=x',
    });
    const tooBig = cache.collector('big', 'application/dicom+json');
    for (let i = 0; i < 5; i++) tooBig.push(Buffer.alloc(100));
    tooBig.done();
    expect(cache.get('big')).toBeUndefined();
  });

  it('replacing an answer under the same key does not count it twice', () => {
    const cache = new MetadataCache(1000, 400);
    cache.set('a', answer(300, 1));
    cache.set('a', answer(300, 2));
    expect(cache.size).toBe(301);
    expect(cache.get('a')?.body[0]).toBe(2);
  });

  it('is off when METADATA_CACHE_BYTES is 0, and one per configuration otherwise', () => {
    expect(metadataCacheFor({ METADATA_CACHE_BYTES: 0 })).toBeUndefined();
    const config = { METADATA_CACHE_BYTES: 4096 };
    expect(metadataCacheFor(config)).toBe(metadataCacheFor(config));
    expect(metadataCacheFor(config)?.maxEntryBytes).toBe(512);
  });
});
