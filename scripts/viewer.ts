/**
 * The published OHIF viewer (npm `@ohif/app`, its prebuilt `dist/`) served locally and pointed at the gateway.
 *
 *   npx tsx scripts/viewer.ts --gateway http://127.0.0.1:8080 --project demo [--port 3000]
 *
 * then open http://127.0.0.1:3000/. The gateway must allow the viewer's origin: CORS_ORIGINS=http://127.0.0.1:3000.
 *
 * Why fetched, not a devDependency: @ohif/app is a ~50 MB tarball (~200 MB unpacked) whose 39 runtime dependencies
 * (React, cornerstone codecs...) are already bundled into dist/; installing it would pull all of them into
 * node_modules for nothing. `npm pack` fetches just the tarball (integrity-checked by npm against the registry)
 * into .stack/ (git-ignored), once. OHIF_DIST points at an existing dist/ instead (offline use).
 */
import { execFileSync } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { ohifConfig } from '../src/http/viewer';

/** The OHIF release the check was written against; the config shape below follows its app-config.js. */
export const OHIF_VERSION = '3.13.2';

const ROOT = resolve(__dirname, '..');

/** Path of OHIF's dist/ folder, fetching the package tarball with `npm pack` the first time. */
export function ensureOhifDist(version = OHIF_VERSION): string {
  if (process.env.OHIF_DIST) return process.env.OHIF_DIST;
  const dir = join(ROOT, '.stack', `ohif-${version}`);
  const dist = join(dir, 'package', 'dist');
  if (existsSync(join(dist, 'index.html'))) return dist;
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, 'download');
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  execFileSync('npm', ['pack', `@ohif/app@${version}`, '--pack-destination', tmp, '--silent'], {
    stdio: ['ignore', 'ignore', 'inherit'],
    timeout: 10 * 60_000,
  });
  const tarball = readdirSync(tmp).find((f) => f.endsWith('.tgz'));
  if (!tarball) throw new Error('npm pack produced no tarball');
  execFileSync('tar', ['-xzf', join(tmp, tarball), '-C', tmp]);
  rmSync(join(dir, 'package'), { recursive: true, force: true });
  renameSync(join(tmp, 'package'), join(dir, 'package'));
  rmSync(tmp, { recursive: true, force: true });
  if (!existsSync(join(dist, 'index.html'))) throw new Error(`@ohif/app@${version} has no dist/index.html`);
  return dist;
}

/** OHIF's runtime configuration with one DICOMweb data source: the gateway root given. */
export function appConfig(dicomwebRoot: string): string {
  const root = JSON.stringify(dicomwebRoot.replace(/\/+$/, ''));
  return `window.config = ${ohifConfig('null', root)};\n`;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

/** A running viewer: its origin (for CORS_ORIGINS) and how to stop it. */
export interface ViewerServer {
  url: string;
  /** Points the viewer at a DICOMweb root (the gateway may start after the viewer, once its origin is known). */
  setDicomwebRoot(root: string): void;
  close(): Promise<void>;
}

/** Serves dist/ on 127.0.0.1 (ephemeral port by default): static files, app-config.js, SPA fallback. */
export async function serveViewer(dist: string, dicomwebRoot = '', port = 0): Promise<ViewerServer> {
  let config = appConfig(dicomwebRoot);
  const base = resolve(dist);
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    if (path === '/app-config.js') {
      res.writeHead(200, { 'content-type': TYPES['.js'], 'cache-control': 'no-store' });
      res.end(config);
      return;
    }
    let file = normalize(join(base, path));
    if (!file.startsWith(base + sep) && file !== base) {
      res.writeHead(403).end();
      return;
    }
    // Client-side routes (/viewer, /viewer?StudyInstanceUIDs=...) are answered by the app itself.
    if (!existsSync(file) || statSync(file).isDirectory()) file = join(base, 'index.html');
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
  const { port: actual } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${actual}`,
    setDicomwebRoot(root: string) {
      config = appConfig(root);
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

function arg(name: string, def?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
}

if (require.main === module) {
  const gateway = (arg('gateway', 'http://127.0.0.1:8080') as string).replace(/\/+$/, '');
  const project = arg('project');
  const root = project
    ? `${gateway}/projects/${encodeURIComponent(project)}/dicom-web`
    : `${gateway}/dicom-web`;
  const dist = ensureOhifDist();
  void serveViewer(dist, root, Number(arg('port', '3000'))).then((v) => {
    console.log(`OHIF ${OHIF_VERSION} at ${v.url}/ reading ${root}`);
    console.log(`the gateway needs CORS_ORIGINS=${v.url}`);
  });
}
