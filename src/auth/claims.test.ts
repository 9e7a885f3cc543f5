import { decodeJwt } from 'jose';
import { principalFromClaims, projectRolesFromGroups } from './claims';

describe('claims → principal', () => {
  it('reads project roles from Keycloak full group paths and ignores everything else', () => {
    const roles = projectRolesFromGroups([
      '/projects/demo/reader',
      '/projects/lung-study/curator',
      '/projects/lung-study/reader',
      '/projects/demo/owner',
      '/projects/Bad_Id/reader',
      '/other/demo/admin',
      'reader',
      42,
    ]);
    expect([...roles.entries()].map(([p, r]) => [p, [...r].sort()])).toEqual([
      ['demo', ['reader']],
      ['lung-study', ['curator', 'reader']],
    ]);
    expect(projectRolesFromGroups(undefined).size).toBe(0);
  });

  it('makes holders of the global admin realm role global administrators', () => {
    const p = principalFromClaims(
      { sub: 'u1', azp: 'aperture-viewer', realm_access: { roles: ['offline_access', 'aperture-admin'] } },
      { globalAdminRole: 'aperture-admin' },
    );
    expect(p).toMatchObject({ id: 'u1', kind: 'user', globalAdmin: true, clientId: 'aperture-viewer' });
  });

  it('identifies a service account by its client id, a user by its subject', () => {
    const svc = principalFromClaims(
      {
        sub: 'sa-uuid',
        azp: 'aperture-scripts',
        preferred_username: 'service-account-aperture-scripts',
        groups: ['/projects/demo/contributor'],
      },
      { globalAdminRole: 'aperture-admin' },
    );
    expect(svc).toMatchObject({ id: 'aperture-scripts', kind: 'service', globalAdmin: false });
    expect([...svc.projects.get('demo')!]).toEqual(['contributor']);
    const user = principalFromClaims(
      { sub: 'u2', preferred_username: 'service-account-x' },
      { globalAdminRole: 'x' },
    );
    expect(user).toMatchObject({ id: 'u2', kind: 'user' });
  });

  it('loads jose under jest', () => {
    expect(() => decodeJwt('x')).toThrow();
  });
});
