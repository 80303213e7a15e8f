'use strict'
// `npx smart-crm-consumer doctor` (SPEC §10): checks the setup a consumer of one
// tenant would run with, and prints one plain line per check, `pass`, `fail` or
// `skip` (a check that needs one that failed), then exits non-zero when any
// check failed.
//
// It reads the configuration the consumer reads (SPEC §2, §6: WRAPPER_URL,
// REDIS_URL / REDIS_SENTINELS / REDIS_CLUSTER_NODES / REDIS_HOST…, flags taking
// precedence), validates it with the consumer's own constructor, then asks
// Redis (reachable, PING, topology, TIME against this host's clock, the
// tenant's channels and their subscribers, a canary published and received
// back, the traffic within --listen-ms, every message checked as the consumer
// would: shape, tenant, topic, signature, timestamp) and the Wrapper (each list
// endpoint with X-Tenant-Id and the bearer token: status, rows, paging, ETag;
// the snapshot's size and load time; the Date header against this host's
// clock).
//
// Secrets (the bearer token, Redis passwords, signing secrets) come from the
// environment or a file, never from a flag (a command line is visible to every
// user of the host), and never appear in the output: URLs are printed with
// their password masked, and every line is scrubbed of every known secret
// before it is written.
//
// Runs with the package's runtime alone (lib/resp.js is its Redis client; the
// HTTP client is Node's fetch); the native addon is loaded only to validate the
// options and to verify signatures.

const { randomUUID } = require('node:crypto')
const fs = require('node:fs')
const { connectRedis } = require('./resp.js')

const TOPICS = ['credit-configs', 'roles', 'users', 'hierarchy', 'configs', 'cache', 'control']
/** eventType → its topic (SPEC §3). */
const EVENT_TOPIC = {
  'credit-config-changed': 'credit-configs',
  'credit-config-deleted': 'credit-configs',
  'role-changed': 'roles',
  'role-deleted': 'roles',
  'user-status-changed': 'users',
  'user-changed': 'users',
  'user-deleted': 'users',
  'hierarchy-changed': 'hierarchy',
  'config-changed': 'configs',
  'config-deleted': 'configs',
  'cache-invalidate': 'cache',
  'resync-required': 'control',
}
/** The side channel of the canary: no consumer subscribes to it, so none sees it. */
const CANARY_TOPIC = 'doctor'
const MAX_EVENT_BYTES = 64 * 1024
/** The ±window of signed timestamps (SPEC §3). */
const TIMESTAMP_WINDOW_MS = 5 * 60_000
const TENANT_RULE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
const MIN_REDIS_MAJOR = 6

/** The Wrapper's list endpoints (SPEC §4) and what a row must hold. */
const LISTS = [
  {
    path: '/api/credits/configs',
    id: 'operationCode',
    row: (r) =>
      typeof r.creditCost === 'number' &&
      Number.isFinite(r.creditCost) &&
      r.creditCost >= 0 &&
      (r.isActive === undefined || r.isActive === null || typeof r.isActive === 'boolean'),
  },
  { path: '/api/roles', id: 'roleId', row: (r) => isStringArray(r.permissions) },
  {
    path: '/api/users/access',
    id: 'userId',
    row: (r) => typeof r.status === 'string' && isStringArray(r.roles),
  },
  { path: '/api/configs/active', id: 'configId', row: (r) => 'config' in r },
]

const DEFAULTS = {
  channelPrefix: 'crm',
  listenMs: 5000,
  maxClockSkewMs: 30000, // the consumer's default (README, Configuration)
  requestTimeoutMs: 5000,
  initTimeoutMs: 10000, // the consumer's default
  maxResponseBytes: 64 * 1024 * 1024, // the consumer's default
  canaryTimeoutMs: 2000,
  connectTimeoutMs: 3000,
}

function isStringArray(v) {
  return Array.isArray(v) && v.every((x) => typeof x === 'string')
}

/** SPEC §3's id rule (crates/core/src/ids.rs). */
function isValidId(s) {
  return (
    typeof s === 'string' &&
    s !== '' &&
    s !== '.' &&
    s !== '..' &&
    Buffer.byteLength(s) <= 256 &&
    !/\p{Cc}/u.test(s)
  )
}

// ---------------------------------------------------------------------------
// Secrets

/**
 * Returns `text` with every secret in `secrets` (and its percent-encoded form)
 * replaced by `***`. Longer secrets first, so one secret inside another is
 * never left half visible.
 */
function redact(text, secrets) {
  let out = String(text)
  const forms = new Set()
  for (const s of secrets) {
    if (typeof s !== 'string' || s === '') continue
    forms.add(s)
    forms.add(encodeURIComponent(s))
  }
  for (const s of [...forms].sort((a, b) => b.length - a.length)) out = out.split(s).join('***')
  return out
}

/** A URL for display: the password masked (the user name kept), no query or fragment. */
function displayUrl(url) {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    u.search = ''
    u.hash = ''
    return u.toString().replace(/\/$/, '')
  } catch {
    return '(unparsable URL)'
  }
}

// ---------------------------------------------------------------------------
// Configuration

const USAGE = `usage: smart-crm-consumer doctor [options]

Checks what a consumer of one tenant depends on and prints one line per check:
pass, fail, or skip (needs a check that failed). Exit status 0 only when every
check passes, 1 when one fails, 2 for a usage error.

  --tenant T              tenant id (else TENANT_ID)
  --wrapper URL           the Wrapper's base URL (else WRAPPER_URL); alias --wrapper-url
  --redis URL             redis:// or rediss:// (else REDIS_URL, REDIS_SENTINELS +
                          REDIS_SENTINEL_MASTER, REDIS_CLUSTER_NODES, REDIS_HOST/PORT/
                          USERNAME/PASSWORD, else redis://127.0.0.1:6379); alias --redis-url
  --channel-prefix P      default crm
  --listen-ms N           how long to listen for the tenant's traffic (default 5000)
  --max-clock-skew-ms N   clock skew allowed against Redis, the Wrapper and event
                          timestamps (default 30000, the consumer's maxClockSkewMs)
  --request-timeout-ms N  per Wrapper request (default 5000)
  --init-timeout-ms N     the consumer's initTimeoutMs: a snapshot slower than
                          this fails (default 10000)
  --token-file FILE       the Wrapper's bearer token, read from FILE (else WRAPPER_TOKEN)
  --signing-secret-file FILE
                          signing secrets, one per line (else SIGNING_SECRET)
  --json                  one JSON object per check instead of plain lines
  --help

Secrets are never taken from a flag: a command line is visible to every user
of this host. Set WRAPPER_TOKEN and SIGNING_SECRET, or name files.
`

