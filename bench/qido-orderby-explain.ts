/**
 * EXPLAIN ANALYZE of QIDO-RS study searches in every `orderby` (src/index-db/qido.ts) at 100,000 studies: one project
 * of 100k studies, and the union root over it and a second project of 20k. Prints the execution time of the first page
 * and of a deep page (offset 5000) for each order, and whether the plan sorts every match (a Sort node below the page)
 * or reads an index in order.
 *
 *   DATABASE_URL=postgres://aperture@127.0.0.1:55999/aperture npx tsx bench/qido-orderby-explain.ts
 *
 * The database is used as given: the rows are generated with SQL (generate_series) once, into projects named
 * `orderby-big` and `orderby-other`, and kept for the next run.
 */
import { Pool } from 'pg';
import { parseQidoQuery } from '../src/dicom/matching';
import { migrate } from '../src/index-db/migrate';
import { buildQidoStatement, STUDY_SORT_KEYWORDS } from '../src/index-db/qido';

const BIG = Number(process.env.ORDERBY_STUDIES ?? 100_000);

async function fill(db: Pool, project: string, n: number): Promise<void> {
  const have = await db.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM project_studies WHERE project_id = $1',
    [project],
  );
  if (have.rows[0].n >= n) return;
  await db.query('INSERT INTO projects (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING', [project]);
  await db.query(
    `INSERT INTO project_studies (project_id, study_uid, patient_name, patient_name_norm, patient_id, study_date,
       study_time, accession_number, study_description, modalities, num_series, num_instances, study_json)
     SELECT $1, '2.25.' || $3::text || g, n, upper(n), 'P' || (g * 7919 % 1000003),
            CASE WHEN g % 50 = 0 THEN NULL ELSE to_char(date '2000-01-01' + (g * 37 % 9000)::int, 'YYYYMMDD') END,
            lpad((g % 24)::text, 2, '0') || '0000.000000',
            CASE WHEN g % 10 = 0 THEN NULL ELSE 'A' || (g * 104729 % 999983) END,
            (ARRAY['CT CHEST', 'MR BRAIN', 'CR THORAX', 'CT ABDOMEN', NULL])[1 + g % 5],
            string_to_array((ARRAY['CT', 'MR', 'CR,CT', 'MR,SR'])[1 + g % 4], ','),
            1 + g % 7, 1 + (g * 31) % 900, '{}'::jsonb
       FROM generate_series(1::bigint, $2::bigint) g,
            LATERAL (SELECT (ARRAY['Doe','Smith','Müller','Garcia','Nguyen','Brown'])[1 + g % 6] || '^' ||
                            (ARRAY['Peter','Anna','Jean','Li','Maria'])[1 + (g / 6) % 5] || g AS n) nm
     ON CONFLICT DO NOTHING`,
    [project, n, project === 'orderby-big' ? '1' : '2'],
  );
  await db.query('ANALYZE project_studies');
}

interface PlanNode {
  'Node Type': string;
  'Index Name'?: string;
  Plans?: PlanNode[];
  'Actual Rows'?: number;
}

function nodes(n: PlanNode): PlanNode[] {
  return [n, ...(n.Plans ?? []).flatMap(nodes)];
}

async function main(): Promise<void> {
  const db = new Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
  await migrate(db);
  await fill(db, 'orderby-big', BIG);
  await fill(db, 'orderby-other', Math.round(BIG / 5));
  const scopesOne = [{ projectId: 'orderby-big' }];
  const scopesUnion = [{ projectId: 'orderby-big' }, { projectId: 'orderby-other' }];
  const orders = [undefined, ...STUDY_SORT_KEYWORDS.flatMap((k) => [k, `-${k}`])];
  console.log(`| orderby | scope | offset | ms | plan |`);
  console.log(`|---|---|---:|---:|---|`);
  for (const [label, scopes] of [
    ['one project (100k)', scopesOne],
    ['union (120k)', scopesUnion],
  ] as const) {
    for (const order of orders) {
      for (const offset of [0, 5000]) {
        const params = new URLSearchParams({ limit: '25', offset: String(offset) });
        if (order) params.set('orderby', order);
        const query = parseQidoQuery(params, { defaultLimit: 100, maxLimit: 1000 });
        const st = buildQidoStatement({ level: 'study', query, scopes });
        // Warm once, then take the best of three (this machine is shared).
        let best = Infinity;
        let plan: PlanNode | undefined;
        for (let i = 0; i < 4; i++) {
          const r = await db.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode; 'Execution Time': number }> }>(
            `EXPLAIN (ANALYZE, FORMAT JSON) ${st.text}`,
            st.values,
          );
          const [out] = r.rows[0]['QUERY PLAN'];
          if (i > 0 && out['Execution Time'] < best) {
            best = out['Execution Time'];
            plan = out.Plan;
          }
        }
        const all = plan ? nodes(plan) : [];
        const sorts = all.filter(
          (n) =>
            n['Node Type'] === 'Sort' && (n.Plans ?? []).some((c) => (c['Actual Rows'] ?? 0) > offset + 26),
        );
        const indexes = [...new Set(all.map((n) => n['Index Name']).filter(Boolean))].join(', ');
        const how = sorts.length ? `sorts all matches (${indexes || 'seq scan'})` : `index order: ${indexes}`;
        console.log(`| ${order ?? '(default)'} | ${label} | ${offset} | ${best.toFixed(1)} | ${how} |`);
      }
    }
  }
  await db.end();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
