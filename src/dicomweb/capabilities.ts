/**
 * PS3.18 §8.9 Retrieve Capabilities: `OPTIONS` on a DICOMweb root answers a Capabilities Description, a WADL
 * document (PS3.18 Annex H, WADL 2009/02) with one `resources` element whose base is the root and a `resource`
 * tree of every route the root serves, generated from the route table (dicomweb/routes.ts) so that it names
 * exactly what is mounted.
 */
import type { Context } from 'koa';
import { dicomwebRoot } from '../http/context';
import type { Services } from '../services';
import { type DicomwebRoute, routesOfRoot } from './routes';

export const WADL_MEDIA_TYPE = 'application/vnd.sun.wadl+xml';
export const WADL_NAMESPACE = 'http://wadl.dev.java.net/2009/02';

interface ResourceNode {
  segment: string;
  methods: DicomwebRoute[];
  children: Map<string, ResourceNode>;
}

function xmlAttr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A router path segment as a WADL path: `:study` and `*path` are templates. */
function wadlSegment(segment: string): { path: string; template?: string } {
  if (segment.startsWith(':') || segment.startsWith('*')) {
    const name = segment.slice(1);
    return { path: `{${name}}`, template: name };
  }
  return { path: segment };
}

function treeOf(routes: readonly DicomwebRoute[]): ResourceNode {
  const root: ResourceNode = { segment: '', methods: [], children: new Map() };
  for (const route of routes) {
    let node = root;
    for (const segment of route.path.split('/').filter(Boolean)) {
      let child = node.children.get(segment);
      if (!child) {
        child = { segment, methods: [], children: new Map() };
        node.children.set(segment, child);
      }
      node = child;
    }
    node.methods.push(route);
  }
  return root;
}

function methodXml(route: DicomwebRoute, indent: string): string {
  const i1 = indent + '  ';
  const i2 = i1 + '  ';
  const lines = [`${indent}<method name="${route.method}" id="${xmlAttr(route.id)}">`];
  lines.push(`${i1}<doc title="PS3.18 §${xmlAttr(route.section)}"/>`);
  lines.push(`${i1}<request>`);
  lines.push(`${i2}<param name="Accept" style="header" default="${xmlAttr(route.produces[0])}">`);
  for (const m of route.produces) lines.push(`${i2}  <option value="${xmlAttr(m)}"/>`);
  lines.push(`${i2}</param>`);
  for (const m of route.consumes ?? []) lines.push(`${i2}<representation mediaType="${xmlAttr(m)}"/>`);
  lines.push(`${i1}</request>`);
  lines.push(`${i1}<response status="200">`);
  for (const m of route.produces) lines.push(`${i2}<representation mediaType="${xmlAttr(m)}"/>`);
  lines.push(`${i1}</response>`);
  lines.push(`${indent}</method>`);
  return lines.join('\n');
}

function resourceXml(node: ResourceNode, indent: string): string {
  const { path, template } = wadlSegment(node.segment);
  const inner = indent + '  ';
  const lines = [`${indent}<resource path="${xmlAttr(path)}">`];
  if (template) {
    lines.push(
      `${inner}<param name="${xmlAttr(template)}" style="template" type="xsd:string" required="true"/>`,
    );
  }
  for (const m of node.methods) lines.push(methodXml(m, inner));
  for (const child of node.children.values()) lines.push(resourceXml(child, inner));
  lines.push(`${indent}</resource>`);
  return lines.join('\n');
}

/** The Capabilities Description of a root serving `routes`, with `base` as its resources base. */
export function capabilitiesWadl(base: string, routes: readonly DicomwebRoute[]): string {
  const tree = treeOf(routes);
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<application xmlns="${WADL_NAMESPACE}" xmlns:xsd="http://www.w3.org/2001/XMLSchema">`,
    '  <doc title="Aperture DICOMweb origin server (PS3.18)"/>',
    `  <resources base="${xmlAttr(base)}">`,
  ];
  for (const child of tree.children.values()) lines.push(resourceXml(child, '    '));
  lines.push('  </resources>', '</application>', '');
  return lines.join('\n');
}

/** PS3.18 §8.9 Retrieve Capabilities on a DICOMweb root. */
export async function handleRetrieveCapabilities(ctx: Context, services: Services): Promise<void> {
  const readOnly = !ctx.params.project;
  ctx.status = 200;
  ctx.type = WADL_MEDIA_TYPE;
  ctx.body = capabilitiesWadl(dicomwebRoot(ctx, services.config), routesOfRoot(readOnly));
}