class UsageError extends Error {}

const VALUE_FLAGS = {
  '--tenant': 'tenantId',
  '--wrapper': 'wrapperUrl',
  '--wrapper-url': 'wrapperUrl',
  '--redis': 'redisUrl',
  '--redis-url': 'redisUrl',
  '--channel-prefix': 'channelPrefix',
  '--listen-ms': 'listenMs',
  '--max-clock-skew-ms': 'maxClockSkewMs',
  '--request-timeout-ms': 'requestTimeoutMs',
  '--init-timeout-ms': 'initTimeoutMs',
  '--token-file': 'tokenFile',
  '--signing-secret-file': 'signingSecretFile',
}
const SECRET_FLAGS = ['--token', '--wrapper-token', '--signing-secret', '--password']
const NUMBER_FIELDS = ['listenMs', 'maxClockSkewMs', 'requestTimeoutMs', 'initTimeoutMs']

/** Parses the doctor's arguments (after `doctor`). Throws a UsageError. */
function parseArgs(argv) {
  const args = {}
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i]
    let value
    const eq = a.indexOf('=')
    if (a.startsWith('--') && eq !== -1) {
      value = a.slice(eq + 1)
      a = a.slice(0, eq)
    }
    if (a === '--help' || a === '-h') {
      args.help = true
      continue
    }
    if (a === '--json') {
      args.json = true
      continue
    }
    if (SECRET_FLAGS.includes(a)) {
      const env = a === '--signing-secret' ? 'SIGNING_SECRET' : 'WRAPPER_TOKEN'
      throw new UsageError(
        `${a} is not accepted: a secret on the command line is visible to every user of this host; set ${env} or use ${a === '--signing-secret' ? '--signing-secret-file' : '--token-file'}`,
      )
    }
    const name = VALUE_FLAGS[a]
    if (!name) throw new UsageError(`unknown argument: ${a}`)
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`)
      value = argv[++i]
    }
    if (NUMBER_FIELDS.includes(name)) {
      const n = Number(value)
      if (!Number.isInteger(n) || n < 0) throw new UsageError(`${a} must be a non-negative integer`)
      args[name] = n
    } else args[name] = value
  }
  return args
}

function readSecretFile(file, flag) {
  try {
    return fs.readFileSync(file, 'utf8')
  } catch (err) {
    throw new UsageError(`${flag}: cannot read the file (${err.code || 'error'})`)
  }
}

/** Where Redis is, as the consumer would find it (SPEC §6, README "Production Redis"). */
function redisTarget(args, env) {
  if (args.redisUrl) return { kind: 'url', url: args.redisUrl, from: '--redis' }
  if (env.REDIS_URL) return { kind: 'url', url: env.REDIS_URL, from: 'REDIS_URL' }
  if (env.REDIS_SENTINELS) {
    return {
      kind: 'sentinel',
      sentinels: env.REDIS_SENTINELS.split(',').map((s) => s.trim()),
      masterName: env.REDIS_SENTINEL_MASTER,
      password: env.REDIS_PASSWORD,
      from: 'REDIS_SENTINELS',
    }
  }
  if (env.REDIS_CLUSTER_NODES) {
    return {
      kind: 'cluster',
      nodes: env.REDIS_CLUSTER_NODES.split(',').map((s) => s.trim()),
      from: 'REDIS_CLUSTER_NODES',
    }
  }
  const u = new URL('redis://127.0.0.1:6379')
  let from = 'the default'
  try {
    if (env.REDIS_HOST) u.hostname = env.REDIS_HOST
    if (env.REDIS_PORT) u.port = env.REDIS_PORT
    if (env.REDIS_USERNAME) u.username = encodeURIComponent(env.REDIS_USERNAME)
    if (env.REDIS_PASSWORD) u.password = encodeURIComponent(env.REDIS_PASSWORD)
  } catch {
    // the consumer's constructor names what is wrong (config check)
  }
  if (env.REDIS_HOST || env.REDIS_PORT || env.REDIS_USERNAME || env.REDIS_PASSWORD)
    from = 'REDIS_HOST/REDIS_PORT/REDIS_USERNAME/REDIS_PASSWORD'
  return { kind: 'url', url: u.toString(), from }
}

/**
 * The doctor's settings from its arguments and the environment: `{ tenantId,
 * wrapperUrl, redis, token, signingSecrets, channelPrefix, listenMs, … }`.
 * Throws a UsageError.
 */
function resolveConfig(argv, env = process.env) {
  const args = parseArgs(argv)
  if (args.help) return { help: true }
  let token = env.WRAPPER_TOKEN || null
  if (args.tokenFile) token = readSecretFile(args.tokenFile, '--token-file').trim() || null
  let signingSecrets = env.SIGNING_SECRET ? [env.SIGNING_SECRET] : []
  if (args.signingSecretFile) {
    signingSecrets = readSecretFile(args.signingSecretFile, '--signing-secret-file')
      .split(/\r?\n/)
      .map((s) => s.trim())
      .filter((s) => s !== '')
  }
  const redis = redisTarget(args, env)
  const secrets = [token, ...signingSecrets, env.REDIS_PASSWORD]
  const urls = redis.kind === 'url' ? [redis.url] : redis.kind === 'cluster' ? redis.nodes : []
  for (const url of urls) {
    try {
      const p = new URL(url).password
      if (p) secrets.push(p, decodeURIComponent(p))
    } catch {
      // not a URL: the config check says so
    }
  }
  return {
    tenantId: args.tenantId ?? env.TENANT_ID ?? null,
    wrapperUrl: args.wrapperUrl ?? env.WRAPPER_URL ?? null,
    redis,
    token,
    signingSecrets,
    secrets: secrets.filter((s) => typeof s === 'string' && s.length > 0),
    channelPrefix: args.channelPrefix ?? DEFAULTS.channelPrefix,
    listenMs: args.listenMs ?? DEFAULTS.listenMs,
    maxClockSkewMs: args.maxClockSkewMs ?? DEFAULTS.maxClockSkewMs,
    requestTimeoutMs: args.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs,
    initTimeoutMs: args.initTimeoutMs ?? DEFAULTS.initTimeoutMs,
    maxResponseBytes: DEFAULTS.maxResponseBytes,
    json: Boolean(args.json),
  }
}

// ---------------------------------------------------------------------------
// Formatting

const pass = (detail) => ({ status: 'pass', detail })
const fail = (detail) => ({ status: 'fail', detail })
const skip = (detail) => ({ status: 'skip', detail })

function ms(x) {
  if (!Number.isFinite(x)) return String(x)
  const a = Math.abs(x)
  if (a >= 10_000) return `${(x / 1000).toFixed(1)} s`
  if (a >= 100) return `${Math.round(x)} ms`
  if (a >= 1) return `${x.toFixed(1)} ms`
  return `${x.toFixed(2)} ms`
}

function bytes(n) {
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`
  return `${n} B`
}

