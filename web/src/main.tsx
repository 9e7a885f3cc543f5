import { createRoot } from 'react-dom/client';
import { App } from './App';
import { initAuth, type WebConfig } from './auth';
import { ErrorPanel } from './components';
import { UserFacingError } from './api';

async function start(): Promise<void> {
  const root = createRoot(document.getElementById('root')!);
  try {
    const res = await fetch('/web-config.json', { headers: { Accept: 'application/json' } });
    if (!res.ok)
      throw new UserFacingError(res.status, 'The archive is not ready.', 'Reload the page in a moment.');
    const cfg = (await res.json()) as WebConfig;
    const user = await initAuth(cfg);
    root.render(<App config={cfg} initialUser={user} />);
  } catch (err) {
    const e =
      err instanceof UserFacingError
        ? err
        : new UserFacingError(0, 'Signing in did not work.', 'Reload the page and sign in again.');
    root.render(<ErrorPanel error={e} />);
  }
}

void start();
