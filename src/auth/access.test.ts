import { NotFoundError } from '../errors';
import { type Principal, readScopes, requireRoleInExisting } from './access';

const withGroups = (roles: Record<string, Array<'reader' | 'admin'>>): Principal => ({
  id: 'sub-1',
  kind: 'user',
  globalAdmin: false,
  projects: new Map(Object.entries(roles).map(([p, r]) => [p, new Set(r)])),
});

describe('a group for a project that does not exist', () => {
  const existing = ['demo', 'lung-study'];

  it('grants no read scope, so the project answers 404 and the union leaves it out', () => {
    const p = withGroups({ demo: ['reader'], ghost: ['admin'] });
    expect(readScopes(p, existing)).toEqual([{ projectId: 'demo' }]);
    expect(() => readScopes(p, existing, 'ghost')).toThrow(NotFoundError);
  });

  it('answers 404 (not 403) to an admin or reader of it, and leaves existing projects to the role check', () => {
    for (const role of ['admin', 'reader'] as const) {
      expect(() => requireRoleInExisting(withGroups({ ghost: [role] }), existing, 'ghost', 'admin')).toThrow(
        NotFoundError,
      );
    }
    expect(() =>
      requireRoleInExisting(withGroups({ demo: ['admin'] }), existing, 'demo', 'admin'),
    ).not.toThrow();
    expect(() => requireRoleInExisting(withGroups({ demo: ['reader'] }), existing, 'demo', 'admin')).toThrow(
      /admin role/,
    );
  });

  it('drops share-link scopes of a project that is gone', () => {
    const link: Principal = {
      id: 'share-1',
      kind: 'share',
      globalAdmin: false,
      projects: new Map(),
      shareScopes: [{ projectId: 'ghost', studyUid: '1.2.3' }],
    };
    expect(() => readScopes(link, existing, 'ghost')).toThrow(NotFoundError);
  });
});