const plural = (n, one, many = `${one}s`) => `${n.toLocaleString('en-US')} ${n === 1 ? one : many}`

function errorText(err) {
  if (!err) return 'unknown error'
  const cause = err.cause
  if (err.name === 'TimeoutError' || (cause && cause.name === 'TimeoutError')) return 'timed out'
  const code = (cause && cause.code) || err.code
  if (code === 'ECONNREFUSED') return 'connection refused'
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `host not found (${code})`
  if (code === 'ECONNRESET') return 'connection reset'
  if (code) return `${code}${err.message && !err.message.includes(code) ? ` (${err.message})` : ''}`
  return (cause && cause.message) || err.message || String(err)
}

/**
 * The skew of a remote clock against this host's, from one or more
 * observations `{ lo, hi }` (the remote minus the local time lies in
 * [lo, hi]): their intersection (or the narrowest one, if the clocks moved),
 * as `{ estimate, lo, hi, minAbs }`.
 */
function skewOf(observations) {
  let lo = -Infinity
  let hi = Infinity
  for (const o of observations) {
    lo = Math.max(lo, o.lo)
    hi = Math.min(hi, o.hi)
  }
  if (lo > hi) {
    const narrow = [...observations].sort((a, b) => a.hi - a.lo - (b.hi - b.lo))[0]
    lo = narrow.lo
    hi = narrow.hi
  }
  const minAbs = lo > 0 ? lo : hi < 0 ? -hi : 0
  return { estimate: (lo + hi) / 2, lo, hi, minAbs }
}

function skewLine(who, skew, bound, resolution) {
  const e = skew.estimate
  const dir = e >= 0 ? 'ahead of' : 'behind'
  const amount = `${ms(Math.abs(e))} ${dir} this host (±${ms((skew.hi - skew.lo) / 2)}${resolution})`
  if (skew.minAbs > bound) {
    return fail(
      `${who} is ${amount}, beyond the ${ms(bound)} allowed: signed events are rejected as expired when the publisher's and the consumer's clocks disagree by more than maxClockSkewMs; synchronise the clocks (NTP)`,
    )
  }
  return pass(`${who} is ${amount}; limit ${ms(bound)}`)
}

// ---------------------------------------------------------------------------
// The checks

const REDIS_CHECKS = [
  'redis',
  'redis topology',
  'redis clock',
  'channels',
  'canary',
  'traffic',
  'events',
  'signing',
  'event clock',
]
const WRAPPER_CHECKS = [
  'wrapper',
  ...LISTS.map((l) => `wrapper GET ${l.path}`),
  'snapshot',
  'wrapper clock',
]
/** Every check, in the order of the output (the slow traffic checks last). */
const ORDER = ['config', ...REDIS_CHECKS.slice(0, 5), ...WRAPPER_CHECKS, ...REDIS_CHECKS.slice(5)]

/** Results by check name, settled in any order, written in ORDER. */
class Results {
  constructor(write) {
    this._write = write
    this._done = new Map()
    this._next = 0
    this.list = []
  }

  set(name, result) {
    if (!ORDER.includes(name)) throw new Error(`doctor: unknown check ${name}`)
    if (this._done.has(name)) return
    this._done.set(name, result)
    while (this._next < ORDER.length && this._done.has(ORDER[this._next])) {
      const n = ORDER[this._next++]
      const r = { name: n, ...this._done.get(n) }
      this.list.push(r)
      this._write(r)
    }
  }

  /** Marks every check not yet settled among `names` as skipped. */
  skipAll(names, why) {
    for (const n of names) if (!this._done.has(n)) this.set(n, skip(why))
  }

  get failed() {
    return this.list.filter((r) => r.status === 'fail')
  }
}

/** The consumer's options for this configuration (validated by its constructor). */
function consumerOptions(cfg) {
  const o = {
    tenantId: cfg.tenantId,
    channelPrefix: cfg.channelPrefix,
    maxClockSkewMs: cfg.maxClockSkewMs,
    initTimeoutMs: cfg.initTimeoutMs,
    logger: { debug() {}, info() {}, warn() {}, error() {} },
  }
  if (cfg.wrapperUrl) o.wrapperUrl = cfg.wrapperUrl
  if (cfg.token) o.wrapperToken = cfg.token
  if (cfg.signingSecrets.length > 0) o.signingSecret = cfg.signingSecrets
  const r = cfg.redis
  if (r.kind === 'url') o.redisUrl = r.url
  else if (r.kind === 'sentinel') {
    o.redisSentinel = { sentinels: r.sentinels }
    if (r.masterName) o.redisSentinel.masterName = r.masterName
    if (r.password) o.redisSentinel.password = r.password
  } else o.redisCluster = { nodes: r.nodes }
  return o
}

