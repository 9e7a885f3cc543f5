/**
 * The Node HTTP server around the Koa app, with the limits that Koa cannot set: request head size, header,
 * request and socket timeouts, and what happens to requests Node's parser refuses before Koa sees them.
 */
import http, { type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type Koa from 'koa';
import type { Config } from '../config';
import type { Logger } from '../logger';

type ServerLimits = Pick<
  Config,
  | 'HTTP_MAX_HEADER_BYTES'
  | 'HTTP_HEADERS_TIMEOUT_MS'
  | 'HTTP_REQUEST_TIMEOUT_MS'
  | 'HTTP_BODY_IDLE_TIMEOUT_MS'
  | 'HTTP_SOCKET_TIMEOUT_MS'
>;

/** Creates (does not start) the gateway's HTTP server. */
export function createHttpServer(app: Koa, config: ServerLimits, logger: Logger): Server {
  // Koa prints errors it sees after the answer started (a client resetting a download) as stack traces on stderr;
  // one structured line instead, like every other log line. Registered before app.callback(), which adds Koa's own
  // printing listener when the app has none yet.
  app.on('error', (err: NodeJS.ErrnoException) => {
    logger.info({ code: err.code ?? err.name, message: err.message }, 'response stream error');
  });
  const server = http.createServer(
    {
      maxHeaderSize: config.HTTP_MAX_HEADER_BYTES,
      // Node checks header and request timeouts on this period (30 s by default): short limits need a short period.
      connectionsCheckingInterval: Math.min(30_000, Math.max(250, config.HTTP_HEADERS_TIMEOUT_MS / 4)),
    },
    app.callback(),
  );
  server.headersTimeout = config.HTTP_HEADERS_TIMEOUT_MS;
  // The gateway's own body timeouts (src/http/body-timeout.ts) answer first with what was stored; Node's
  // requestTimeout is the backstop for bodies nothing reads, a little later.
  server.requestTimeout = config.HTTP_REQUEST_TIMEOUT_MS + 5_000;
  // No bytes either way for this long: the connection goes (a stalled download as much as a stalled upload).
  server.timeout = Math.max(config.HTTP_SOCKET_TIMEOUT_MS, config.HTTP_BODY_IDLE_TIMEOUT_MS + 5_000);
  // Idle keep-alive connections are kept well past the 4-5 s clients commonly wait before reusing one (undici's
  // default is 4 s): with Node's 5 s default, a late timer on a busy machine closes a socket just as a client sends
  // its next request on it, which the client sees as a reset (a POST is not retried).
  server.keepAliveTimeout = 30_000;
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) =>
    answerClientError(err, socket, config, logger),
  );
  return server;
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  408: 'Request Timeout',
  413: 'Payload Too Large',
  431: 'Request Header Fields Too Large',
};

/**
 * A request Node's parser refused (malformed, head too large, head too slow): one structured log line (the
 * parser's code, never the raw bytes, which may hold tokens or names) and, when the socket still takes it, a short
 * answer in the same JSON error shape as every other refusal.
 */
export function answerClientError(
  err: NodeJS.ErrnoException,
  socket: Duplex,
  config: Pick<Config, 'HTTP_MAX_HEADER_BYTES'>,
  logger: Logger,
): void {
  const code = err.code ?? 'unknown';
  if (code === 'ECONNRESET' || !socket.writable) {
    logger.debug({ code }, 'client connection reset');
    socket.destroy();
    return;
  }
  let status = 400;
  let message = 'the request could not be parsed as HTTP/1.1';
  if (code === 'HPE_HEADER_OVERFLOW') {
    status = 431;
    message = `the request line and headers exceed ${config.HTTP_MAX_HEADER_BYTES} bytes (a bearer token may be at most a fraction of that)`;
  } else if (code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    status = 408;
    message = 'the request was not received in time';
  }
  logger.info({ code, status }, 'http parse error');
  const body = JSON.stringify({
    errors: [{ code: status === 400 ? 'bad_request' : `http_${status}`, message }],
  });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_TEXT[status]}\r\n` +
      'Content-Type: application/json\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      'X-Content-Type-Options: nosniff\r\n' +
      'Connection: close\r\n\r\n' +
      body,
  );
}
