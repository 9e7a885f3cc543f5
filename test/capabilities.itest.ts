import { type Browser, chromium } from 'playwright-core';
import { WADL_MEDIA_TYPE, WADL_NAMESPACE } from '../src/dicomweb/capabilities';
import { DICOMWEB_ROUTES } from '../src/dicomweb/routes';
import { ensureProject } from '../src/index-db/projects';
import { resetStack, startGateway, type TestGateway } from './helpers/gateway';

/*
 * PS3.18 §8.9 Retrieve Capabilities: OPTIONS on each DICOMweb root answers a WADL Capabilities Description
 * (Annex H) generated from the route table. The document is parsed by a real XML parser (Chromium's DOMParser)
 * and checked against the WADL 2009/02 structure the standard's example follows.
 */

jest.setTimeout(300_000);

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** What the browser reads out of a WADL document. */
interface Reading {
  parseError?: string;
  rootName: string;
  rootNamespace: string | null;
  resourcesCount: number;
  base: string | null;
  /** `METHOD /path` for every method, path joined from the nested resource paths. */
  methods: string[];
  /** Violations of the WADL element structure. */
  structure: string[];
}

/** The few DOM members the check uses (the test project compiles without the DOM library). */
interface El {
  localName: string;
  tagName: string;
  namespaceURI: string | null;
  children: ArrayLike<El>;
  textContent: string | null;
  getAttribute(name: string): string | null;
}
type Parser = new () => {
  parseFromString(
    text: string,
    type: string,
  ): { documentElement: El; getElementsByTagName(n: string): ArrayLike<El> };
};

let gw: TestGateway;
let browser: Browser;

beforeAll(async () => {
  await resetStack();
  gw = await startGateway();
  await ensureProject(gw.services.db, { id: 'demo', name: 'Demo' });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
  });
});
afterAll(async () => {
  await browser?.close();
  await gw?.close();
});

async function read(xml: string): Promise<Reading> {
  const page = await browser.newPage();
  try {
    return await page.evaluate(
      ({ text, ns }) => {
        const DomParser = (globalThis as unknown as { DOMParser: Parser }).DOMParser;
        const doc = new DomParser().parseFromString(text, 'application/xml');
        const error = doc.getElementsByTagName('parsererror')[0];
        const root = doc.documentElement;
        const structure: string[] = [];
        const children = (el: El) => Array.from(el.children);
        const allowed: Record<string, string[]> = {
          application: ['doc', 'resources'],
          resources: ['doc', 'resource'],
          resource: ['doc', 'param', 'method', 'resource'],
          method: ['doc', 'request', 'response'],
          request: ['doc', 'param', 'representation'],
          response: ['doc', 'param', 'representation'],
          param: ['doc', 'option'],
          option: ['doc'],
          representation: ['doc', 'param'],
          doc: [],
        };
        // WADL's schema fixes the order of children: doc first, then params, then the rest.
        const rank: Record<string, number> = {
          doc: 0,
          param: 1,
          option: 1,
          request: 1,
          representation: 2,
          response: 2,
          method: 2,
          resource: 2,
        };
        const walk = (el: El) => {
          if (el.namespaceURI !== ns) structure.push(`${el.tagName} outside the WADL namespace`);
          const kids = children(el);
          let last = -1;
          for (const k of kids) {
            if (!(allowed[el.localName] ?? []).includes(k.localName))
              structure.push(`${k.localName} inside ${el.localName}`);
            const r = rank[k.localName] ?? 0;
            if (r < last) structure.push(`${k.localName} after a later kind of element in ${el.localName}`);
            last = Math.max(last, r);
            walk(k);
          }
          if (el.localName === 'method' && (!el.getAttribute('name') || !el.getAttribute('id')))
            structure.push('method without name or id');
          if (el.localName === 'resource' && !el.getAttribute('path'))
            structure.push('resource without path');
          if (el.localName === 'representation' && !el.getAttribute('mediaType'))
            structure.push('representation without mediaType');
          if (el.localName === 'response' && !/^\d{3}( \d{3})*$/.test(el.getAttribute('status') ?? ''))
            structure.push('response without a status');
          if (
            el.localName === 'param' &&
            !['template', 'query', 'header', 'matrix', 'plain'].includes(el.getAttribute('style') ?? '')
          )
            structure.push('param without a WADL style');
        };
        walk(root);
        const methods: string[] = [];
        const collect = (el: El, prefix: string) => {
          for (const k of children(el)) {
            if (k.localName === 'resource') collect(k, `${prefix}/${k.getAttribute('path')}`);
            if (k.localName === 'method') methods.push(`${k.getAttribute('name')} ${prefix}`);
          }
        };
        const resources = children(root).filter((k) => k.localName === 'resources');
        if (resources[0]) collect(resources[0], '');
        return {
          parseError: error?.textContent ?? undefined,
          rootName: root.localName,
          rootNamespace: root.namespaceURI,
          resourcesCount: resources.length,
          base: resources[0]?.getAttribute('base') ?? null,
          methods,
          structure,
        };
      },
      { text: xml, ns: WADL_NAMESPACE },
    );
  } finally {
    await page.close();
  }
}

/** The route table's entries as WADL paths. */
function expected(readOnly: boolean): string[] {
  return DICOMWEB_ROUTES.filter((r) => !(readOnly && r.writes))
    .map((r) => `${r.method} ${r.path.replace(/[:*]([A-Za-z]+)/g, '{$1}')}`)
    .sort();
}

describe('Retrieve Capabilities (PS3.18 §8.9)', () => {
  it.each([
    ['the project root', '/projects/demo/dicom-web', false],
    ['the union root', '/dicom-web', true],
  ])(
    'OPTIONS on %s answers a well-formed WADL naming exactly the routes it serves',
    async (_n, root, readOnly) => {
      const res = await fetch(gw.url + root, { method: 'OPTIONS', headers: { accept: WADL_MEDIA_TYPE } });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toContain(WADL_MEDIA_TYPE);
      const reading = await read(await res.text());
      expect(reading.parseError).toBeUndefined();
      expect([reading.rootName, reading.rootNamespace, reading.resourcesCount]).toEqual([
        'application',
        WADL_NAMESPACE,
        1,
      ]);
      expect(reading.base).toBe(gw.url + root);
      expect(reading.structure).toEqual([]);
      expect(reading.methods.sort()).toEqual(expected(readOnly));
    },
  );

  it('lists STOW only where it is served: the read-only root names no POST', async () => {
    const res = await fetch(`${gw.url}/dicom-web`, { method: 'OPTIONS' });
    const reading = await read(await res.text());
    expect(reading.methods.filter((m) => m.startsWith('POST '))).toEqual([]);
    expect(expected(false).filter((m) => m.startsWith('POST ')).length).toBeGreaterThan(0);
  });

  it('tells a malformed document apart (the parser check is real)', async () => {
    const reading = await read(
      '<application xmlns="http://wadl.dev.java.net/2009/02"><resources></application>',
    );
    expect(reading.parseError).toBeDefined();
  });
});
