import type { Command } from 'commander';
import { userInfo } from 'node:os';
import { NODE_ID, nodeInput } from '../../api/nodes';
import { failureOf, nodeSpec } from '../../bridge/retrieve';
import { insertAuditEvents } from '../../index-db/audit';
import { getNode, listNodes, putNode } from '../../index-db/bridge';
import { DimseFailure, getRemoteNodes } from '../../orthanc/remote-nodes';
import type { CoreServices } from '../../services';
import { withServices } from '../services';

const cliPrincipal = (): string => `cli:${userInfo().username}`;

async function audit(s: CoreServices, action: string, detail: Record<string, unknown>): Promise<void> {
  await insertAuditEvents(s.db, [
    {
      at: new Date(),
      principal: cliPrincipal(),
      principalKind: 'service',
      action,
      projectId: null,
      studyUid: null,
      seriesUid: null,
      sopInstanceUid: null,
      outcome: 200,
      bytes: 0,
      clientIp: null,
      method: 'CLI',
      route: 'cli nodes',
      detail,
    },
  ]);
}

const yesNo = (v: string): boolean => {
  if (v === 'yes' || v === 'true') return true;
  if (v === 'no' || v === 'false') return false;
  throw new Error(`expected yes or no, got '${v}'`);
};

/** `nodes list|add|echo`: the PACS bridge's remote DICOM nodes (issue 14), as `PUT/GET /api/nodes` and `.../echo`. */
export function register(program: Command): void {
  const nodes = program.command('nodes').description('remote DICOM nodes of the PACS bridge');

  nodes
    .command('list')
    .description('list the registered nodes')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) =>
      withServices(async (s) => {
        const rows = await listNodes(s.db);
        if (opts.json) console.log(JSON.stringify(rows, null, 2));
        else
          console.table(
            rows.map((n) => ({
              id: n.id,
              aet: n.aet,
              address: `${n.host}:${n.port}`,
              find: n.allow_find,
              move: n.allow_move,
              get: n.allow_get,
              store: n.allow_store,
              method: n.retrieve_method,
              associations: n.max_associations,
            })),
          );
      }),
    );

  nodes
    .command('add <id> <aet> <host> <port>')
    .description('register (or update) a node and push it to the archive')
    .option('--find <yes|no>', 'the node answers C-FIND', 'yes')
    .option('--move <yes|no>', 'the node answers C-MOVE', 'yes')
    .option('--get <yes|no>', 'the node answers C-GET', 'no')
    .option('--store <yes|no>', "the node's C-STORE sub-operations may enter the archive", 'yes')
    .option('--method <move|get>', 'how studies are retrieved from it', 'move')
    .option('--max-associations <n>', 'associations with it at once', '2')
    .action(
      async (
        id: string,
        aet: string,
        host: string,
        port: string,
        o: {
          find: string;
          move: string;
          get: string;
          store: string;
          method: string;
          maxAssociations: string;
        },
      ) =>
        withServices(async (s) => {
          if (!NODE_ID.test(id)) throw new Error('node id: lowercase letters, digits and dashes');
          const parsed = nodeInput.safeParse({
            aet,
            host,
            port: Number(port),
            allow_find: yesNo(o.find),
            allow_move: yesNo(o.move),
            allow_get: yesNo(o.get),
            allow_store: yesNo(o.store),
            retrieve_method: o.method,
            max_associations: Number(o.maxAssociations),
          });
          if (!parsed.success)
            throw new Error(
              parsed.error.issues.map((i) => `${i.path.join('.') || 'node'}: ${i.message}`).join('; '),
            );
          const { row, created } = await putNode(s.db, id, parsed.data);
          await getRemoteNodes().ensure(nodeSpec(row));
          await audit(s, created ? 'node.create' : 'node.update', { node: id });
          console.log(
            `${created ? 'registered' : 'updated'} node ${id} (${row.aet} at ${row.host}:${row.port})`,
          );
        }),
    );

  nodes
    .command('echo <id>')
    .description('C-ECHO the node; exits 1 with the reason in words when it fails')
    .action(async (id: string) =>
      withServices(async (s) => {
        const n = await getNode(s.db, id);
        if (!n) throw new Error(`node '${id}' does not exist`);
        const remote = getRemoteNodes();
        await remote.ensure(nodeSpec(n));
        const t0 = Date.now();
        let failure: string | undefined;
        try {
          await remote.echo(n.id, Math.min(s.config.BRIDGE_DIMSE_TIMEOUT_S, 30));
        } catch (err) {
          if (!(err instanceof DimseFailure)) throw err;
          failure = failureOf(err, n.id).message;
        }
        await audit(s, 'node.echo', { node: n.id, ok: !failure });
        if (failure) throw new Error(failure);
        console.log(`node ${n.id} answered C-ECHO in ${Date.now() - t0} ms`);
      }),
    );
}
