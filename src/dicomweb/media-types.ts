/**
 * DICOMweb media types and content negotiation (PS3.18 §8.7: media types, §8.7.3 DICOM media type sets,
 * §8.7.3.5 transfer-syntax parameter, §8.7.8 selected media type and transfer syntax).
 *
 * Pure module: no Koa. Handlers call `negotiateMediaType` with what the resource can produce and answer
 * 406 with `describeOffers(offers)` when it returns null.
 *
 * Why not `negotiator`/`content-type` (both installed via koa): `content-type` throws on the unquoted
 * `type=application/dicom` that real clients send ('/' is not a token character), and `negotiator` treats a
 * missing `transfer-syntax` as "any", whereas PS3.18 §8.7.3.5.2 makes it mean "the default transfer syntax";
 * it also breaks ties by the client's order, while we break them by the server's preference.
 */

import {
  frameMediaTypeOf,
  isUncompressedTransferSyntax,
  TRANSFER_SYNTAXES,
  TransferSyntax,
} from '../dicom/transfer-syntax';

export const MediaType = {
  dicom: 'application/dicom',
  dicomJson: 'application/dicom+json',
  dicomXml: 'application/dicom+xml',
  json: 'application/json',
  octetStream: 'application/octet-stream',
  zip: 'application/zip',
  multipartRelated: 'multipart/related',
  jpeg: 'image/jpeg',
  png: 'image/png',
  webp: 'image/webp',
  gif: 'image/gif',
  jls: 'image/jls',
  jp2: 'image/jp2',
  jpx: 'image/jpx',
  jphc: 'image/jphc',
  jxl: 'image/jxl',
  dicomRle: 'image/dicom-rle',
  mpeg: 'video/mpeg',
  mp4: 'video/mp4',
  h265: 'video/H265',
  pdf: 'application/pdf',
  textPlain: 'text/plain',
} as const;

export { TransferSyntax };

/**
 * Transfer syntax UID → media type of a single compressed frame / bulk data item (PS3.18 Table 8.7.3-5), from the
 * one transfer-syntax table. Video transfer syntaxes map to the video media type of the whole stream.
 */
export const FRAME_MEDIA_TYPE_BY_TRANSFER_SYNTAX: Readonly<Record<string, string>> = Object.fromEntries(
  TRANSFER_SYNTAXES.filter((t) => t.frameMediaType).map((t) => [t.uid, t.frameMediaType!]),
);

/**
 * Default transfer syntax per bulk data media type when the client names none (the "D" rows of PS3.18
 * Tables 8.7.3-2, 8.7.3-4 and 8.7.3-5). A server that cannot transcode passes its own default instead.
 */
export const DEFAULT_TRANSFER_SYNTAX_BY_MEDIA_TYPE: Readonly<Record<string, string>> = {
  [MediaType.dicom]: TransferSyntax.explicitVrLittleEndian,
  [MediaType.octetStream]: TransferSyntax.explicitVrLittleEndian,
  [MediaType.jpeg]: TransferSyntax.jpegLosslessSv1,
  [MediaType.dicomRle]: TransferSyntax.rleLossless,
  [MediaType.jls]: TransferSyntax.jpegLsLossless,
  [MediaType.jp2]: TransferSyntax.jpeg2000Lossless,
  [MediaType.jpx]: TransferSyntax.jpeg2000Part2Lossless,
  [MediaType.jphc]: TransferSyntax.htj2kLossless,
  [MediaType.jxl]: TransferSyntax.jpegXlLossless,
  [MediaType.mpeg]: TransferSyntax.mpeg2MainProfile,
  [MediaType.mp4]: TransferSyntax.mpeg4HighProfile,
  [MediaType.h265]: TransferSyntax.hevcMainProfile,
};

/** Media type of one frame (or bulk data item) stored in `transferSyntaxUid`, or undefined if unknown. */
export function frameMediaTypeForTransferSyntax(transferSyntaxUid: string): string | undefined {
  if (isUncompressedTransferSyntax(transferSyntaxUid)) return MediaType.octetStream;
  return frameMediaTypeOf(transferSyntaxUid);
}

