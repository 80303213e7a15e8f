// Types of the public API of smart-crm-consumer (SPEC §2-§3).
import { EventEmitter } from 'node:events'

/** Anything with debug/info/warn/error (console, pino, winston). */
export interface Logger {
  debug(...args: unknown[]): void
  info(...args: unknown[]): void
  warn(...args: unknown[]): void
  error(...args: unknown[]): void
}

/** Reference-cache TTLs in milliseconds. */
export interface TtlOptions {
  /** `user:{id}`; default 300000 (5 min). */
  userProfiles?: number
  /** `hierarchy:{id}`; default 900000 (15 min). */
  hierarchy?: number
  /** `audit:{id}`; default 3600000 (1 h). */
  auditLogs?: number
  /** `historical:{key}`; default 86400000 (24 h). */
  historicalData?: number
  /** How long a Wrapper 404 is remembered; default 30000. */
  notFound?: number
}

/** A Sentinel-managed master (SPEC §6). */
export interface RedisSentinelOptions {
  /** `host:port` of each sentinel. */
  sentinels: string[]
  /** The master's name at the sentinels. */
  masterName: string
  /** ACL user and password of the master. */
  username?: string
  password?: string
  /** Password of the sentinels, when they have one. */
  sentinelPassword?: string
  db?: number
  /** TLS to the sentinels and the master. */
  tls?: boolean
}

/** A Redis Cluster (SPEC §6): any reachable subset of its nodes. */
export interface RedisClusterOptions {
  nodes: string[]
}

/** TLS material for a private CA or mutual TLS (PEM text). */
export interface RedisTlsOptions {
  ca?: string
  cert?: string
  key?: string
  /** The name the server's certificate is checked against, when it is not the host connected to. */
  servername?: string
}

/** Exactly one of `redisUrl`, `redisSentinel`, `redisCluster` (or none: the environment). */
export interface RedisOptions {
  /**
   * Default `REDIS_URL`, else `REDIS_SENTINELS` + `REDIS_SENTINEL_MASTER`, else
   * `REDIS_CLUSTER_NODES`, else built from REDIS_HOST/PORT/USERNAME/PASSWORD, else
   * redis://127.0.0.1:6379; `rediss://` = TLS.
   */
  redisUrl?: string
  redisSentinel?: RedisSentinelOptions
  redisCluster?: RedisClusterOptions
  redisTls?: RedisTlsOptions
}

export interface SmartCRMConsumerOptions extends RedisOptions {
  /**
   * 'pubsub' (default) or 'stream': events are also kept in a per-tenant Redis
   * Stream; after a lost connection the consumer catches up from it instead of
   * reloading (SPEC §7). Needs a 'stream' or 'both' publisher and Redis ≥ 7.
   */
  transport?: 'pubsub' | 'stream'
  /** Default true with `transport: 'stream'` (only allowed there): one Wrapper load serves the fleet. */
  sharedSnapshot?: boolean
  /**
   * 0 (default) = off; e.g. 0.8: a hit on a reference entry older than that share of
   * its TTL is answered from the cache and refreshed once in the background, so a hot
   * entry never expires into a miss (SPEC §10). 0 ≤ ratio < 1.
   */
  refreshAheadRatio?: number
  /**
   * Default 256; 0 = off. Per reference kind, how many hit texts the JS side keeps
   * next to your handlers, so such a hit parses a fresh object without a call into
   * native code. An entry is used only until the native entry's refresh point and
   * only while no invalidation, replaced value or clear has happened since it was read.
   * Integer from 0 to 65536.
   */
  referenceHotEntries?: number
  /** Required; `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`. */
  tenantId: string
  /** Default `process.env.WRAPPER_URL`; one of the two must be set. */
  wrapperUrl?: string
  /** Sent as `Authorization: Bearer …`. */
  wrapperToken?: string
  /** Default 'crm'. */
  channelPrefix?: string
  /**
   * When set, unsigned or badly signed events are rejected. A list (non-empty,
   * at most 16) accepts a signature made with any of its secrets, so a fleet can
   * rotate its secret without rejecting events.
   */
  signingSecret?: string | string[]
  /**
   * With a `signingSecret`: a signed event whose timestamp predates the start of
   * the latest full load by more than this is rejected as `expired`
   * (it cannot be told from a replay after a restart); 0–300000, default 30000.
   */
  maxClockSkewMs?: number
  /**
   * A reload asked by `resync-required` waits a random 0–this (ms), and such
   * reloads start at least this far apart; 0–600000, default 5000.
   */
  resyncJitterMs?: number
  ttl?: TtlOptions
  /** How long past expiry a reference entry may be served while the Wrapper fails; default 3600000. */
  staleIfErrorMs?: number
  /** Ping interval on the subscription; default 5000. */
  heartbeatMs?: number
  /** Memory bound of the reference cache; default 64 MiB. */
  maxReferenceBytes?: number
  /** Periodic full reload of critical data; 0 = off; default 300000. */
  refreshIntervalMs?: number
  /** Per Wrapper request; default 2000. */
  requestTimeoutMs?: number
  /** Default 10000. */
  initTimeoutMs?: number
  /**
   * Wrapper circuit breakers: each opens after `failures` (default 5) consecutive unavailable calls and probes again after `coolDownMs` (default 5000).
   * There are two with these settings: one for snapshot loads (a whole load is one call, and its probe admits every page of it) and one for reference reads and credit calls, so neither path fails the other fast.
   */
  circuitBreaker?: { failures?: number; coolDownMs?: number }
  /**
   * Largest Wrapper response body read, in bytes; default 64 MiB (67108864). A larger one is `INVALID_RESPONSE`,
   * is not retried and is not buffered past the limit. One snapshot load reads at most 16 × this over all its pages.
   */
  maxResponseBytes?: number
  /**
   * Reference data (profiles, hierarchy, audit logs, history) gets a second tier
   * in Redis shared by the fleet: a local miss looks there before the Wrapper
   * (and keeps what it finds for the time it has left there), concurrent misses
   * across instances make one Wrapper request, and invalidations remove the
   * shared entry too (fenced: a fetch that began before one never writes after
   * it). Redis unavailable: local cache and Wrapper, as without it. Default false.
   * Layout: PROTOCOL.md, "Shared reference tier".
   */
  sharedReference?: boolean
  /** Default console. */
  logger?: Logger
}

