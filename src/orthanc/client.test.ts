import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { OrthancClient } from './client';

/**
 * A loopback HTTP peer that answers the first request on each connection and drops the connection, unanswered,
 * when a second request arrives on it: what a kept-alive connection looks like when the archive closes it just as
 * the client reuses it.
 */
function startDroppingPeer(): Promise<{ server: Server; url: string; requests: () => number }> {
  const seen = new WeakMap<Socket, number>();
  let requests = 0;
  const server = createServer((req, res) => {
    requests++;
    const n = (seen.get(req.socket) ?? 0) + 1;
    seen.set(req.socket, n);
    if (n > 1) {
      req.socket.destroy();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', connection: 'keep-alive' });
    res.end(JSON.stringify({ path: req.url, method: req.method }));
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        server,
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        requests: () => requests,
      }),
    ),
  );
}

function clientFor(url: string): OrthancClient {
  return new OrthancClient({
    ORTHANC_URL: url,
    ORTHANC_USERNAME: undefined,
    ORTHANC_PASSWORD: undefined,
    ORTHANC_TIMEOUT_MS: 5000,
    ORTHANC_CONNECTIONS: 1,
  } as never);
}

describe('Orthanc client on a connection the archive closed', () => {
  it('sends a read again, once, on a fresh connection', async () => {
    const peer = await startDroppingPeer();
    const client = clientFor(peer.url);
    try {
      expect(await client.getJson('/system')).toEqual({ path: '/system', method: 'GET' });
      // Same (only) connection reused: the peer drops it, the client retries on a new one.
      expect(await client.getJson('/statistics')).toEqual({ path: '/statistics', method: 'GET' });
      expect(peer.requests()).toBe(3);
    } finally {
      await client.close();
      peer.server.close();
    }
  });

  it('does not send a store again: a write fails as an unavailable archive', async () => {
    const peer = await startDroppingPeer();
    const client = clientFor(peer.url);
    try {
      await client.getJson('/system');
      await expect(client.store(Buffer.from('not dicom'), 9)).rejects.toMatchObject({ status: 503 });
      expect(peer.requests()).toBe(2);
    } finally {
      await client.close();
      peer.server.close();
    }
  });
});