function checkConfig(cfg) {
  if (!cfg.tenantId) return fail('no tenant id: pass --tenant or set TENANT_ID')
  if (!TENANT_RULE.test(cfg.tenantId))
    return fail('the tenant id does not match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$')
  if (!cfg.wrapperUrl) return fail('no Wrapper URL: pass --wrapper or set WRAPPER_URL')
  let SmartCRMConsumer
  try {
    ;({ SmartCRMConsumer } = require('./consumer.js'))
  } catch (err) {
    return fail(
      `the native addon does not load on ${process.platform}-${process.arch}: ${err.message}`,
    )
  }
  try {
    const c = new SmartCRMConsumer(consumerOptions(cfg))
    c.shutdown().catch(() => {})
  } catch (err) {
    return fail(`the consumer refuses these options: ${err.message}`)
  }
  const r = cfg.redis
  const where =
    r.kind === 'url'
      ? `Redis ${displayUrl(r.url)} (from ${r.from})`
      : r.kind === 'sentinel'
        ? `Redis master '${r.masterName}' via sentinels ${r.sentinels.join(', ')}`
        : `Redis cluster via ${r.nodes.map(displayUrl).join(', ')}`
  const secrets = cfg.signingSecrets.length
  return pass(
    [
      `tenant ${cfg.tenantId}`,
      `Wrapper ${displayUrl(cfg.wrapperUrl)}`,
      where,
      `channel prefix ${cfg.channelPrefix}`,
      cfg.token ? 'bearer token set' : 'no bearer token',
      secrets === 0
        ? 'no signing secret'
        : `signing secret set${secrets > 1 ? ` (${secrets} for rotation)` : ''}`,
    ].join(', '),
  )
}

// --- Redis

function redisErrorText(err) {
  if (err && (err.code === 'WRONGPASS' || err.code === 'NOAUTH' || err.code === 'NOPERM'))
    return `Redis refused the credentials (${err.code})`
  // Redis 6+: "ERR AUTH <password> called without any password configured for
  // the default user…" (the text is literal: Redis never echoes the password)
  if (err && err.name === 'RedisReplyError' && /\bAUTH\b.*without any password/.test(err.message))
    return 'the URL gives a password but this Redis server has none set for the user (remove it from the URL, or set requirepass / an ACL user)'
  if (err && err.name === 'RedisReplyError') return `Redis replied: ${err.message}`
  return errorText(err)
}

/** Opens a command connection where the consumer would: `{ client, url, via }`. */
async function openRedis(cfg) {
  const r = cfg.redis
  const opts = { connectTimeoutMs: DEFAULTS.connectTimeoutMs }
  if (r.kind === 'url') {
    const client = await connectRedis(r.url, opts)
    return { client, url: r.url, via: null }
  }
  if (r.kind === 'cluster') {
    const errors = []
    for (const node of r.nodes) {
      try {
        const client = await connectRedis(node, opts)
        return { client, url: node, via: null }
      } catch (err) {
        errors.push(`${displayUrl(node)}: ${redisErrorText(err)}`)
      }
    }
    throw new Error(`no cluster node answers (${errors.join('; ')})`)
  }
  // Sentinel: ask each sentinel for the master, connect to the first answer.
  const errors = []
  for (const s of r.sentinels) {
    let sentinel
    try {
      sentinel = await connectRedis(`redis://${s}`, opts)
      const addr = await sentinel.command('SENTINEL', 'get-master-addr-by-name', r.masterName)
      if (!addr) throw new Error(`knows no master named '${r.masterName}'`)
      const u = new URL(`redis://${addr[0].includes(':') ? `[${addr[0]}]` : addr[0]}:${addr[1]}`)
      if (r.password) u.password = encodeURIComponent(r.password)
      const client = await connectRedis(u.toString(), opts)
      return { client, url: u.toString(), via: s }
    } catch (err) {
      errors.push(`sentinel ${s}: ${redisErrorText(err)}`)
    } finally {
      if (sentinel) sentinel.destroy()
    }
  }
  throw new Error(errors.join('; '))
}

function infoFields(text) {
  const out = {}
  for (const line of String(text).split(/\r?\n/)) {
    const i = line.indexOf(':')
    if (i > 0 && !line.startsWith('#')) out[line.slice(0, i)] = line.slice(i + 1).trim()
  }
  return out
}

async function checkTopology(cfg, client, via) {
  const info = infoFields(await client.command('INFO', 'server'))
  const repl = infoFields(await client.command('INFO', 'replication'))
  const version = info.redis_version || 'unknown'
  const major = Number(version.split('.')[0])
  const mode = info.redis_mode || 'standalone'
  const role = repl.role || 'unknown'
  if (Number.isFinite(major) && major < MIN_REDIS_MAJOR)
    return fail(`Redis ${version}: the consumer speaks RESP3 and needs Redis 6 or later`)
  if (mode === 'sentinel')
    return fail(
      `this address is a sentinel (Redis ${version}), not a data server: give the sentinels as REDIS_SENTINELS with REDIS_SENTINEL_MASTER (or redisSentinel)`,
    )
  let detail
  if (mode === 'cluster') {
    const ci = infoFields(await client.command('CLUSTER', 'INFO'))
    if (ci.cluster_state !== 'ok')
      return fail(`cluster state is ${ci.cluster_state || 'unknown'} (Redis ${version})`)
    detail = `cluster, state ok, ${ci.cluster_known_nodes ?? '?'} nodes known, this node a ${role}`
    if (cfg.redis.kind !== 'cluster')
      detail +=
        ' (named as one server: events still arrive, pub/sub is broadcast; list the nodes as REDIS_CLUSTER_NODES to survive losing this one)'
  } else if (via) {
    if (role !== 'master')
      return fail(`the sentinels name a ${role} as master '${cfg.redis.masterName}'`)
    detail = `Sentinel master '${cfg.redis.masterName}' (named by ${via}), role master`
  } else {
    detail = `standalone server, role ${role}`
    if (role === 'slave') detail += ' (a replica: events published on the master still arrive here)'
  }
  return pass(`${detail}, Redis ${version}`)
}

async function checkRedisClock(cfg, client) {
  const observations = []
  for (let i = 0; i < 3; i++) {
    const t0 = Date.now()
    const [sec, usec] = await client.command('TIME')
    const t1 = Date.now()
    const remote = Number(sec) * 1000 + Number(usec) / 1000
    // Date.now() counts whole milliseconds: this host's time lay in [t0, t1 + 1).
    observations.push({ lo: remote - (t1 + 1), hi: remote - t0 })
  }
  return skewLine("Redis's clock (TIME)", skewOf(observations), cfg.maxClockSkewMs, '')
}