/**
 * Codes on errors from the consumer (`err.code`). Argument errors are a
 * `TypeError` (`ERR_INVALID_ARG_TYPE`) or a `RangeError` (`ERR_OUT_OF_RANGE`),
 * option errors either class with `ERR_INVALID_OPTION`; `INTERNAL` is a bug
 * (a Rust panic caught before it could abort Node).
 */
export type ErrorCode =
  | 'REDIS_UNAVAILABLE'
  | 'WRAPPER_UNAVAILABLE'
  | 'WRAPPER_AUTH'
  | 'INVALID_RESPONSE'
  | 'NOT_FOUND'
  | 'INSUFFICIENT_CREDITS'
  | 'SHUTDOWN'
  | 'INTERNAL'
  | 'ERR_INVALID_OPTION'
  | 'ERR_INVALID_ARG_TYPE'
  | 'ERR_OUT_OF_RANGE'

export interface ConsumerError extends Error {
  code: ErrorCode
}

/** A rejection of `deductCredits()`. */
export interface DeductError extends ConsumerError {
  /**
   * The idempotency key the call used (given or generated), on every
   * rejection except a `TypeError` for a key that is not a string: retry with
   * it after an error the Wrapper may have applied, and it is charged once.
   */
  idempotencyKey?: string
  /** With `INSUFFICIENT_CREDITS`: the balance the Wrapper reported, when it did. */
  available?: number
}

export type RejectionReason =
  | 'malformed'
  | 'badSignature'
  | 'expired'
  | 'wrongTenant'
  | 'wrongTopic'
  | 'stale'
  | 'replay'
  | 'tooLarge'
  | 'unknownType'

export interface Metrics {
  criticalHits: number
  criticalMisses: number
  referenceHits: number
  referenceMisses: number
  /** 0 when there were no reads, never NaN. */
  criticalHitRate: number
  referenceHitRate: number
  overallHitRate: number
  totalRequests: number
  cacheSize: number
  criticalCacheSize: number
  referenceCacheSize: number
  referenceCacheBytes: number
  wrapperRequests: number
  wrapperErrors: number
  coalescedRequests: number
  staleServed: number
  /**
   * With `sharedReference`: local misses answered by the shared tier in Redis
   * (one per fetch, however many calls joined it); 0 without.
   */
  sharedHits: number
  /**
   * With `sharedReference`: local misses the shared tier did not hold, so this
   * instance asked the Wrapper (one per fetch); misses while Redis is
   * unavailable count in neither. 0 without.
   */
  sharedMisses: number
  eventsReceived: number
  eventsApplied: number
  eventsRejected: Record<RejectionReason, number>
  reconnects: number
  resyncs: number
  /** Times a bounded internal queue overflowed and its defined behaviour ran (README). */
  queueOverflows: number
  /** Reconnects caught up from the stream without a full reload (`transport: 'stream'`). */
  resumes: number
  /** Full loads by where their data came from. */
  snapshotLoads: { wrapper: number; redis: number }
  /** Shared snapshots that failed a check (format, tenant, size, digest, signature) and were ignored. */
  snapshotRejected: number
  connected: boolean
}

