/** SQL of short-lived download links (src/auth/download-links.ts). */
import type { Queryable } from './pool';

/** Stores a link by the SHA-256 of its token; expired links are swept at the same time. */
export async function insertDownloadLink(
  db: Queryable,
  link: { tokenSha256: string; principal: unknown; path: string; accept: string; ttlS: number },
): Promise<Date> {
  await db.query(`DELETE FROM download_links WHERE expires_at < now() - interval '1 hour'`);
  const r = await db.query<{ expires_at: Date }>(
    `INSERT INTO download_links (token_sha256, principal, path, accept, expires_at)
     VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING expires_at`,
    [link.tokenSha256, JSON.stringify(link.principal), link.path, link.accept, link.ttlS],
  );
  return r.rows[0].expires_at;
}

/** Uses a link once: its principal, path and media type, or undefined when unknown, expired or already used. */
export async function consumeDownloadLink(
  db: Queryable,
  tokenSha256: string,
): Promise<{ principal: unknown; path: string; accept: string } | undefined> {
  const r = await db.query<{ principal: unknown; path: string; accept: string }>(
    `UPDATE download_links SET used_at = now()
      WHERE token_sha256 = $1 AND used_at IS NULL AND expires_at > now()
      RETURNING principal, path, accept`,
    [tokenSha256],
  );
  return r.rows[0];
}
