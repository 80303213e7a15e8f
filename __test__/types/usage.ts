// Compiled by package.spec.js: every public member is typed as documented.
import {
  SmartCRMConsumer,
  createPublisher,
  createTenantPool,
  signMessage,
  canonicalize,
} from 'smart-crm-consumer'
import type {
  Metrics,
  Health,
  ChangeEvent,
  ConsumerError,
  DeductError,
  Publisher,
  TenantPool,
  PoolMetrics,
  PoolHealth,
} from 'smart-crm-consumer'
import {
  requirePermission,
  requireCredits,
  metricsHandler,
  tenant as tenantMiddleware,
} from 'smart-crm-consumer/express'
import {
  startRedis,
  waitFor,
  quietLogger,
  startSentinel,
  startCluster,
  makeCerts,
  startTlsRedis,
  keyslot,
  connectRedis,
} from 'smart-crm-consumer/test-helpers'
import type { RedisServer } from 'smart-crm-consumer/test-helpers'
import { createTestConsumer } from 'smart-crm-consumer/testing'
import type {
  TestConsumer,
  TestConsumerOptions,
  Deduction,
  RejectedEventError,
} from 'smart-crm-consumer/testing'

async function main(): Promise<void> {
  const consumer = new SmartCRMConsumer({
    tenantId: 't',
    wrapperUrl: 'http://w',
    redisUrl: 'redis://127.0.0.1:6379',
    wrapperToken: 'x',
    channelPrefix: 'crm',
    signingSecret: 's',
    ttl: { userProfiles: 1, hierarchy: 1, auditLogs: 1, historicalData: 1, notFound: 1 },
    staleIfErrorMs: 1,
    heartbeatMs: 1000,
    maxReferenceBytes: 1,
    refreshIntervalMs: 0,
    requestTimeoutMs: 1,
    initTimeoutMs: 1,
    sharedReference: true,
    logger: console,
  })
  await consumer.initialize()
  const cost: number | null = consumer.getCreditCost('op')
  const perms: string[] | null = consumer.getRolePermissions('r')
  const roles: string[] | null = consumer.getUserRoles('u')
  const status: string | null = consumer.getUserStatus('u')
  const cfg = consumer.getActiveConfig('c')
  const allowed: boolean = consumer.checkPermission('u', 'p')
  const profile = await consumer.getUserProfile('u')
  const profiles: Array<Record<string, unknown> | null> = await consumer.getUserProfiles(['u', 'v'])
  await consumer.getHierarchy('h')
  await consumer.getAuditLog('a')
  await consumer.getHistoricalData('k')
  const expiry: number | null = consumer.getCacheExpiry('user:u')
  consumer.invalidate('user:u')
  const available: number = await consumer.getUserCredits('u')
  const enough: boolean = await consumer.checkCredits('op', 'u')
  const { remaining, idempotencyKey } = await consumer.deductCredits('u', 1, {
    operationCode: 'op',
    idempotencyKey: 'k',
  })
  const retryKey: string | undefined = await consumer.deductCredits('u', 1).then(
    () => undefined,
    (err: DeductError) => err.idempotencyKey,
  )
  const connected: boolean = consumer.isConnected
  const health: Health = consumer.health()
  const metrics: Metrics = consumer.getMetrics()
  const rejectedMalformed: number = metrics.eventsRejected.malformed
  const shared: number = metrics.sharedHits + metrics.sharedMisses
  const text: string = consumer.metricsText()
  consumer.on('change', (e: ChangeEvent) => e.keys.length)
  consumer.on('connection', (e) => e.connected)
  consumer.on('resync', (e) => e.reason)
  consumer.on('error', (err: ConsumerError) => err.code)
  await consumer.shutdown()
  const rotating = new SmartCRMConsumer({
    tenantId: 't',
    signingSecret: ['new', 'old'],
    maxClockSkewMs: 30000,
  })
  await rotating.shutdown()
  // createPublisher returns the publisher (not a promise); awaiting it still works.
  const pub: Publisher = createPublisher({
    tenantId: 't',
    redisUrl: 'redis://x',
    signingSecret: ['new', 'old'],
    connectTimeoutMs: 1000,
  })
  const awaited: Publisher = await createPublisher({ tenantId: 't', signingSecret: 's' })
  await awaited.close()
  const receivers: number = await pub.publish(
    'credit-configs',
    'credit-config-changed',
    { operationCode: 'op', newValue: 1 },
    { version: 1 },
  )
  await pub.close()
  const sig: string = signMessage({ a: 1 }, 's')
  const canon: string = canonicalize({ a: 1 })
  requirePermission(consumer, 'p', { getUserId: (req) => req.user?.id })
  requireCredits(consumer, 'op')
  metricsHandler(consumer)
  void [
    cost,
    perms,
    roles,
    status,
    cfg,
    allowed,
    profile,
    expiry,
    available,
    enough,
    remaining,
    idempotencyKey,
    connected,
    health,
    rejectedMalformed,
    shared,
    text,
    receivers,
    sig,
    canon,
  ]
}
void main

// smart-crm-consumer/test-helpers
async function helpers(): Promise<void> {
  const redis: RedisServer = await startRedis({ extraArgs: ['--requirepass', 'x'] })
  const url: string = redis.url
  const pid: number = redis.pid
  const consumer = new SmartCRMConsumer({
    tenantId: 't',
    redisUrl: url,
    logger: quietLogger({ keep: ['warn', 'error'] }),
  })
  const cost: number = await waitFor(() => consumer.getCreditCost('op'), {
    timeout: 1000,
    interval: 10,
    message: 'a cost',
  })
  await consumer.shutdown()
  await redis.stop()
  void [pid, cost]
}
void helpers