async function checkChannels(cfg, client) {
  const channels = TOPICS.map((t) => `${cfg.channelPrefix}:${cfg.tenantId}:${t}`)
  const reply = await client.command('PUBSUB', 'NUMSUB', ...channels)
  const counts = []
  for (let i = 0; i < reply.length; i += 2) counts.push(Number(reply[i + 1]))
  const names = `${cfg.channelPrefix}:${cfg.tenantId}:{${TOPICS.join(',')}}`
  const min = Math.min(...counts)
  const max = Math.max(...counts)
  let subs
  if (max === 0)
    subs =
      'no subscriber now (no consumer of this tenant is connected to this Redis node at the moment)'
  else if (min === max) subs = `${plural(min, 'subscriber')} on each`
  else
    subs = `subscribers per channel: ${TOPICS.map((t, i) => `${t} ${counts[i]}`).join(', ')} (consumers subscribe to all seven)`
  return pass(`${names}; ${subs}`)
}

/**
 * Subscribes (PSUBSCRIBE) to the tenant's channels, and to hint patterns
 * (the same tenant under another prefix, other tenants under this prefix),
 * publishes the canary, then listens for `listenMs`.
 */
async function listen(cfg, results, url) {
  const prefix = cfg.channelPrefix
  const tenant = cfg.tenantId
  const own = `${prefix}:${tenant}:*`
  const otherPrefix = `*:${tenant}:*`
  const otherTenants = `${prefix}:*`
  const canaryChannel = `${prefix}:${tenant}:${CANARY_TOPIC}`
  const sub = await connectRedis(url, { connectTimeoutMs: DEFAULTS.connectTimeoutMs })
  const seen = {
    messages: [],
    offTopic: new Map(),
    otherPrefix: new Map(),
    otherTenants: new Map(),
  }
  const canaryId = `doctor-${randomUUID()}`
  let canaryAt = null
  let resolveCanary
  const canaryArrived = new Promise((resolve) => (resolveCanary = resolve))
  const bump = (map, key) => {
    if (map.has(key) || map.size < 20) map.set(key, (map.get(key) ?? 0) + 1)
  }
  sub.on('pmessage', (pattern, channel, message) => {
    const at = Date.now()
    if (pattern === own) {
      if (channel === canaryChannel) {
        if (message.includes(canaryId)) {
          canaryAt = performance.now()
          resolveCanary()
        }
        return
      }
      const topic = channel.slice(prefix.length + tenant.length + 2)
      if (TOPICS.includes(topic)) seen.messages.push({ topic, channel, message, at })
      else bump(seen.offTopic, channel)
    } else if (pattern === otherPrefix) {
      if (!channel.startsWith(`${prefix}:`)) bump(seen.otherPrefix, channel)
    } else if (pattern === otherTenants) {
      if (!channel.startsWith(`${prefix}:${tenant}:`)) bump(seen.otherTenants, channel)
    }
  })
  sub.on('error', () => {})
  const started = performance.now()
  try {
    await sub.psubscribe(own, otherPrefix, otherTenants)
    // The canary: a well-formed event (signed when a secret is set) on a side
    // channel that no consumer subscribes to.
    const pub = await connectRedis(url, { connectTimeoutMs: DEFAULTS.connectTimeoutMs })
    try {
      const canary = {
        eventId: canaryId,
        eventType: 'doctor-canary',
        tenantId: tenant,
        timestamp: new Date(Date.now()).toISOString(),
        data: {},
      }
      if (cfg.signingSecrets.length > 0) {
        const { signMessage } = require('./index.js')
        canary.signature = signMessage(canary, cfg.signingSecrets[0])
      }
      const sentAt = performance.now()
      const receivers = await pub.publish(canaryChannel, JSON.stringify(canary))
      const arrived = await Promise.race([
        canaryArrived.then(() => true),
        new Promise((r) => setTimeout(r, DEFAULTS.canaryTimeoutMs, false)),
      ])
      results.set(
        'canary',
        arrived
          ? pass(
              `published on ${canaryChannel} (a channel no consumer subscribes to) and received back in ${ms(canaryAt - sentAt)}`,
            )
          : fail(
              `published on ${canaryChannel} but not received back within ${ms(DEFAULTS.canaryTimeoutMs)} (PUBLISH counted ${plural(receivers, 'receiver')}): pub/sub does not reach subscribers on this Redis (ACL channel rules? a proxy that drops pub/sub?)`,
            ),
      )
    } finally {
      pub.destroy()
    }
    const left = cfg.listenMs - (performance.now() - started)
    if (left > 0) await new Promise((r) => setTimeout(r, left))
  } finally {
    sub.destroy()
  }
  return { ...seen, elapsedMs: performance.now() - started }
}

function sample(map, n = 3) {
  return [...map.keys()].slice(0, n).join(', ')
}

function checkTraffic(cfg, seen) {
  const byTopic = new Map()
  for (const m of seen.messages) byTopic.set(m.topic, (byTopic.get(m.topic) ?? 0) + 1)
  const hints = []
  if (seen.offTopic.size > 0)
    hints.push(
      `messages on ${sample(seen.offTopic)}, which no consumer subscribes to (topics: ${TOPICS.join(', ')})`,
    )
  if (seen.otherPrefix.size > 0)
    hints.push(
      `messages for this tenant under another prefix: ${sample(seen.otherPrefix)} (is the channel prefix right?)`,
    )
  if (seen.otherTenants.size > 0 && byTopic.size === 0)
    hints.push(`messages for other tenants: ${sample(seen.otherTenants)} (is the tenant id right?)`)
  const hint = hints.length > 0 ? `; ${hints.join('; ')}` : ''
  if (seen.messages.length === 0) {
    return fail(
      `no traffic on channel ${cfg.channelPrefix}:${cfg.tenantId}:* within ${ms(seen.elapsedMs)}${hint}. A quiet tenant is normal for a short while (run again with a longer --listen-ms); otherwise the publisher uses another Redis, prefix or tenant id, or does not publish`,
    )
  }
  const parts = [...byTopic].map(([t, n]) => `${t} ${n}`).join(', ')
  return pass(
    `${plural(seen.messages.length, 'message')} in ${ms(seen.elapsedMs)} on ${byTopic.size} of ${TOPICS.length} channels (${parts})${hint}`,
  )
}

