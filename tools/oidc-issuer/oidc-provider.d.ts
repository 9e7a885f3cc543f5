/**
 * The few parts of oidc-provider 9 (https://github.com/panva/node-oidc-provider) the local issuer uses. The package
 * ships no types and @types/oidc-provider lags its major versions; these follow its documented API.
 */
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http';

  export interface KoaContextWithOIDC {
    oidc: {
      client?: OidcClient;
      session?: { accountId?: string; grantIdFor(clientId: string): string | undefined };
      result?: { consent?: { grantId?: string } };
      params?: Record<string, unknown>;
      requestParamScopes: Set<string>;
      resourceServers?: Record<string, { scope?: string }>;
      route?: string;
      provider: Provider;
    };
    host: string;
    body: unknown;
    type: string;
    set(name: string, value: string): void;
  }

  export interface OidcClient {
    clientId: string;
    redirectUris: string[];
    grantTypeAllowed(type: string): boolean;
  }

  export interface OidcToken {
    accountId?: string;
    clientId?: string;
    sessionUid?: string;
    sid?: string;
    grantId?: string;
    scope?: string;
    kind: string;
  }

  export interface InteractionDetails {
    uid: string;
    prompt: { name: string; reasons: string[] };
    params: Record<string, unknown>;
    session?: { accountId?: string };
  }

  export class GrantModel {
    constructor(init: { accountId?: string; clientId?: string });
    addOIDCScope(scope: string): void;
    addResourceScope(resource: string, scope: string): void;
    save(): Promise<string>;
  }

  export default class Provider {
    constructor(issuer: string, configuration: Record<string, unknown>);
    issuer: string;
    proxy: boolean;
    Grant: typeof GrantModel & { find(id: string): Promise<GrantModel | undefined> };
    Client: { prototype: Record<string, unknown> };
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
    interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<InteractionDetails>;
    interactionFinished(
      req: IncomingMessage,
      res: ServerResponse,
      result: Record<string, unknown>,
      opts?: { mergeWithLastSubmission?: boolean },
    ): Promise<void>;
    on(event: string, listener: (...args: unknown[]) => void): this;
  }
}