export interface Health {
  ready: boolean
  connected: boolean
  degraded: boolean
  /** Epoch ms or null. */
  lastEventAt: number | null
  lastSyncAt: number | null
  /** Why `degraded` is true, or null. */
  reason: 'redis-disconnected' | 'resync-failed' | 'wrapper-unavailable' | null
  /** The Wrapper circuit breakers: the worse of the snapshot and the reference breaker. */
  circuit: 'closed' | 'open' | 'half-open'
  /** Where the critical data of the last full load came from; null before the first. */
  source: 'wrapper' | 'snapshot' | null
}

export interface ChangeEvent {
  eventType: string
  /** e.g. `credit:{operationCode}`, `role:{roleId}`, `access:{userId}`, `config:{configId}`, `user:{id}`. */
  keys: string[]
}

export interface DeductOptions {
  operationCode?: string
  /** Generated when absent; reused by every retry. */
  idempotencyKey?: string
}

export interface DeductResult {
  remaining: number
  /** The key used (the one given, or the generated one). */
  idempotencyKey: string
}

export type JsonValue =
  null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue }

export declare class SmartCRMConsumer extends EventEmitter {
  /** A string is the tenant id, with everything else from the environment (SPEC §2). */
  constructor(options: SmartCRMConsumerOptions | string)
  readonly tenantId: string
  initialize(): Promise<void>

  getCreditCost(operationCode: string): number | null
  getRolePermissions(roleId: string): string[] | null
  getUserRoles(userId: string): string[] | null
  getUserStatus(userId: string): string | null
  getActiveConfig(configId: string): JsonValue | null
  checkPermission(userId: string, permission: string): boolean

  /**
   * Ids sent to the Wrapper follow the one id rule: 1-256 bytes of UTF-8, no
   * control characters, not `.` or `..` (else a `RangeError`, nothing sent).
   */
  getUserProfile(userId: string): Promise<Record<string, JsonValue>>
  /**
   * Profiles of `ids` (SPEC §10), in order: each a fresh object, or `null` for
   * a user the Wrapper does not know. Misses are fetched together
   * (`GET /api/users/profiles?ids=…`, at most 100 per request). Rejects only
   * when the batch as a whole fails; a `TypeError` for a non-array or a
   * non-string id, a `RangeError` for an id outside the id rule.
   */
  getUserProfiles(ids: readonly string[]): Promise<Array<Record<string, JsonValue> | null>>
  getHierarchy(entityId: string): Promise<Record<string, JsonValue>>
  getAuditLog(logId: string): Promise<Record<string, JsonValue>>
  getHistoricalData(key: string): Promise<Record<string, JsonValue>>
  getCacheExpiry(key: string): number | null
  invalidate(key: string): void

  getUserCredits(userId: string): Promise<number>
  checkCredits(operationCode: string, userId: string): Promise<boolean>
  /** Rejects with a {@link DeductError}: `err.idempotencyKey` is the key to retry with. */
  deductCredits(userId: string, amount: number, options?: DeductOptions): Promise<DeductResult>

  readonly isConnected: boolean
  health(): Health
  getMetrics(): Metrics
  metricsText(): string
  shutdown(): Promise<void>

  on(event: 'change', listener: (e: ChangeEvent) => void): this
  /** One entity's changes, e.g. `'change:credit:crm.leads.create'`, `'change:user:u1'` (SPEC §10). */
  on(event: `change:${string}`, listener: (e: ChangeEvent) => void): this
  on(event: 'connection', listener: (e: { connected: boolean }) => void): this
  /** `reason`: 'initial', 'reconnect', 'resync-required', 'refresh', or 'change-overflow' (no reload: 'change' events were dropped). */
  on(event: 'resync', listener: (e: { reason: string }) => void): this
  on(event: 'error', listener: (err: ConsumerError) => void): this
  off(event: 'change', listener: (e: ChangeEvent) => void): this
  off(event: `change:${string}`, listener: (e: ChangeEvent) => void): this
  off(event: 'connection', listener: (e: { connected: boolean }) => void): this
  off(event: 'resync', listener: (e: { reason: string }) => void): this
  off(event: 'error', listener: (err: ConsumerError) => void): this
}

/** Every consumer option except `tenantId`, applied to each tenant, and the pool's own (SPEC §8). */
export interface TenantPoolOptions extends Omit<SmartCRMConsumerOptions, 'tenantId'> {
  /** Tenants loaded at once; beyond it the least recently used is released. 1–10,000,000, default 10,000. */
  maxTenants?: number
  /** A tenant without reads for this long is released; 0 = never. Default 30 min. */
  idleTenantMs?: number
  /** Full loads of the pool's tenants downloading from the Wrapper at once (a reconnect resyncs them all). 1–1024, default 8. */
  maxConcurrentLoads?: number
}