/** Every message checked as the consumer would (SPEC §3). */
function examine(cfg, seen) {
  let signMessage = null
  if (cfg.signingSecrets.length > 0) ({ signMessage } = require('./index.js'))
  const rejected = {}
  const reject = (reason) => (rejected[reason] = (rejected[reason] ?? 0) + 1)
  const signing = { signed: 0, unsigned: 0, badlySigned: 0, byKey: cfg.signingSecrets.map(() => 0) }
  const lags = []
  for (const m of seen.messages) {
    if (Buffer.byteLength(m.message) > MAX_EVENT_BYTES) {
      reject('tooLarge')
      continue
    }
    let ev
    try {
      ev = JSON.parse(m.message)
    } catch {
      reject('malformed (not JSON)')
      continue
    }
    if (ev === null || typeof ev !== 'object' || Array.isArray(ev)) {
      reject('malformed (not an object)')
      continue
    }
    if (typeof ev.signature === 'string') signing.signed++
    if (
      typeof ev.eventType !== 'string' ||
      typeof ev.tenantId !== 'string' ||
      ev.data === null ||
      typeof ev.data !== 'object' ||
      Array.isArray(ev.data)
    ) {
      reject('malformed (eventType, tenantId and data are required)')
      continue
    }
    if (ev.tenantId !== cfg.tenantId) {
      reject('wrongTenant')
      continue
    }
    const topic = EVENT_TOPIC[ev.eventType]
    if (topic === undefined) {
      reject('unknownType')
      continue
    }
    if (topic !== m.topic) {
      reject('wrongTopic')
      continue
    }
    let ts = null
    if (ev.timestamp !== undefined) {
      ts = typeof ev.timestamp === 'string' ? Date.parse(ev.timestamp) : NaN
      if (Number.isNaN(ts)) {
        reject('malformed (timestamp)')
        continue
      }
      lags.push(m.at - ts)
    }
    if (signMessage !== null) {
      if (typeof ev.signature !== 'string') {
        signing.unsigned++
        reject('badSignature (unsigned)')
        continue
      }
      const key = cfg.signingSecrets.findIndex((s) => {
        try {
          return signMessage(m.message, s) === ev.signature
        } catch {
          return false // JSON the signer cannot canonicalise: no signature can match
        }
      })
      if (key === -1) {
        signing.badlySigned++
        reject('badSignature (no configured secret made it)')
        continue
      }
      signing.byKey[key]++
      if (typeof ev.eventId !== 'string' || ts === null) {
        reject('malformed (eventId and timestamp are required with a secret)')
        continue
      }
    }
  }
  return { rejected, signing, lags, total: seen.messages.length }
}

function checkEvents(cfg, x) {
  if (x.total === 0) return skip('no event to check')
  const bad = Object.entries(x.rejected).filter(([r]) => !r.startsWith('badSignature'))
  const n = bad.reduce((a, [, c]) => a + c, 0)
  if (n > 0) {
    return fail(
      `${n} of ${plural(x.total, 'event')} would be rejected: ${bad.map(([r, c]) => `${r} ${c}`).join(', ')} (counted in the consumer's eventsRejected)`,
    )
  }
  return pass(
    `all ${plural(x.total, 'event')} well-formed, for tenant ${cfg.tenantId}, on their topics`,
  )
}

function checkSigning(cfg, x) {
  const s = x.signing
  if (cfg.signingSecrets.length === 0) {
    const note =
      x.total === 0
        ? ''
        : s.signed > 0
          ? `; ${s.signed} of ${plural(x.total, 'event')} carry a signature: set the secret here (SIGNING_SECRET) to check them`
          : `; the ${plural(x.total, 'event')} seen are unsigned`
    return pass(
      `no signing secret: consumers accept unsigned events (anyone who can publish on ${cfg.channelPrefix}:${cfg.tenantId}:* can change what they serve)${note}`,
    )
  }
  if (x.total === 0) return skip('a signing secret is set, but no event came to check it against')
  if (s.unsigned > 0 || s.badlySigned > 0) {
    const what = []
    if (s.unsigned > 0) what.push(`${s.unsigned} unsigned`)
    if (s.badlySigned > 0)
      what.push(`${s.badlySigned} badly signed (no configured secret made them)`)
    return fail(
      `${what.join(' and ')} of ${plural(x.total, 'event')} while a signing secret is set: consumers reject them as badSignature. The publisher must sign with the first of the consumers' secrets`,
    )
  }
  const ok = s.byKey.reduce((a, b) => a + b, 0)
  const keys =
    cfg.signingSecrets.length > 1
      ? ` (${s.byKey.map((n, i) => `secret ${i + 1}: ${n}`).join(', ')})`
      : ''
  return pass(`${ok} of ${plural(x.total, 'event')} signed with a configured secret${keys}`)
}

function checkEventClock(cfg, x) {
  if (x.lags.length === 0) return skip('no event carried a timestamp')
  const sorted = [...x.lags].sort((a, b) => a - b)
  const med = sorted[sorted.length >> 1]
  const worst = sorted.reduce((a, b) => (Math.abs(b) > Math.abs(a) ? b : a))
  const describe = (lag) => (lag >= 0 ? `${ms(lag)} behind` : `${ms(-lag)} ahead of`)
  const figures = `event timestamps are ${describe(med)} this host's clock on arrival (median of ${x.lags.length}; worst ${describe(worst)})`
  if (cfg.signingSecrets.length === 0)
    return pass(`${figures}; without a signing secret timestamps are not checked`)
  const late = sorted.filter((l) => l > cfg.maxClockSkewMs).length
  const outside = sorted.filter((l) => Math.abs(l) > TIMESTAMP_WINDOW_MS).length
  if (outside > 0 || late > 0) {
    return fail(
      `${figures}: ${outside > 0 ? `${outside} outside the ±5 min window (rejected as expired)` : `${late} stamped more than maxClockSkewMs (${ms(cfg.maxClockSkewMs)}) before arrival (rejected as expired when a full load started after them)`}; the publisher's clock or this host's is off, or events are delayed`,
    )
  }
  return pass(figures)
}

// --- Wrapper

