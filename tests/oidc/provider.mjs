// A real OIDC provider (npm `oidc-provider`) for the Juris tests.
//
// TEST USE ONLY. It listens on 127.0.0.1, accepts any login name with any
// password (devInteractions), and exposes /test/mint endpoints that sign
// arbitrary tokens with its key. Never point anything real at it.
//
// Configuration (arguments win over environment):
//   --port N        JURIS_OIDC_PORT       0 = any free port (default)
//   --audience A    JURIS_OIDC_AUDIENCE   default urn:juris:gateway
//   --ttl SECONDS   JURIS_OIDC_TOKEN_TTL  access token lifetime, default 600
//
// When listening it prints exactly one JSON line on stdout:
//   {"issuer":"http://127.0.0.1:PORT","port":PORT}
// and exits on SIGTERM, SIGINT or when stdin closes.
import http from 'node:http';
import { parseArgs } from 'node:util';
import { exportJWK, generateKeyPair, SignJWT, base64url } from 'jose';
import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    audience: { type: 'string' },
    ttl: { type: 'string' },
  },
});
const port = Number(args.port ?? process.env.JURIS_OIDC_PORT ?? 0);
const audience = args.audience ?? process.env.JURIS_OIDC_AUDIENCE ?? 'urn:juris:gateway';
const ttl = Number(args.ttl ?? process.env.JURIS_OIDC_TOKEN_TTL ?? 600);
if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad port ${port}`);
if (!Number.isInteger(ttl) || ttl <= 0) throw new Error(`bad ttl ${ttl}`);

// Fixed group table; everyone else has no groups.
const GROUPS = {
  alice: ['dba', 'engineering'],
  bob: ['analysts'],
  carol: ['developers'],
  // Masking tests: dana reads through `analysts` and is also in the exempt
  // group; erin is only in the exempt group.
  dana: ['analysts', 'pii-readers'],
  erin: ['pii-readers'],
  // Control-plane tests: a second reviewer for rules needing two approvals.
  frank: ['dba'],
};
const groupsOf = (login) => GROUPS[login] ?? [];
const emailOf = (login) => `${login}@example.test`;
const CLIENT_GROUPS = { 'ci-bot': ['ci'] };

// One signing key per run.
const ALG = 'ES256';
const { privateKey } = await generateKeyPair(ALG, { extractable: true });
const kid = `juris-test-${base64url.encode(crypto.getRandomValues(new Uint8Array(6)))}`;
const jwk = { ...(await exportJWK(privateKey)), kid, alg: ALG, use: 'sig' };

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const actualPort = server.address().port;
const issuer = `http://127.0.0.1:${actualPort}`;

const SCOPES = ['openid', 'email', 'groups', 'offline_access'];
const scope = SCOPES.join(' ');

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'juris-cli',
      token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
      response_types: [],
      redirect_uris: [],
      scope,
      id_token_signed_response_alg: ALG,
    },
    {
      client_id: 'ci-bot',
      client_secret: 'ci-bot-secret',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      id_token_signed_response_alg: ALG,
    },
  ],
  jwks: { keys: [jwk] },
  scopes: SCOPES,
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
  // Scope claims also go into the id_token (the access token is for the gateway, not userinfo).
  conformIdTokenClaims: false,
  findAccount: (ctx, id) => ({
    accountId: id,
    claims: () => ({ sub: id, email: emailOf(id), email_verified: true, groups: groupsOf(id) }),
  }),
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    userinfo: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        if (resourceIndicator !== audience) {
          throw new Provider.errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
        }
        return {
          scope,
          audience,
          accessTokenTTL: ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: ALG } },
        };
      },
    },
  },
  // The CLI always gets a refresh token.
  issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
  extraTokenClaims(ctx, token) {
    if (token.accountId) {
      return { groups: groupsOf(token.accountId), email: emailOf(token.accountId) };
    }
    if (CLIENT_GROUPS[token.clientId]) {
      return { groups: CLIENT_GROUPS[token.clientId] };
    }
    return undefined;
  },
  ttl: {
    AccessToken: ttl,
    ClientCredentials: ttl,
    DeviceCode: 600,
    IdToken: ttl,
    RefreshToken: 86400,
    Grant: 86400,
    Session: 86400,
    Interaction: 600,
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

// ---------------------------------------------------------------------------
// TEST ONLY, LOOPBACK ONLY: sign arbitrary tokens so tests can present
// expired, not-yet-valid, wrong-issuer, wrong-audience, `alg: none`,
// unknown-kid and badly signed tokens. A real IdP never has such an endpoint.
//   POST /test/mint          {"header": {...}, "claims": {...}}  → provider's key
//   POST /test/mint-foreign  {"header": {...}, "claims": {...}}  → a fresh key, provider's kid
// Answers {"token": "..."}.
// ---------------------------------------------------------------------------
const b64json = (value) => base64url.encode(JSON.stringify(value));

async function mint(body, foreign) {
  const header = { alg: ALG, kid, typ: 'JWT', ...(body.header ?? {}) };
  const claims = body.claims ?? {};
  if (header.alg === 'none') {
    return `${b64json(header)}.${b64json(claims)}.`;
  }
  if (header.alg !== ALG) {
    throw new Error(`can only sign with ${ALG} or alg none`);
  }
  const key = foreign ? (await generateKeyPair(ALG)).privateKey : privateKey;
  return new SignJWT(claims).setProtectedHeader(header).sign(key);
}

const isLoopback = (address) => address === '127.0.0.1' || address === '::1' || address === '::ffff:127.0.0.1';

async function testEndpoint(req, res) {
  const send = (status, value) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(value));
  };
  if (!isLoopback(req.socket.remoteAddress)) return send(403, { error: 'loopback only' });
  if (req.method !== 'POST') return send(405, { error: 'POST only' });
  try {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
    const token = await mint(body, req.url === '/test/mint-foreign');
    return send(200, { token });
  } catch (err) {
    return send(400, { error: String(err.message ?? err) });
  }
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url === '/test/mint' || req.url === '/test/mint-foreign') {
    testEndpoint(req, res);
  } else {
    callback(req, res);
  }
});

process.stdout.write(`${JSON.stringify({ issuer, port: actualPort })}\n`);

const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
