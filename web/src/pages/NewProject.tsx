import { useState } from 'react';
import { gatewayFetch } from '../api';
import { ErrorPanel } from '../components';

/**
 * Project creation (global administrators): POST /api/projects. The id is what URLs and tokens' group names use,
 * so it follows the API's rule (lowercase letters, digits, dashes); the API checks it and answers in words.
 */
export function NewProjectPage() {
  const [id, setId] = useState('');
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();

  const create = async () => {
    setBusy(true);
    setError(undefined);
    try {
      await gatewayFetch('/api/projects', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ id, name, ...(description ? { description } : {}) }),
      });
      location.hash = '#/';
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section>
      <h1>New project</h1>
      <p className="muted">
        Members are given their roles in the identity provider (Keycloak groups); the project is empty until
        studies are uploaded or routed to it.
      </p>
      {error !== undefined && <ErrorPanel error={error} />}
      <form
        id="new-project"
        onSubmit={(e) => {
          e.preventDefault();
          void create();
        }}
      >
        <p>
          <label>
            Id (lowercase letters, digits and dashes){' '}
            <input
              name="id"
              value={id}
              onChange={(e) => setId(e.target.value)}
              required
              maxLength={64}
              pattern="[a-z0-9]([a-z0-9\-]*[a-z0-9])?"
            />
          </label>
        </p>
        <p>
          <label>
            Name{' '}
            <input
              name="name"
              value={name}
              onChange={(e) => setName(e.target.value)}
              required
              maxLength={200}
            />
          </label>
        </p>
        <p>
          <label>
            Description{' '}
            <textarea
              name="description"
              value={description}
              onChange={(e) => setDescription(e.target.value)}
              maxLength={2000}
            />
          </label>
        </p>
        <button type="submit" id="create-project" disabled={busy}>
          {busy ? 'Creating…' : 'Create project'}
        </button>
      </form>
    </section>
  );
}