/** One GET to the Wrapper: `{ status, headers, text, ms, skew }`; throws on a network error. */
async function wrapperGet(cfg, path, extraHeaders = {}) {
  const url = cfg.wrapperUrl.replace(/\/+$/, '') + path
  const headers = { 'X-Tenant-Id': cfg.tenantId, Accept: 'application/json', ...extraHeaders }
  if (cfg.token) headers.Authorization = `Bearer ${cfg.token}`
  const t0 = Date.now()
  const p0 = performance.now()
  const res = await fetch(url, {
    headers,
    redirect: 'manual',
    signal: AbortSignal.timeout(cfg.requestTimeoutMs),
  })
  const buf = Buffer.from(await res.arrayBuffer())
  const t1 = Date.now()
  const date = Date.parse(res.headers.get('date') ?? '')
  return {
    status: res.status,
    headers: res.headers,
    buf,
    ms: performance.now() - p0,
    // The Date header has one-second resolution: the server's time lay in [date, date + 1 s).
    skew: Number.isNaN(date) ? null : { lo: date - t1, hi: date + 1000 - t0 },
  }
}

function statusProblem(res, path) {
  const s = res.status
  if (s === 401 || s === 403)
    return `WRAPPER_AUTH: HTTP ${s} for GET ${path}: the Wrapper refuses these credentials for this tenant (check WRAPPER_TOKEN and the tenant id)`
  if (s >= 300 && s < 400)
    return `INVALID_RESPONSE: HTTP ${s} (a redirect) for GET ${path}: the consumer never follows redirects; give the final base URL as WRAPPER_URL`
  if (s >= 500) return `WRAPPER_UNAVAILABLE: HTTP ${s} for GET ${path}`
  if (s === 404 || s === 405)
    return `INVALID_RESPONSE: HTTP ${s} for GET ${path}: is ${displayUrl(res.base)} the Wrapper's base URL?`
  if (s < 200 || s >= 300) {
    let why = ''
    try {
      const body = JSON.parse(res.buf.toString('utf8'))
      if (body && typeof body.error === 'string') why = ` (${body.error.slice(0, 80)})`
    } catch {
      // no JSON body
    }
    return `INVALID_RESPONSE: HTTP ${s} for GET ${path}${why}`
  }
  return null
}

/** Loads one list endpoint page by page, as the consumer does; a result plus figures. */
async function loadList(cfg, list, clock) {
  let rows = 0
  let bytesRead = 0
  let pages = 0
  let badRows = 0
  let firstBad = null
  let etag = null
  let cursor = null
  const cursors = new Set()
  const t0 = performance.now()
  const answered = (result) => ({ result, answered: true })
  for (;;) {
    const path = cursor === null ? list.path : `${list.path}?cursor=${encodeURIComponent(cursor)}`
    let res
    try {
      res = await wrapperGet(cfg, path)
    } catch (err) {
      const result = fail(`WRAPPER_UNAVAILABLE: GET ${list.path}: ${errorText(err)}`)
      return { result, answered: pages > 0 }
    }
    res.base = cfg.wrapperUrl
    if (res.skew) clock.push(res.skew)
    const problem = statusProblem(res, list.path)
    if (problem) return { result: fail(problem), answered: pages > 0 }
    pages++
    bytesRead += res.buf.length
    if (res.buf.length > cfg.maxResponseBytes)
      return answered(
        fail(
          `INVALID_RESPONSE: a page of ${bytes(res.buf.length)} exceeds maxResponseBytes (${bytes(cfg.maxResponseBytes)})`,
        ),
      )
    if (pages === 1) etag = res.headers.get('etag')
    let body
    try {
      body = JSON.parse(res.buf.toString('utf8'))
    } catch {
      return answered(fail(`INVALID_RESPONSE: GET ${list.path} page ${pages} is not JSON`))
    }
    let items
    let next = null
    if (Array.isArray(body)) items = body
    else if (body && typeof body === 'object' && Array.isArray(body.items)) {
      items = body.items
      next = body.nextCursor ?? null
      if (next !== null && typeof next !== 'string')
        return answered(fail('INVALID_RESPONSE: nextCursor must be a string or null'))
    } else
      return answered(
        fail(
          `INVALID_RESPONSE: GET ${list.path} answers neither an array nor { items, nextCursor }`,
        ),
      )
    for (const row of items) {
      const ok =
        row !== null &&
        typeof row === 'object' &&
        isValidId(row[list.id]) &&
        list.row(row) &&
        (row.version === undefined ||
          row.version === null ||
          (Number.isSafeInteger(row.version) && row.version >= 0))
      if (!ok) {
        badRows++
        if (firstBad === null) firstBad = rows
      }
      rows++
    }
    if (next === null) break
    if (cursors.has(next))
      return answered(
        fail(
          `INVALID_RESPONSE: GET ${list.path} repeats a cursor after ${plural(pages, 'page')}: a paging cycle (the consumer refuses the load)`,
        ),
      )
    cursors.add(next)
    cursor = next
  }
  const took = performance.now() - t0
  if (badRows > 0)
    return answered(
      fail(
        `INVALID_RESPONSE: ${badRows} of ${plural(rows, 'row')} have the wrong shape (first: row ${firstBad}; each needs a valid ${list.id} and the fields of SPEC §4): the consumer refuses the load`,
      ),
    )
  return { answered: true, result: null, rows, bytes: bytesRead, pages, took, etag }
}

/** The list's pass line, after asking again with If-None-Match when it sent an ETag. */
async function listLine(cfg, list, r) {
  let etagNote = 'no ETag (every load downloads the list again)'
  if (r.etag) {
    try {
      const again = await wrapperGet(cfg, list.path, { 'If-None-Match': r.etag })
      etagNote =
        again.status === 304
          ? 'ETag, 304 on If-None-Match'
          : `ETag, but If-None-Match got ${again.status} (reloads download it again)`
    } catch (err) {
      etagNote = `ETag, but the If-None-Match request failed (${errorText(err)})`
    }
  }
  const paged = r.pages > 1 ? ' (paged)' : ''
  return pass(
    `200, ${plural(r.rows, 'row')} in ${plural(r.pages, 'page')}${paged}, ${bytes(r.bytes)}, ${ms(r.took)}, ${etagNote}`,
  )
}

