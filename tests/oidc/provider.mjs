// A real OIDC provider (npm oidc-provider) for the Juris end-to-end tests.
// TEST USE ONLY: listens on 127.0.0.1, accepts any login name, auto-grants
// consent. Prints one JSON line when ready:
//   {"issuer": "...", "port": N, "kid": "...", "private_key_pem": "..."}
// The private key is printed so tests can mint deliberately bad tokens
// (expired, wrong audience, ...) signed with the provider's real key.
//
// Environment: JURIS_OIDC_PORT (default 0 = any free port),
// JURIS_OIDC_AUDIENCE (default urn:juris:gateway), JURIS_OIDC_TOKEN_TTL (600 s).
import http from 'node:http';
import { generateKeyPair, exportJWK, exportPKCS8 } from 'jose';
import Provider from 'oidc-provider';

const audience = process.env.JURIS_OIDC_AUDIENCE || 'urn:juris:gateway';
const ttl = Number(process.env.JURIS_OIDC_TOKEN_TTL || 600);
const GROUPS = { alice: ['dba', 'engineering'], bob: ['analysts'], carol: ['developers'] };
const groupsOf = (login) => GROUPS[login] || [];

const { privateKey } = await generateKeyPair('ES256', { extractable: true });
const kid = `test-${Math.random().toString(16).slice(2, 10)}`;
const jwk = { ...(await exportJWK(privateKey)), kid, alg: 'ES256', use: 'sig' };

const server = http.createServer();
await new Promise((resolve) => server.listen(Number(process.env.JURIS_OIDC_PORT || 0), '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;
const scope = 'openid email offline_access';

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'juris-cli',
      token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
      response_types: [],
      redirect_uris: [],
      id_token_signed_response_alg: 'ES256',
    },
    {
      client_id: 'ci-bot',
      client_secret: 'ci-bot-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      id_token_signed_response_alg: 'ES256',
    },
  ],
  jwks: { keys: [jwk] },
  scopes: ['openid', 'email', 'offline_access'],
  claims: { openid: ['sub'], email: ['email'] },
  findAccount: (ctx, id) => ({
    accountId: id,
    claims: () => ({ sub: id, email: `${id}@example.test`, groups: groupsOf(id) }),
  }),
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope,
        audience,
        accessTokenTTL: ttl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
  // Auto-consent: the test user has already agreed.
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(scope);
    grant.addResourceScope(audience, scope);
    await grant.save();
    return grant;
  },
  issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
  extraTokenClaims(ctx, token) {
    if (token.accountId) {
      return { groups: groupsOf(token.accountId), email: `${token.accountId}@example.test` };
    }
    if (token.clientId === 'ci-bot') {
      return { groups: ['ci'] };
    }
    return undefined;
  },
  ttl: { AccessToken: ttl, ClientCredentials: ttl, DeviceCode: 600, RefreshToken: 86400, Grant: 86400, Session: 86400, Interaction: 600 },
  pkce: { required: () => false },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
server.on('request', provider.callback());

console.log(JSON.stringify({ issuer, port, kid, private_key_pem: await exportPKCS8(privateKey) }));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