/** True when frames in this transfer syntax are uncompressed octets (PS3.18 Table 8.7.3-4). */
export function isNativeTransferSyntax(transferSyntaxUid: string): boolean {
  return isUncompressedTransferSyntax(transferSyntaxUid);
}

/** A parsed media type: lower-cased `type/subtype`, parameter names lower-cased, values unquoted. */
export interface ParsedMediaType {
  type: string;
  params: Record<string, string>;
}

/** One media range of an Accept header (or of the `accept` query parameter). */
export interface AcceptEntry {
  /** Lower-cased `type/subtype`, possibly with wildcards (`*\/*`, `image/*`). */
  type: string;
  /** Media type parameters (before `q`), names lower-cased, values unquoted. `q` itself is not included. */
  params: Record<string, string>;
  /** Quality 0..1; entries with q=0 are kept so they can veto a match. */
  q: number;
  /** Position in the header, for stable ordering. */
  index: number;
}

const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Splits on `sep` outside of double-quoted strings (backslash escapes honoured inside quotes). */
function splitOutsideQuotes(input: string, sep: string): string[] {
  const out: string[] = [];
  let current = '';
  let inQuotes = false;
  for (let i = 0; i < input.length; i++) {
    const c = input[i];
    if (inQuotes) {
      current += c;
      if (c === '\\' && i + 1 < input.length) {
        current += input[++i];
      } else if (c === '"') {
        inQuotes = false;
      }
    } else if (c === '"') {
      inQuotes = true;
      current += c;
    } else if (c === sep) {
      out.push(current);
      current = '';
    } else {
      current += c;
    }
  }
  out.push(current);
  return out;
}

function unquote(value: string): string {
  const v = value.trim();
  if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) {
    return v.slice(1, -1).replace(/\\(.)/g, '$1');
  }
  return v;
}

/** Parses `type/subtype; a=b; c="d"` leniently; returns null when there is no `type/subtype`. */
function parseMediaRange(input: string): { type: string; params: Array<[string, string]> } | null {
  const [head, ...rawParams] = splitOutsideQuotes(input, ';');
  const type = head.trim().toLowerCase();
  const slash = type.indexOf('/');
  if (slash <= 0 || slash === type.length - 1 || !TOKEN_RE.test(type.replace('/', ''))) return null;
  const params: Array<[string, string]> = [];
  for (const raw of rawParams) {
    const eq = raw.indexOf('=');
    if (eq === -1) continue; // a bare token is not a parameter; ignore rather than reject the whole header
    const name = raw.slice(0, eq).trim().toLowerCase();
    if (!name) continue;
    params.push([name, unquote(raw.slice(eq + 1))]);
  }
  return { type, params };
}

/** Parses a Content-Type header into its lower-cased type and unquoted parameters; null if malformed. */
export function parseContentType(header: string | undefined | null): ParsedMediaType | null {
  if (!header) return null;
  const parsed = parseMediaRange(header);
  if (!parsed) return null;
  const params: Record<string, string> = {};
  for (const [name, value] of parsed.params) {
    if (!(name in params)) params[name] = value;
  }
  return { type: parsed.type, params };
}

function parseQuality(value: string): number | null {
  if (!/^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(value.trim())) return null;
  return Number(value);
}

/**
 * Parses an Accept header (RFC 9110 §12.5.1 as profiled by PS3.18 §8.7.5). Accepts a header value, the
 * comma-joined values of repeated headers, or an array of them. Malformed ranges and ranges with an
 * invalid `q` are dropped. A missing or empty header yields an empty list (see `negotiateMediaType`).
 */