function wrapperClock(cfg, clock) {
  if (clock.length === 0) return skip('the Wrapper sends no Date header')
  const skew = skewOf(clock)
  return skewLine("the Wrapper's clock (Date header)", skew, cfg.maxClockSkewMs, ', 1 s resolution')
}

async function wrapperPart(cfg, results) {
  const clock = []
  // The four lists at once, as the consumer loads them.
  const t0 = performance.now()
  const all = await Promise.all(LISTS.map((l) => loadList(cfg, l, clock)))
  const loadMs = performance.now() - t0
  const refused = all.find((r) => !r.answered)
  if (refused) {
    results.set('wrapper', refused.result)
    if (clock.length > 0) results.set('wrapper clock', wrapperClock(cfg, clock))
    results.skipAll(WRAPPER_CHECKS, 'the Wrapper did not answer')
    return
  }
  const auth = cfg.token ? 'bearer token' : 'no bearer token'
  results.set(
    'wrapper',
    pass(
      `${displayUrl(cfg.wrapperUrl)} answers the list endpoints (X-Tenant-Id ${cfg.tenantId}, ${auth})`,
    ),
  )
  for (let i = 0; i < LISTS.length; i++) {
    const r = all[i]
    results.set(`wrapper GET ${LISTS[i].path}`, r.result ?? (await listLine(cfg, LISTS[i], r)))
  }
  if (all.some((r) => r.result !== null)) {
    results.set('snapshot', skip('a list endpoint failed'))
  } else {
    const rows = all.reduce((a, r) => a + r.rows, 0)
    const size = all.reduce((a, r) => a + r.bytes, 0)
    const pages = all.reduce((a, r) => a + r.pages, 0)
    const what = `${plural(rows, 'row')} in ${plural(pages, 'page')}, ${bytes(size)}, loaded in ${ms(loadMs)}`
    results.set(
      'snapshot',
      loadMs > cfg.initTimeoutMs
        ? fail(
            `${what}: longer than initTimeoutMs (${ms(cfg.initTimeoutMs)}), so initialize() would reject before the cache is complete`,
          )
        : pass(`${what} (initTimeoutMs ${ms(cfg.initTimeoutMs)})`),
    )
  }
  results.set('wrapper clock', wrapperClock(cfg, clock))
}

async function redisPart(cfg, results) {
  const names = REDIS_CHECKS
  let conn
  try {
    const t0 = performance.now()
    conn = await openRedis(cfg)
    const reply = await conn.client.command('PING')
    const took = performance.now() - t0
    if (reply !== 'PONG') throw new Error(`PING answered ${String(reply).slice(0, 40)}`)
    results.set(
      'redis',
      pass(`${displayUrl(conn.url)} answers PING (connect and PING in ${ms(took)})`),
    )
  } catch (err) {
    if (conn) conn.client.destroy()
    results.set('redis', fail(`REDIS_UNAVAILABLE: ${describeTarget(cfg)}: ${redisErrorText(err)}`))
    results.skipAll(names, 'Redis is not reachable')
    return
  }
  const { client, url, via } = conn
  try {
    const guarded = async (name, fn) => {
      try {
        results.set(name, await fn())
      } catch (err) {
        results.set(name, fail(redisErrorText(err)))
      }
    }
    await guarded('redis topology', () => checkTopology(cfg, client, via))
    await guarded('redis clock', () => checkRedisClock(cfg, client))
    await guarded('channels', () => checkChannels(cfg, client))
  } finally {
    client.destroy()
  }
  let seen
  try {
    seen = await listen(cfg, results, url)
  } catch (err) {
    results.set('canary', fail(`cannot subscribe or publish: ${redisErrorText(err)}`))
    results.skipAll(names, 'the subscription failed')
    return
  }
  results.set('traffic', checkTraffic(cfg, seen))
  const x = examine(cfg, seen)
  results.set('events', checkEvents(cfg, x))
  results.set('signing', checkSigning(cfg, x))
  results.set('event clock', checkEventClock(cfg, x))
}

function describeTarget(cfg) {
  const r = cfg.redis
  if (r.kind === 'url') return displayUrl(r.url)
  if (r.kind === 'cluster') return `cluster ${r.nodes.map(displayUrl).join(', ')}`
  return `sentinels ${r.sentinels.join(', ')}`
}

/**
 * Runs every check; `write(result)` is called with each `{ name, status,
 * detail }` in ORDER as soon as it and those before it are known (secrets
 * already scrubbed). Resolves to `{ ok, results }`.
 */
async function runDoctor(cfg, { write = () => {} } = {}) {
  const results = new Results((r) => write({ ...r, detail: redact(r.detail, cfg.secrets) }))
  const config = checkConfig(cfg)
  results.set('config', config)
  if (config.status !== 'pass') {
    results.skipAll(ORDER, 'the configuration is incomplete')
  } else {
    await Promise.all([
      redisPart(cfg, results),
      wrapperPart(cfg, results).catch((err) => {
        results.set('wrapper', fail(errorText(err)))
        results.skipAll(WRAPPER_CHECKS, 'the Wrapper checks stopped')
      }),
    ])
    results.skipAll(ORDER, 'not run')
  }
  const list = results.list.map((r) => ({ ...r, detail: redact(r.detail, cfg.secrets) }))
  return { ok: !list.some((r) => r.status === 'fail'), results: list }
}

/** `smart-crm-consumer doctor ...`: resolves to the exit status. */
async function main(
  argv,
  { env = process.env, stdout = process.stdout, stderr = process.stderr } = {},
) {
  let cfg
  try {
    cfg = resolveConfig(argv, env)
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    stderr.write(`smart-crm-consumer doctor: ${err.message}\n\n${USAGE}`)
    return 2
  }
  if (cfg.help) {
    stdout.write(USAGE)
    return 0
  }
  const write = cfg.json
    ? (r) => stdout.write(`${JSON.stringify(r)}\n`)
    : (r) => stdout.write(`${r.status} ${r.name}: ${r.detail}\n`)
  const { ok } = await runDoctor(cfg, { write })
  return ok ? 0 : 1
}

module.exports = { main, runDoctor, resolveConfig, redact, displayUrl, skewOf, USAGE, ORDER }