// smart-crm-consumer/test-helpers: topologies
async function topologies(): Promise<void> {
  const s = await startSentinel({ masterName: 'm', password: 'pw' })
  const f: { from: RedisServer; to: RedisServer; ms: number } = await s.failover()
  const sentinels: string[] = s.options.sentinels
  const c = await startCluster()
  const owner: RedisServer | null = await c.nodeForChannel('crm:t:configs')
  const slot: number = keyslot('crm:t:configs')
  const certs = await makeCerts()
  const x = await startTlsRedis({ certs, authClients: true, serverCert: 'expired' })
  const client = await connectRedis(x.url, { tls: x.tlsOptions })
  client.destroy()
  // SPEC §6: the Redis options of the consumer and the publisher
  const viaSentinel = new SmartCRMConsumer({
    tenantId: 't',
    redisSentinel: {
      sentinels,
      masterName: 'm',
      username: 'app',
      password: 'pw',
      sentinelPassword: 'spw',
      db: 0,
      tls: false,
    },
  })
  const viaCluster = new SmartCRMConsumer({ tenantId: 't', redisCluster: { nodes: c.nodes } })
  const viaTls = new SmartCRMConsumer({
    tenantId: 't',
    redisUrl: x.url,
    redisTls: {
      ca: certs.ca,
      cert: certs.clientCert,
      key: certs.clientKey,
      servername: 'localhost',
    },
  })
  const pubs = [
    createPublisher({ tenantId: 't', redisSentinel: s.options }),
    createPublisher({ tenantId: 't', redisCluster: c.options }),
    createPublisher({ tenantId: 't', redisUrl: x.url, redisTls: { ca: certs.ca } }),
  ]
  await Promise.all(pubs.map((p) => p.close()))
  void [viaSentinel, viaCluster, viaTls]
  await Promise.all([s.stop(), c.stop(), x.stop()])
  certs.remove()
  void [f, sentinels, owner, slot]
}
void topologies

// The tenant pool (SPEC §8) and its Express middleware.
async function pools(): Promise<void> {
  const pool: TenantPool = createTenantPool({
    wrapperUrl: 'http://w',
    redisUrl: 'redis://127.0.0.1:6379',
    maxTenants: 1000,
    idleTenantMs: 60_000,
    maxConcurrentLoads: 4,
    sharedReference: true,
  })
  const acme: SmartCRMConsumer = await pool.tenant('acme')
  const allowed: boolean = acme.checkPermission('u1', 'crm.leads.create')
  const peeked: SmartCRMConsumer | null = pool.peek('acme')
  const ids: string[] = pool.tenants()
  const m: PoolMetrics = pool.getMetrics({ perTenant: false })
  const total: number = m.totals.eventsApplied + m.tenants + m.totals.sharedHits
  const commandConnections: number = m.pool.commandConnections
  const text: string = pool.metricsText({ perTenant: false })
  const h: PoolHealth = pool.health()
  const degraded: string[] = h.degradedTenants
  pool.on('tenantReleased', (e) => {
    const why: 'release' | 'idle' | 'maxTenants' | 'shutdown' = e.reason
    void why
  })
  pool.on('error', (err) => void err.tenantId)
  const mw = tenantMiddleware(pool, { getTenantId: (req) => req.user?.tenantId })
  const guard = requirePermission((req) => req.crm, 'crm.leads.create')
  const credits = requireCredits((req) => req.crm, 'crm.leads.create')
  const metrics = metricsHandler(pool)
  await pool.release('acme')
  await pool.shutdown()
  void [
    allowed,
    peeked,
    ids,
    total,
    commandConnections,
    text,
    degraded,
    mw,
    guard,
    credits,
    metrics,
  ]
}
void pools

async function testDouble(): Promise<void> {
  const options: TestConsumerOptions = {
    tenantId: 'acme',
    credits: { 'crm.leads.create': 2.5, 'crm.old': null },
    roles: { sales: ['crm.leads.*'] },
    users: { u1: { status: 'active', roles: ['sales'] }, u2: { status: 'suspended' } },
    configs: { limits: { maxLeadsPerDay: 500 } },
    reference: { 'user:u1': { name: 'Ann' }, 'user:gone': null },
    balances: { u1: 100 },
    signingSecret: 's',
    logger: console,
  }
  const crm: TestConsumer = createTestConsumer(options)
  const asConsumer: SmartCRMConsumer = crm // the same type: it goes wherever a consumer goes
  await crm.initialize()
  const change: ChangeEvent = crm.apply(
    'credit-config-changed',
    { operationCode: 'crm.leads.create', newValue: 3 },
    { version: 2, eventId: 'e1', timestamp: new Date() },
  )
  crm.apply('resync-required')
  try {
    crm.apply('role-changed', { roleId: 'r', permissions: [] }, { version: 1 })
  } catch (err) {
    const why: RejectedEventError['reason'] = (err as RejectedEventError).reason
    void why
  }
  crm.setReference('user:u1', null)
  crm.setReference('hierarchy:h', { parent: 'root' })
  crm.failNext('getUserProfile', 'WRAPPER_UNAVAILABLE')
  crm.failNext('deductCredits', 'INSUFFICIENT_CREDITS')
  const log: Deduction[] = crm.deductions
  const key: string = log[0].idempotencyKey
  const op: string | null = log[0].operationCode
  const guard = requirePermission(crm, 'crm.leads.create')
  const credits = requireCredits(crm, 'crm.leads.create')
  const cost: number | null = crm.getCreditCost('crm.leads.create')
  const byName: TestConsumer = createTestConsumer('acme')
  await crm.shutdown()
  void [asConsumer, change, key, op, guard, credits, cost, byName]
}
void testDouble