export function parseAccept(header: string | string[] | undefined | null): AcceptEntry[] {
  if (header === undefined || header === null) return [];
  const joined = Array.isArray(header) ? header.join(',') : header;
  const entries: AcceptEntry[] = [];
  for (const raw of splitOutsideQuotes(joined, ',')) {
    if (!raw.trim()) continue;
    const parsed = parseMediaRange(raw);
    if (!parsed) continue;
    const params: Record<string, string> = {};
    let q = 1;
    let valid = true;
    for (const [name, value] of parsed.params) {
      if (name === 'q') {
        const quality = parseQuality(value);
        if (quality === null) valid = false;
        else q = quality;
        break; // everything after q is an accept-extension, not a media type parameter
      }
      if (!(name in params)) params[name] = value;
    }
    if (valid) entries.push({ type: parsed.type, params, q, index: entries.length });
  }
  return entries;
}

/** Something a resource can produce, in the server's order of preference. */
export interface MediaTypeOffer {
  /** `type/subtype` of the response, e.g. `multipart/related` or `application/dicom+json`. */
  mediaType: string;
  /** For multipart offers: the media type of each part (the `type` parameter), e.g. `application/dicom`. */
  partType?: string;
  /** Transfer syntaxes this offer can be produced in, in the server's order of preference. */
  transferSyntaxes?: readonly string[];
  /**
   * Transfer syntax used when the client names none. Defaults to the PS3.18 default for `partType ??
   * mediaType` when the offer lists it, else the first of `transferSyntaxes`. Declared but not listed: the default
   * cannot be produced, and only requests naming a listed syntax (or `*`) match.
   */
  defaultTransferSyntax?: string;
}

/** The outcome of a successful negotiation. */
export interface NegotiatedMediaType {
  offer: MediaTypeOffer;
  mediaType: string;
  partType?: string;
  /** The transfer syntax to produce, when the offer has any. */
  transferSyntax?: string;
  /** The quality the client gave the chosen representation. */
  q: number;
  /** The Accept entry that decided the match (undefined when the client sent no Accept at all). */
  matched?: AcceptEntry;
}

function typeMatches(range: string, type: string): 0 | 1 | 2 | 3 | -1 {
  // The returned number is the specificity: */* < type/* < exact.
  if (range === '*/*') return 1;
  const [rt, rs] = range.split('/');
  const [t, s] = type.toLowerCase().split('/');
  if (rt !== t) return -1;
  if (rs === '*') return 2;
  return rs === s ? 3 : -1;
}

function defaultTransferSyntaxOf(offer: MediaTypeOffer): string | undefined {
  const list = offer.transferSyntaxes;
  if (!list || list.length === 0) return undefined;
  if (offer.defaultTransferSyntax) return offer.defaultTransferSyntax;
  const standard = DEFAULT_TRANSFER_SYNTAX_BY_MEDIA_TYPE[(offer.partType ?? offer.mediaType).toLowerCase()];
  return standard && list.includes(standard) ? standard : list[0];
}

/**
 * Specificity of `entry` for (offer, transferSyntax), or -1 when it does not apply. A missing
 * transfer-syntax parameter means the offer's default transfer syntax (PS3.18 §8.7.3.5.2), `*` means any.
 */
function specificity(entry: AcceptEntry, offer: MediaTypeOffer, transferSyntax: string | undefined): number {
  const typeScore = typeMatches(entry.type, offer.mediaType);
  if (typeScore < 0) return -1;
  let score = typeScore * 100;

  // `type` only means something on multipart ranges; `multipart/related` without it accepts any part type.
  const wantedPartType = offer.mediaType.toLowerCase().startsWith('multipart/')
    ? entry.params['type']
    : undefined;
  if (wantedPartType !== undefined) {
    if (!offer.partType) return -1;
    const partScore = typeMatches(wantedPartType.trim().toLowerCase(), offer.partType);
    if (partScore < 0) return -1;
    score += partScore * 10;
  }

  if (transferSyntax !== undefined) {
    const wantedTs = entry.params['transfer-syntax'];
    if (wantedTs === undefined) {
      if (transferSyntax !== defaultTransferSyntaxOf(offer)) return -1;
      score += 2;
    } else if (wantedTs.trim() === '*') {
      score += 1;
    } else {
      if (wantedTs.trim() !== transferSyntax) return -1;
      score += 2;
    }
  }
  return score;
}

