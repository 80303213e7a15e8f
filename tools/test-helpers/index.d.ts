// Types of `smart-crm-consumer/test-helpers` (tools/test-helpers/index.js):
// development and test helpers, not part of the consumer's API.
import type { Logger } from '../../lib/index.js'

/** A private redis-server started by `startRedis` (a child of this process). */
export interface RedisServer {
  readonly port: number
  /** `redis://127.0.0.1:{port}` */
  readonly url: string
  readonly extraArgs: readonly (string | number)[]
  /** Its log file (deleted when this process exits unless REDIS_TEST_KEEP_LOGS is set). */
  readonly logFile: string
  /** PID of the current (latest) child process. */
  readonly pid: number
  /** Whether the current child has not exited yet. */
  readonly running: boolean
  /** SIGTERM, wait for exit (SIGKILL after 3 s). Idempotent. */
  stop(): Promise<void>
  /** SIGKILL and wait for exit. Idempotent. */
  kill(): Promise<void>
  /** Starts it again on the same port and waits until it answers. */
  restart(): Promise<void>
  /** SIGSTOP: sockets stay open, nothing is answered (a half-open link). */
  pause(): void
  /** SIGCONT: undoes `pause()`. */
  resume(): void
}

export interface StartRedisOptions {
  /** Default: a free port. 6379 (the shared Redis) is refused. */
  port?: number
  /** More redis-server arguments, e.g. `['--requirepass', 'secret']`. */
  extraArgs?: (string | number)[]
  /** A config file, first on the command line (a sentinel needs one it can rewrite). */
  configFile?: string
  /** Run as a sentinel (`--sentinel`; needs `configFile`). */
  sentinel?: boolean
  /** TLS only on `port` (paths); `url` is then `rediss://…`. */
  tls?: {
    certFile: string
    keyFile: string
    caFile?: string
    /** `--tls-auth-clients yes` (mutual TLS). */
    authClients?: boolean
    /** Presented by the readiness probe when `authClients` is set. */
    clientCertFile?: string
    clientKeyFile?: string
  }
  /** When a port is taken: try again (default) or throw at once with `err.addressInUse`. */
  retryBind?: boolean
}

/** Starts a private redis-server on 127.0.0.1 and waits until it answers PING as itself. */
export function startRedis(options?: StartRedisOptions): Promise<RedisServer>
/** Stops every server this process started. */
export function stopAllRedis(): Promise<void>
/** A TCP port that was free on 127.0.0.1 a moment ago (never 6379). */
export function freePort(): Promise<number>

export interface WaitForOptions {
  /** Milliseconds before it throws; default 10000. */
  timeout?: number
  /** Milliseconds between polls; default 5. */
  interval?: number
  /** Named in the error: `timed out after {timeout} ms waiting for {message}`. */
  message?: string
}

/** Polls `fn` until it returns a truthy value, which it resolves to. */
export function waitFor<T>(
  fn: () => T | PromiseLike<T>,
  options?: WaitForOptions,
): Promise<Exclude<T, false | 0 | '' | null | undefined>>

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'

/** A logger that drops every line except those of the `keep` levels (to `console[level]`). */
export function quietLogger(options?: { keep?: LogLevel[] }): Logger

/** A connection of the minimal RESP2 client (tools/test-helpers/resp.js). */
export interface RespClient {
  command(...args: (string | number | Buffer)[]): Promise<any>
  publish(channel: string, message: string | Buffer | object): Promise<number>
  subscribe(...channels: string[]): Promise<number>
  psubscribe(...patterns: string[]): Promise<number>
  unsubscribe(...channels: string[]): Promise<number>
  punsubscribe(...patterns: string[]): Promise<number>
  close(): Promise<void>
  destroy(): void
  on(event: 'message', listener: (channel: string, message: string) => void): this
  on(event: 'pmessage', listener: (pattern: string, channel: string, message: string) => void): this
  on(event: 'close', listener: () => void): this
  on(event: 'error', listener: (err: Error) => void): this
}

/** Connects (`redis://[user:pass@]host:port[/db]`, `rediss://` with `tls` options). */
export function connectRedis(
  url: string,
  options?: { connectTimeoutMs?: number; tls?: import('node:tls').ConnectionOptions },
): Promise<RespClient>

/** One command over a fresh connection to a port, a URL or a server. */
export function redisCommand(
  target: number | string | { url: string },
  args: (string | number)[],
  options?: {
    password?: string
    tls?: import('node:tls').ConnectionOptions
    connectTimeoutMs?: number
  },
): Promise<any>

/** The Redis Cluster hash slot of a key or sharded channel (hash tags included). */
export function keyslot(name: string): number

/** `{ sentinels, masterName, password?, sentinelPassword? }`: a `redisSentinel` option. */
export interface SentinelOptions {
  sentinels: string[]
  masterName: string
  password?: string
  sentinelPassword?: string
}

