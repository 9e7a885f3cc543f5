-- Short-lived, single-use download links (web, issue 13): the browser saves a study or cohort ZIP through a plain
-- <a download> to /download/{token}, streamed by the gateway, instead of assembling it in memory from a fetch with
-- the bearer token. Only the SHA-256 of the token is stored; the principal is a snapshot of the caller's identity and
-- roles (identifiers only) taken when the link was made, valid for DOWNLOAD_LINK_TTL_S seconds.
CREATE TABLE download_links (
  token_sha256 text PRIMARY KEY,
  principal    jsonb NOT NULL,
  path         text NOT NULL,
  accept       text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  used_at      timestamptz
);
CREATE INDEX download_links_expires_idx ON download_links (expires_at);