/**
 * Picks the representation to send (PS3.18 §8.7.8). `offers` are in the server's order of preference.
 * The quality of each candidate (offer × transfer syntax) is the q of the most specific Accept entry that
 * applies to it; the highest quality wins and ties go to the server's order. `acceptQuery` (the `accept`
 * query parameter, §8.3.3.1) takes precedence over the header when any of its types is supported.
 * Returns null when nothing acceptable can be produced (the handler answers 406).
 */
export function negotiateMediaType(
  offers: readonly MediaTypeOffer[],
  acceptHeader: string | string[] | undefined | null,
  acceptQuery?: string | string[] | null,
): NegotiatedMediaType | null {
  if (acceptQuery !== undefined && acceptQuery !== null) {
    const fromQuery = selectBest(offers, parseAccept(acceptQuery));
    if (fromQuery) return fromQuery;
  }
  const entries = parseAccept(acceptHeader);
  if (entries.length === 0) {
    // No Accept header means the client accepts anything (RFC 9110 §12.5.1): send the server's default.
    const offer = offers[0];
    if (!offer) return null;
    return {
      offer,
      mediaType: offer.mediaType,
      partType: offer.partType,
      transferSyntax: defaultTransferSyntaxOf(offer),
      q: 1,
    };
  }
  return selectBest(offers, entries);
}

function selectBest(offers: readonly MediaTypeOffer[], entries: AcceptEntry[]): NegotiatedMediaType | null {
  let best: NegotiatedMediaType | null = null;
  for (const offer of offers) {
    const candidates: Array<string | undefined> =
      offer.transferSyntaxes && offer.transferSyntaxes.length > 0 ? [...offer.transferSyntaxes] : [undefined];
    // A declared default that is not listed is one the resource cannot produce: it is no candidate, so a request
    // naming no transfer syntax matches nothing rather than getting something else (PS3.18 §8.7.3.5.2).
    for (const transferSyntax of candidates) {
      let matched: AcceptEntry | undefined;
      let matchedScore = -1;
      for (const entry of entries) {
        const score = specificity(entry, offer, transferSyntax);
        if (score > matchedScore || (score === matchedScore && matched && entry.q > matched.q)) {
          matched = entry;
          matchedScore = score;
        }
      }
      if (!matched || matched.q <= 0) continue;
      if (!best || matched.q > best.q) {
        best = {
          offer,
          mediaType: offer.mediaType,
          partType: offer.partType,
          transferSyntax,
          q: matched.q,
          matched,
        };
      }
    }
  }
  return best;
}

function formatParam(name: string, value: string): string {
  return TOKEN_RE.test(value) ? `${name}=${value}` : `${name}="${value.replace(/(["\\])/g, '\\$1')}"`;
}

/** Formats a media type with parameters; values are quoted when they are not tokens. */
export function formatMediaType(type: string, params: Record<string, string | undefined> = {}): string {
  const parts = [type];
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined) parts.push(formatParam(name, value));
  }
  return parts.join('; ');
}

/**
 * The Content-Type of one part (multipart) or of the whole body (single part) for a negotiated result,
 * e.g. `application/dicom; transfer-syntax=1.2.840.10008.1.2.1`.
 */
export function partContentType(result: NegotiatedMediaType): string {
  const type = result.partType ?? result.mediaType;
  return formatMediaType(type, { 'transfer-syntax': result.transferSyntax });
}

/** Lists what a resource can produce, for the body of a 406 answer. */
export function describeOffers(offers: readonly MediaTypeOffer[]): string[] {
  const out: string[] = [];
  for (const offer of offers) {
    const syntaxes =
      offer.transferSyntaxes && offer.transferSyntaxes.length > 0 ? offer.transferSyntaxes : [undefined];
    for (const ts of syntaxes) {
      out.push(formatMediaType(offer.mediaType, { type: offer.partType, 'transfer-syntax': ts }));
    }
  }
  return out;
}
