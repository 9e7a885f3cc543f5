import { resetStack, startGateway, type TestGateway } from './helpers/gateway';

describe('projects API', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    await resetStack();
    gw = await startGateway();
  });
  afterAll(async () => gw.close());

  const post = (body: unknown) =>
    fetch(`${gw.url}/api/projects`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  it('creates a project, lists it, and refuses a duplicate id with 409', async () => {
    const created = await post({ id: 'lung-study', name: 'Lung study' });
    expect(created.status).toBe(201);
    expect(await created.json()).toMatchObject({ id: 'lung-study', name: 'Lung study', num_studies: 0 });

    const again = await post({ id: 'lung-study', name: 'Other' });
    expect(again.status).toBe(409);

    const list = (await (await fetch(`${gw.url}/api/projects`)).json()) as Array<{ id: string }>;
    expect(list.map((p) => p.id)).toContain('lung-study');
  });

  it.each([['Upper'], ['-dash'], ['dash-'], ['under_score'], ['']])(
    'rejects the project id %j with 400',
    async (id) => {
      const res = await post({ id, name: 'x' });
      expect(res.status).toBe(400);
      const body = (await res.json()) as { errors: Array<{ message: string }> };
      expect(body.errors[0].message).toMatch(/id/);
    },
  );

  it('answers 404 for a project that does not exist', async () => {
    expect((await fetch(`${gw.url}/api/projects/nope`)).status).toBe(404);
  });
});
