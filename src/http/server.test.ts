import Koa from 'koa';
import type { Logger } from '../logger';
import { createHttpServer } from './server';

const limits = {
  HTTP_MAX_HEADER_BYTES: 16 * 1024,
  HTTP_HEADERS_TIMEOUT_MS: 10_000,
  HTTP_REQUEST_TIMEOUT_MS: 60_000,
  HTTP_BODY_IDLE_TIMEOUT_MS: 30_000,
  HTTP_SOCKET_TIMEOUT_MS: 60_000,
};

describe('createHttpServer', () => {
  it("logs an error after the answer started as one structured line, and Koa's stack-trace printer stays off", () => {
    const info = jest.fn();
    const logger = { info, warn: jest.fn(), error: jest.fn(), debug: jest.fn() } as unknown as Logger;
    const printed = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      const app = new Koa();
      const server = createHttpServer(app, limits, logger);
      const reset = Object.assign(new Error('write ECONNRESET'), { code: 'ECONNRESET' });
      app.emit('error', reset);
      expect(printed).not.toHaveBeenCalled();
      expect(info).toHaveBeenCalledWith(
        { code: 'ECONNRESET', message: 'write ECONNRESET' },
        'response stream error',
      );
      expect(app.listenerCount('error')).toBe(1);
      server.close();
    } finally {
      printed.mockRestore();
    }
  });
});