export interface PoolMetrics {
  /** Tenants loaded. */
  tenants: number
  /** Every tenant's figures summed; the rates are those of the sums. */
  totals: Metrics
  /** Each loaded tenant's own figures (empty with `{ perTenant: false }`). */
  perTenant: Record<string, Metrics>
  /** The shared Redis link. */
  pool: {
    connected: boolean
    reconnects: number
    queueOverflows: number
    loadsInFlight: number
    /** With `sharedReference`: command connections opened (one for all tenants, plus reconnects). */
    commandConnections: number
  }
}

export interface PoolHealth {
  /** The shared Redis link is up. */
  connected: boolean
  tenants: number
  /** Loaded tenants whose `health().degraded` is true. */
  degradedTenants: string[]
}

export interface TenantReleasedEvent {
  tenantId: string
  reason: 'release' | 'idle' | 'maxTenants' | 'shutdown'
}

/** Many tenants over one Redis connection, one HTTP pool and one native runtime (SPEC §8). */
export declare class TenantPool extends EventEmitter {
  constructor(options: TenantPoolOptions)
  /**
   * The tenant's consumer, loaded on first use (concurrent calls share one
   * load). Rejects with a TypeError/RangeError for an invalid id, with
   * `WRAPPER_AUTH` when the Wrapper refuses the tenant, and with the other
   * `initialize()` codes when it cannot be loaded; a failed load is not kept.
   */
  tenant(tenantId: string): Promise<SmartCRMConsumer>
  /** The loaded tenant's consumer, or null: synchronous, loads nothing. */
  peek(tenantId: string): SmartCRMConsumer | null
  /** Ids of the loaded tenants. */
  tenants(): string[]
  /** Unsubscribes and frees the tenant; its consumer answers `SHUTDOWN` afterwards. */
  release(tenantId: string): Promise<void>
  getMetrics(options?: { perTenant?: boolean }): PoolMetrics
  /** One exposition; per-tenant series carry a `tenant` label (`{ perTenant: false }`: sums only). */
  metricsText(options?: { perTenant?: boolean }): string
  health(): PoolHealth
  shutdown(): Promise<void>
  on(
    event: 'tenantLoaded',
    listener: (e: { tenantId: string; consumer: SmartCRMConsumer }) => void,
  ): this
  on(event: 'tenantReleased', listener: (e: TenantReleasedEvent) => void): this
  /** The shared link's state. */
  on(event: 'connection', listener: (e: { connected: boolean }) => void): this
  /** The link's errors, and loaded tenants' errors that their consumer has no listener for (`err.tenantId`). */
  on(event: 'error', listener: (err: ConsumerError & { tenantId?: string }) => void): this
  off(
    event: 'tenantLoaded' | 'tenantReleased' | 'connection' | 'error',
    listener: (...args: any[]) => void,
  ): this
}

/** A tenant pool (SPEC §8); throws a `TypeError`/`RangeError` naming an invalid option. */
export declare function createTenantPool(options: TenantPoolOptions): TenantPool

export interface PublisherOptions extends RedisOptions {
  tenantId: string
  /** Default 'both': the pub/sub message and the stream entry, written atomically. */
  transport?: 'pubsub' | 'stream' | 'both'
  /** The stream is trimmed (approximately) to this many entries; default 100000. */
  streamMaxLen?: number
  /** Default 'crm'. */
  channelPrefix?: string
  /** Signs every message; with a list (non-empty, at most 16), with its first secret. */
  signingSecret?: string | string[]
  /** How long a publish waits for an unreachable Redis before it rejects with `REDIS_UNAVAILABLE`; 1–600000, default 5000. */
  connectTimeoutMs?: number
}

export type Topic =
  'credit-configs' | 'roles' | 'users' | 'hierarchy' | 'configs' | 'cache' | 'control'

/**
 * Connects on first use and reconnects by itself. Safe to share: concurrent
 * publishes use one connection.
 */
export interface Publisher {
  /**
   * Resolves to the number of receivers, once Redis has taken the message. While
   * Redis is unreachable it waits up to `connectTimeoutMs`, then rejects with
   * code `REDIS_UNAVAILABLE`; after `close()` it rejects with code `SHUTDOWN`.
   */
  publish(
    topic: Topic,
    eventType: string,
    data?: Record<string, JsonValue>,
    options?: { version?: number },
  ): Promise<number>
  /** Pending and later publishes reject with code `SHUTDOWN`. Idempotent. */
  close(): Promise<void>
}

/**
 * Returns the publisher at once (no I/O); throws a `TypeError`/`RangeError`
 * naming the option when one is invalid.
 */
export declare function createPublisher(options: PublisherOptions): Publisher
/** Hex HMAC-SHA256 of the RFC 8785 form of `message` without its `signature` member. */
export declare function signMessage(message: object | string, secret: string): string
/** The RFC 8785 (JCS) canonical form. */
export declare function canonicalize(value: JsonValue | string): string