/** A primary, a replica and three sentinels (see `startSentinel`). */
export interface SentinelTopology {
  /** `['127.0.0.1:p', ...]` */
  readonly sentinels: string[]
  readonly masterName: string
  /** The data node started as primary (roles change on failover: `currentMaster()`). */
  readonly primary: RedisServer
  /** The data node started as replica. */
  readonly replica: RedisServer
  readonly sentinelProcs: RedisServer[]
  readonly servers: RedisServer[]
  readonly password?: string
  readonly sentinelPassword?: string
  /** PIDs of all five processes. */
  readonly pids: number[]
  /** Its temporary directory (removed by `stop()`). */
  readonly dir: string
  readonly setupMs: number
  /** The `redisSentinel` option for this topology. */
  readonly options: SentinelOptions
  /** The data node the (first running) sentinel names as master. */
  currentMaster(sentinel?: RedisServer): Promise<RedisServer | null>
  role(server: RedisServer): Promise<'master' | 'slave'>
  /** One command to a data node (password added). */
  command(server: RedisServer, args: (string | number)[]): Promise<any>
  /** One command to a sentinel (sentinel password added). */
  sentinelCommand(sentinel: RedisServer, args: (string | number)[]): Promise<any>
  numsub(server: RedisServer, channels: string[]): Promise<Record<string, number>>
  /** Waits until the sentinels agree on `master` (and, with `synced`/`seen`, on its replica). */
  waitStable(options?: {
    master?: RedisServer
    synced?: boolean
    seen?: boolean
    timeout?: number
  }): Promise<RedisServer>
  /** SENTINEL FAILOVER; resolves once every sentinel names the promoted replica (ROLE master). */
  failover(): Promise<{ from: RedisServer; to: RedisServer; ms: number }>
  /** Waits until the old master is a replica in sync (the sentinels demote it ~10 s after a failover). */
  waitDemoted(options?: { timeout?: number }): Promise<RedisServer>
  /** SIGKILLs the master; resolves once the sentinels have promoted the replica. */
  killPrimary(): Promise<{ killed: RedisServer; to: RedisServer; ms: number }>
  /** Stops every process and removes the temporary directory. Idempotent. */
  stop(): Promise<void>
}

/** Starts a primary, a replica and three sentinels (down-after 1 s) and waits until they agree. */
export function startSentinel(options?: {
  masterName?: string
  password?: string
  sentinelPassword?: string
  downAfterMs?: number
  failoverTimeoutMs?: number
}): Promise<SentinelTopology>

/** One line of CLUSTER NODES. */
export interface ClusterNode {
  id: string
  port: number
  flags: Set<string>
  masterId: string | null
  slots: [number, number][]
  connected: boolean
  server: RedisServer | null
}

/** A six-node Redis Cluster (see `startCluster`). */
export interface ClusterTopology {
  readonly servers: RedisServer[]
  /** `['redis://127.0.0.1:p', ...]` (with credentials when a password is set). */
  readonly nodes: string[]
  readonly options: { nodes: string[] }
  readonly pids: number[]
  readonly dir: string
  readonly setupMs: number
  command(server: RedisServer, args: (string | number)[]): Promise<any>
  keyslot(name: string): number
  topology(server?: RedisServer): Promise<ClusterNode[]>
  primaries(): Promise<RedisServer[]>
  replicas(): Promise<RedisServer[]>
  replicaOf(primary: RedisServer): Promise<RedisServer | null>
  primaryOf(replica: RedisServer): Promise<RedisServer | null>
  nodeForSlot(slot: number): Promise<RedisServer | null>
  nodeForChannel(channel: string): Promise<RedisServer | null>
  /** `PUBSUB NUMSUB` on every running node. */
  subscriptions(
    channels: string[],
  ): Promise<{ server: RedisServer; counts: Record<string, number | string> }[]>
  waitStable(options?: { timeout?: number }): Promise<true>
  /** CLUSTER FAILOVER on the primary's replica; resolves once every node agrees. */
  failoverPrimary(primary: RedisServer): Promise<{ from: RedisServer; to: RedisServer; ms: number }>
  /** SIGKILLs a node; for a primary, resolves once its replica has taken over. */
  kill(server: RedisServer): Promise<{ killed: RedisServer; to: RedisServer | null; ms: number }>
  stop(): Promise<void>
}

/** Starts a Redis Cluster (default three primaries with one replica each, node timeout 1 s). */
export function startCluster(options?: {
  masters?: number
  replicasPerMaster?: number
  nodeTimeoutMs?: number
  password?: string
}): Promise<ClusterTopology>

/** Test certificates (EC P-256) as PEM text, and their files. */
export interface TestCerts {
  readonly dir: string
  /** The CA that signed every certificate below except `otherCa`. */
  readonly ca: string
  /** Server certificate for `localhost` and `127.0.0.1`, and its key. */
  readonly cert: string
  readonly key: string
  /** Client certificate (mutual TLS), and its key. */
  readonly clientCert: string
  readonly clientKey: string
  /** An expired server certificate (same names), and its key. */
  readonly expiredCert: string
  readonly expiredKey: string
  /** A server certificate for `wrong.example` only, and its key. */
  readonly wrongNameCert: string
  readonly wrongNameKey: string
  /** An unrelated CA. */
  readonly otherCa: string
  readonly files: Record<
    | 'ca'
    | 'cert'
    | 'key'
    | 'clientCert'
    | 'clientKey'
    | 'expiredCert'
    | 'expiredKey'
    | 'wrongNameCert'
    | 'wrongNameKey'
    | 'otherCa',
    string
  >
  readonly ms: number
  /** Removes the directory now (otherwise when the process exits). */
  remove(): void
}

/** Makes the test certificates with the openssl CLI. */
export function makeCerts(): Promise<TestCerts>

/** A TLS-only redis-server (or, with `plain`, a plain one addressed as rediss://). */
export interface TlsRedis {
  /** `rediss://127.0.0.1:{port}` */
  readonly url: string
  readonly port: number
  readonly certs: TestCerts
  readonly server: RedisServer
  readonly pid: number
  readonly plain: boolean
  readonly setupMs: number
  /** `tls.connect` options trusting the CA and presenting the client certificate. */
  readonly tlsOptions: { ca: string; cert: string; key: string }
  command(args: (string | number)[]): Promise<any>
  stop(): Promise<void>
  kill(): Promise<void>
  restart(): Promise<void>
}

export function startTlsRedis(options?: {
  certs?: TestCerts
  requirePass?: string
  authClients?: boolean
  serverCert?: 'valid' | 'expired' | 'wrongName'
  plain?: boolean
}): Promise<TlsRedis>
