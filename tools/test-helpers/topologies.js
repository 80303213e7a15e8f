'use strict'
// Test helper (`smart-crm-consumer/test-helpers`): the Redis topologies of
// production (SPEC §6), as private throwaway processes for tests:
//
//   startSentinel   a primary, a replica and three sentinels (fast failure detection)
//   startCluster    a six-node Redis Cluster (three primaries, one replica each)
//   makeCerts       a CA, server and client certificates and bad ones (openssl CLI)
//   startTlsRedis   a TLS-only redis-server with those certificates (or a plain
//                   one to put behind rediss://)
//
// Every process is a `startRedis` child (redis-server.js): on free ports, never
// 6379, stopped by PID, and SIGKILLed with its temporary directory removed when
// this process exits however it ends. Setups take seconds: failure detection is
// shortened (down-after 1 s, cluster-node-timeout 1 s) and initial syncs are
// diskless with no delay.

const fs = require('node:fs')
const path = require('node:path')

const { startRedis, freePort, tempDir, removeTempDir, runTool } = require('./redis-server.js')
const { connectRedis } = require('./resp.js')

const HOST = '127.0.0.1'
const SETUP_TIMEOUT_MS = 20_000
const FAILOVER_TIMEOUT_MS = 20_000
const POLL_MS = 50

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls `fn` until it returns a truthy value; throws naming `what` (and the last error). */
async function until(fn, what, timeout) {
  const deadline = Date.now() + timeout
  let lastError = null
  for (;;) {
    try {
      const v = await fn()
      if (v) return v
      lastError = null
    } catch (err) {
      lastError = err
    }
    if (Date.now() > deadline) {
      const why = lastError ? ` (last error: ${lastError.message})` : ''
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${why}`)
    }
    await sleep(POLL_MS)
  }
}

/** `redis://[:password@]127.0.0.1:port` */
function urlOf(port, password) {
  return password
    ? `redis://:${encodeURIComponent(password)}@${HOST}:${port}`
    : `redis://${HOST}:${port}`
}

/**
 * Sends one command over a fresh connection (closed afterwards); resolves to
 * its reply. `target` is a port, a URL or a server (`{ url }`).
 */
async function command(target, args, { password, tls, connectTimeoutMs = 1000 } = {}) {
  const url =
    typeof target === 'number'
      ? urlOf(target, password)
      : typeof target === 'string'
        ? target
        : password
          ? target.url.replace('://', `://:${encodeURIComponent(password)}@`)
          : target.url
  const client = await connectRedis(url, { connectTimeoutMs, tls })
  try {
    return await client.command(...args)
  } finally {
    client.destroy()
  }
}

/** INFO text → `{ field: value }`. */
function parseInfo(text) {
  const out = {}
  for (const line of String(text).split('\r\n')) {
    const i = line.indexOf(':')
    if (i > 0 && !line.startsWith('#')) out[line.slice(0, i)] = line.slice(i + 1)
  }
  return out
}

/** A flat `[k, v, k, v]` reply → `{ k: v }`. */
function pairs(reply) {
  const out = {}
  for (let i = 0; i + 1 < reply.length; i += 2) out[reply[i]] = reply[i + 1]
  return out
}

const alive = (server) => server.running

// ---------------------------------------------------------------------------
// Sentinel

/**
 * Starts one primary, one replica (`--replicaof`) and three sentinels
 * (quorum 2, `down-after-milliseconds` 1000, `failover-timeout` 2000), and
 * waits until every sentinel sees the master, the replica and the two other
 * sentinels, and the replica is in sync.
 *
 * @param {object} [options]
 * @param {string} [options.masterName='mymaster']
 * @param {string} [options.password] `requirepass` (and `masterauth`) of both data nodes
 * @param {string} [options.sentinelPassword] `requirepass` of the sentinels
 * @param {number} [options.downAfterMs=1000]
 * @param {number} [options.failoverTimeoutMs=2000]
 */
async function startSentinel({
  masterName = 'mymaster',
  password,
  sentinelPassword,
  downAfterMs = 1000,
  failoverTimeoutMs = 2000,
} = {}) {
  const started = Date.now()
  const dir = tempDir('smart-crm-sentinel-')
  const dataArgs = [
    // a replica writes the RDB it receives to its dir: never the cwd
    '--dir',
    dir,
    '--repl-diskless-sync',
    'yes',
    '--repl-diskless-sync-delay',
    '0',
    '--repl-ping-replica-period',
    '1',
    ...(password ? ['--requirepass', password, '--masterauth', password] : []),
  ]
  const servers = []
  const sentinelProcs = []
  const stopAll = async () => {
    await Promise.all(sentinelProcs.map((s) => s.stop()))
    await Promise.all(servers.map((s) => s.stop()))
    removeTempDir(dir)
  }
  try {
    const primary = await startRedis({ extraArgs: [...dataArgs, '--dbfilename', 'primary.rdb'] })
    servers.push(primary)
    const replica = await startRedis({
      extraArgs: [...dataArgs, '--dbfilename', 'replica.rdb', '--replicaof', HOST, primary.port],
    })
    servers.push(replica)
    const data = (s) => ({ password, target: s })
    await until(
      async () =>
        parseInfo(await command(replica, ['INFO', 'replication'], data(replica)))
          .master_link_status === 'up',
      'the replica to sync',
      SETUP_TIMEOUT_MS,
    )

    for (let i = 0; i < 3; i++) {
      const file = path.join(dir, `sentinel-${i}.conf`)
      const lines = [
        `dir ${dir}`,
        `sentinel monitor ${masterName} ${HOST} ${primary.port} 2`,
        `sentinel down-after-milliseconds ${masterName} ${downAfterMs}`,
        `sentinel failover-timeout ${masterName} ${failoverTimeoutMs}`,
        `sentinel parallel-syncs ${masterName} 1`,
      ]
      if (password) lines.push(`sentinel auth-pass ${masterName} ${password}`)
      if (sentinelPassword) lines.push(`sentinel sentinel-pass ${sentinelPassword}`)
      fs.writeFileSync(file, `${lines.join('\n')}\n`)
      sentinelProcs.push(
        await startRedis({
          configFile: file,
          sentinel: true,
          extraArgs: sentinelPassword ? ['--requirepass', sentinelPassword] : [],
        }),
      )
    }
    const topo = new SentinelTopology({
      dir,
      masterName,
      password,
      sentinelPassword,
      primary,
      replica,
      sentinelProcs,
      stopAll,
    })
    await topo.waitStable({ synced: true, seen: true, timeout: SETUP_TIMEOUT_MS })
    topo.setupMs = Date.now() - started
    return topo
  } catch (err) {
    await stopAll()
    throw err
  }
}

class SentinelTopology {
  constructor({
    masterName,
    password,
    sentinelPassword,
    primary,
    replica,
    sentinelProcs,
    stopAll,
  }) {
    this.masterName = masterName
    /** `['127.0.0.1:p', ...]`, for `redisSentinel.sentinels`. */
    this.sentinels = sentinelProcs.map((s) => `${HOST}:${s.port}`)
    /** The data node started as primary / as replica (roles change on failover: `currentMaster()`). */
    this.primary = primary
    this.replica = replica
    this.sentinelProcs = sentinelProcs
    this.password = password
    this.sentinelPassword = sentinelPassword
    this.setupMs = 0
    this._stopAll = stopAll
  }

  /** `{ sentinels, masterName, password, sentinelPassword }`: an `redisSentinel` option. */
  get options() {
    const o = { sentinels: this.sentinels, masterName: this.masterName }
    if (this.password) o.password = this.password
    if (this.sentinelPassword) o.sentinelPassword = this.sentinelPassword
    return o
  }

  /** Both data nodes. */
  get servers() {
    return [this.primary, this.replica]
  }

  /** PIDs of every process of this topology (sentinels included). */
  get pids() {
    return [...this.servers, ...this.sentinelProcs].map((s) => s.pid)
  }

  /** One command to a data node (its password added). */
  command(server, args) {
    return command(server, args, { password: this.password })
  }

  /** One command to a sentinel (a RedisServer of `sentinelProcs`). */
  sentinelCommand(sentinel, args) {
    return command(sentinel, args, { password: this.sentinelPassword })
  }

  /** The data node the given (default: first running) sentinel names as master. */
  async currentMaster(sentinel = this.sentinelProcs.find(alive)) {
    const [, port] = await this.sentinelCommand(sentinel, [
      'SENTINEL',
      'GET-MASTER-ADDR-BY-NAME',
      this.masterName,
    ])
    return this.servers.find((s) => s.port === Number(port)) || null
  }

  /** `ROLE` of a data node: 'master' or 'slave'. */
  async role(server) {
    const [role] = await this.command(server, ['ROLE'])
    return role
  }

  /**
   * Waits until every running sentinel names `master` (default: whatever the
   * first one names) and `master` says ROLE master. With `synced`, also until
   * every other running data node is its replica in sync; with `seen` (implies
   * `synced`), until every sentinel knows those replicas as healthy and knows
   * the other sentinels (what a next `SENTINEL FAILOVER` needs). Resolves to
   * the master.
   */
  async waitStable({ master, synced = true, seen = synced, timeout = FAILOVER_TIMEOUT_MS } = {}) {
    const live = () => this.sentinelProcs.filter(alive)
    return until(
      async () => {
        const m = master || (await this.currentMaster())
        if (!m || !m.running) return false
        for (const s of live()) {
          const cur = await this.currentMaster(s)
          if (cur !== m) return false
        }
        if ((await this.role(m)) !== 'master') return false
        if (!synced && !seen) return m
        const others = this.servers.filter((s) => s !== m && s.running)
        for (const r of others) {
          const info = parseInfo(await this.command(r, ['INFO', 'replication']))
          if (info.role !== 'slave' || Number(info.master_port) !== m.port) return false
          if (info.master_link_status !== 'up') return false
        }
        if (!seen) return m
        for (const s of live()) {
          const mi = pairs(await this.sentinelCommand(s, ['SENTINEL', 'MASTER', this.masterName]))
          if (mi.flags !== 'master') return false
          if (Number(mi['num-other-sentinels']) < live().length - 1) return false
          const reps = (
            await this.sentinelCommand(s, ['SENTINEL', 'REPLICAS', this.masterName])
          ).map(pairs)
          for (const r of others) {
            const known = reps.find((x) => Number(x.port) === r.port)
            if (!known || known.flags !== 'slave' || known['master-link-status'] !== 'ok') {
              return false
            }
          }
        }
        return m
      },
      `the sentinels to agree on ${master ? `master :${master.port}` : 'a master'}`,
      timeout,
    )
  }

  /**
   * `SENTINEL FAILOVER` (forced: no quorum needed) and waits until every
   * sentinel names the promoted replica and it says ROLE master. Resolves to
   * `{ from, to, ms }`. It first waits (not counted in `ms`) until the
   * topology can fail over (replica in sync and known to the sentinels).
   *
   * The old master is still a master, with its clients connected, until the
   * sentinels reconfigure it as a replica (and kill its clients) about 10 s
   * later; `waitDemoted()` waits for that.
   */
  async failover() {
    const from = await this.waitStable({ synced: true, seen: true })
    const to = this.servers.find((s) => s !== from)
    const sentinel = this.sentinelProcs.find(alive)
    const t0 = Date.now()
    await until(
      async () => {
        try {
          return await this.sentinelCommand(sentinel, ['SENTINEL', 'FAILOVER', this.masterName])
        } catch (err) {
          // a replica not yet judged good (NOGOODSLAVE) or a failover already running (INPROG)
          if (/NOGOODSLAVE|INPROG/.test(err.message)) return false
          throw err
        }
      },
      'SENTINEL FAILOVER to be accepted',
      FAILOVER_TIMEOUT_MS,
    )
    await this.waitStable({ master: to, synced: false })
    return { from, to, ms: Date.now() - t0 }
  }

  /**
   * Waits until every other running data node is a replica of the current
   * master, in sync (after `failover()` the sentinels demote the old master
   * about 10 s later). Resolves to the master.
   */
  waitDemoted({ timeout = 30_000 } = {}) {
    return this.waitStable({ synced: true, seen: false, timeout })
  }

  /**
   * SIGKILLs the current master and waits until the sentinels have promoted
   * the replica (every sentinel names it, it says ROLE master). Resolves to
   * `{ killed, to, ms }`. The killed node stays down (`killed.restart()` brings
   * it back; the sentinels then make it a replica).
   */
  async killPrimary() {
    const killed = await this.waitStable({ synced: true, seen: true })
    const to = this.servers.find((s) => s !== killed)
    const t0 = Date.now()
    await killed.kill()
    await this.waitStable({ master: to, synced: false })
    return { killed, to, ms: Date.now() - t0 }
  }

  /** `PUBSUB NUMSUB` of `channels` on a data node, as `{ channel: count }`. */
  async numsub(server, channels) {
    const reply = await this.command(server, ['PUBSUB', 'NUMSUB', ...channels])
    return pairs(reply)
  }

  /** Stops the sentinels, then the data nodes; removes the temp dir. Idempotent. */
  stop() {
    return this._stopAll()
  }
}

// ---------------------------------------------------------------------------
// Cluster

/** CRC16 (XMODEM) of Redis Cluster. */
function crc16(buf) {
  let crc = 0
  for (const byte of buf) {
    crc ^= byte << 8
    for (let i = 0; i < 8; i++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  }
  return crc
}

/** The hash slot of a key (or a sharded channel), hash tags included: what `CLUSTER KEYSLOT` says. */
function keyslot(key) {
  let k = Buffer.from(String(key))
  const open = k.indexOf(0x7b) // {
  if (open !== -1) {
    const close = k.indexOf(0x7d, open + 1) // }
    if (close > open + 1) k = k.subarray(open + 1, close)
  }
  return crc16(k) % 16384
}

/** CLUSTER NODES text → `[{ id, port, flags: Set, masterId, slots: [[from, to]], connected }]`. */
function parseClusterNodes(text) {
  return String(text)
    .trim()
    .split('\n')
    .map((line) => {
      const f = line.trim().split(' ')
      const port = Number(/:(\d+)@/.exec(f[1])[1])
      const slots = f
        .slice(8)
        .filter((s) => !s.startsWith('['))
        .map((s) => {
          const [a, b] = s.split('-').map(Number)
          return [a, b === undefined ? a : b]
        })
      return {
        id: f[0],
        port,
        flags: new Set(f[2].split(',')),
        masterId: f[3] === '-' ? null : f[3],
        slots,
        connected: f[7] === 'connected',
      }
    })
}

/**
 * Starts a Redis Cluster: `masters` primaries with `replicasPerMaster`
 * replicas each (default 3 × 1 = six nodes, `--cluster-node-timeout` 1000),
 * created with `redis-cli --cluster create`, and waits until every node says
 * `cluster_state:ok`, knows every other node, and every replica is in sync.
 *
 * @param {object} [options]
 * @param {number} [options.masters=3]
 * @param {number} [options.replicasPerMaster=1]
 * @param {number} [options.nodeTimeoutMs=1000]
 * @param {string} [options.password] `requirepass` / `masterauth` of every node
 */
async function startCluster({
  masters = 3,
  replicasPerMaster = 1,
  nodeTimeoutMs = 1000,
  password,
} = {}) {
  const started = Date.now()
  const dir = tempDir('smart-crm-cluster-')
  const count = masters * (1 + replicasPerMaster)
  const servers = []
  const stopAll = async () => {
    await Promise.all(servers.map((s) => s.stop()))
    removeTempDir(dir)
  }
  try {
    const usedBus = new Set()
    const startNode = async (i) => {
      for (let attempt = 1; ; attempt++) {
        let bus
        do bus = await freePort()
        while (usedBus.has(bus))
        usedBus.add(bus)
        try {
          return await startRedis({
            retryBind: false,
            extraArgs: [
              '--cluster-enabled',
              'yes',
              '--cluster-config-file',
              path.join(dir, `nodes-${i}.conf`),
              '--cluster-node-timeout',
              nodeTimeoutMs,
              // the bus port is picked too: port + 10000 may be taken or past 65535
              '--cluster-port',
              bus,
              '--repl-diskless-sync',
              'yes',
              '--repl-diskless-sync-delay',
              '0',
              '--dir',
              dir,
              '--dbfilename',
              `node-${i}.rdb`,
              ...(password ? ['--requirepass', password, '--masterauth', password] : []),
            ],
          })
        } catch (err) {
          // the data port or the bus port was taken meanwhile: pick both again
          if (!err.addressInUse || attempt >= 10) throw err
        }
      }
    }
    for (const s of await Promise.all(Array.from({ length: count }, (_, i) => startNode(i)))) {
      servers.push(s)
    }
    await runTool(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...servers.map((s) => `${HOST}:${s.port}`),
        '--cluster-replicas',
        replicasPerMaster,
        '--cluster-yes',
        ...(password ? ['-a', password, '--no-auth-warning'] : []),
      ],
      { timeoutMs: SETUP_TIMEOUT_MS },
    )
    const cluster = new ClusterTopology({ dir, servers, password, stopAll })
    await cluster.waitStable({ timeout: SETUP_TIMEOUT_MS })
    cluster.setupMs = Date.now() - started
    return cluster
  } catch (err) {
    await stopAll()
    throw err
  }
}

class ClusterTopology {
  constructor({ dir, servers, password, stopAll }) {
    /** The temporary directory (nodes.conf files), removed by `stop()`. */
    this.dir = dir
    /** Every node, as RedisServer (`port`, `url`, `pid`, `kill()`, `restart()`, ...). */
    this.servers = servers
    /** `['redis://127.0.0.1:p', ...]`, for `redisCluster.nodes` (credentials included when a password is set). */
    this.nodes = servers.map((s) => urlOf(s.port, password))
    this.password = password
    this.setupMs = 0
    this._stopAll = stopAll
  }

  /** `{ nodes }`: a `redisCluster` option. */
  get options() {
    return { nodes: this.nodes }
  }

  /** PIDs of every node. */
  get pids() {
    return this.servers.map((s) => s.pid)
  }

  /** One command to a node. */
  command(server, args) {
    return command(server, args, { password: this.password })
  }

  /** The hash slot of a key or channel name (computed here; equal to `CLUSTER KEYSLOT`). */
  keyslot(name) {
    return keyslot(name)
  }

  /** `CLUSTER NODES` as seen by `server` (default: the first running node), with `server` filled in. */
  async topology(server = this.servers.find(alive)) {
    const nodes = parseClusterNodes(await this.command(server, ['CLUSTER', 'NODES']))
    for (const n of nodes) n.server = this.servers.find((s) => s.port === n.port) || null
    return nodes
  }

  /** The running nodes that serve slots, as RedisServer. */
  async primaries() {
    const nodes = await this.topology()
    return nodes
      .filter((n) => n.flags.has('master') && !n.flags.has('fail') && n.slots.length > 0)
      .map((n) => n.server)
  }

  /** The running replicas, as RedisServer. */
  async replicas() {
    const nodes = await this.topology()
    return nodes
      .filter((n) => n.flags.has('slave') && !n.flags.has('fail') && n.server && n.server.running)
      .map((n) => n.server)
  }

  /** The replica of primary `server` (null if none). */
  async replicaOf(server) {
    // asked of the replicas themselves (gossip may lag behind)
    for (const s of this.servers.filter(alive)) {
      if (s === server) continue
      const info = parseInfo(await this.command(s, ['INFO', 'replication']))
      if (info.role === 'slave' && Number(info.master_port) === server.port) return s
    }
    return null
  }

  /** The primary that replica `server` replicates (null for a primary). */
  async primaryOf(server) {
    const info = parseInfo(await this.command(server, ['INFO', 'replication']))
    if (info.role !== 'slave') return null
    return this.servers.find((s) => s.port === Number(info.master_port)) || null
  }

  /** The primary (RedisServer) serving `slot`. */
  async nodeForSlot(slot) {
    const nodes = await this.topology()
    const n = nodes.find(
      (x) =>
        x.flags.has('master') &&
        !x.flags.has('fail') &&
        x.slots.some(([a, b]) => slot >= a && slot <= b),
    )
    return n ? n.server : null
  }

  /** The primary serving the slot of `channel` (what sharded pub/sub would use). */
  nodeForChannel(channel) {
    return this.nodeForSlot(keyslot(channel))
  }

  /** `PUBSUB NUMSUB` of `channels` on every running node: `[{ server, counts: { channel: n } }]`. */
  async subscriptions(channels) {
    const out = []
    for (const server of this.servers.filter(alive)) {
      const reply = await this.command(server, ['PUBSUB', 'NUMSUB', ...channels])
      out.push({ server, counts: pairs(reply) })
    }
    return out
  }

  /**
   * Waits until every running node says `cluster_state:ok`, all slots are
   * served, every node agrees on who serves them, no running node is flagged
   * failing, and every running replica is in sync.
   */
  async waitStable({ timeout = FAILOVER_TIMEOUT_MS } = {}) {
    const live = this.servers.filter(alive)
    return until(
      async () => {
        let picture = null
        for (const s of live) {
          const info = parseInfo(await this.command(s, ['CLUSTER', 'INFO']))
          if (info.cluster_state !== 'ok' || info.cluster_slots_assigned !== '16384') return false
          if (Number(info.cluster_known_nodes) < this.servers.length) return false
          const nodes = await this.topology(s)
          const liveNodes = nodes.filter((n) => live.some((l) => l.port === n.port))
          if (liveNodes.length !== live.length) return false
          if (liveNodes.some((n) => n.flags.has('fail') || n.flags.has('fail?'))) return false
          if (liveNodes.some((n) => n.flags.has('handshake') || n.flags.has('noaddr'))) return false
          // who serves which slots, and who replicates whom: the same on every node
          const portOf = new Map(nodes.map((n) => [n.id, n.port]))
          const view = liveNodes
            .map((n) =>
              n.flags.has('master')
                ? `${n.port}=${JSON.stringify(n.slots)}`
                : `${n.port}>${portOf.get(n.masterId)}`,
            )
            .sort()
            .join(' ')
          if (picture !== null && picture !== view) return false
          picture = view
          // and what each node says of itself agrees
          const me = nodes.find((n) => n.flags.has('myself'))
          const own = parseInfo(await this.command(s, ['INFO', 'replication']))
          if (own.role === 'slave') {
            if (own.master_link_status !== 'up') return false
            if (!me.flags.has('slave') || portOf.get(me.masterId) !== Number(own.master_port)) {
              return false
            }
          } else if (!me.flags.has('master')) return false
        }
        return true
      },
      'the cluster to be stable',
      timeout,
    )
  }

  /**
   * `CLUSTER FAILOVER` on the replica of primary `server`, and waits until the
   * replica is the primary for every node and the cluster is stable. Resolves to
   * `{ from, to, ms }`.
   */
  async failoverPrimary(server) {
    const to = await this.replicaOf(server)
    if (!to) throw new Error(`failoverPrimary: :${server.port} has no replica`)
    const t0 = Date.now()
    await this.command(to, ['CLUSTER', 'FAILOVER'])
    await until(
      async () => {
        const [role] = await this.command(to, ['ROLE'])
        if (role !== 'master') return false
        for (const s of this.servers.filter(alive)) {
          const nodes = await this.topology(s)
          const n = nodes.find((x) => x.port === to.port)
          if (!n.flags.has('master') || n.slots.length === 0) return false
        }
        return true
      },
      `:${to.port} to take over from :${server.port}`,
      FAILOVER_TIMEOUT_MS,
    )
    await this.waitStable()
    return { from: server, to, ms: Date.now() - t0 }
  }

  /**
   * SIGKILLs a node. When it served slots, waits until its replica has taken
   * over (for every running node) and the cluster is ok again. Resolves to
   * `{ killed, to, ms }` (`to` null for a replica). `killed.restart()` brings
   * it back (as a replica, from its nodes.conf).
   */
  async kill(server) {
    const [role] = await this.command(server, ['ROLE'])
    const wasPrimary = role === 'master'
    const replica = wasPrimary ? await this.replicaOf(server) : null
    const t0 = Date.now()
    await server.kill()
    if (!wasPrimary) return { killed: server, to: null, ms: 0 }
    if (!replica) throw new Error(`kill: :${server.port} had no replica to take over`)
    await until(
      async () => {
        for (const s of this.servers.filter(alive)) {
          const view = await this.topology(s)
          const n = view.find((x) => x.port === replica.port)
          if (!n.flags.has('master') || n.slots.length === 0) return false
          const info = parseInfo(await this.command(s, ['CLUSTER', 'INFO']))
          if (info.cluster_state !== 'ok') return false
        }
        return true
      },
      `:${replica.port} to take over from the killed :${server.port}`,
      FAILOVER_TIMEOUT_MS,
    )
    return { killed: server, to: replica, ms: Date.now() - t0 }
  }

  /** Stops every node; removes the temp dir. Idempotent. */
  stop() {
    return this._stopAll()
  }
}

// ---------------------------------------------------------------------------
// TLS

/**
 * Makes test certificates with the `openssl` CLI (EC P-256) in a temporary
 * directory: a CA; a server certificate for `localhost` and `127.0.0.1` (SAN);
 * a client certificate (for mutual TLS); an expired server certificate; a
 * server certificate for the wrong name (`wrong.example`); and a second,
 * unrelated CA. Resolves to the PEM strings and `files` (their paths).
 */
async function makeCerts() {
  const started = Date.now()
  const dir = tempDir('smart-crm-certs-')
  const f = (name) => path.join(dir, name)
  const ssl = (...args) => runTool('openssl', args, { timeoutMs: 20_000 })
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  const ca = async (name, cn) =>
    ssl(
      'req',
      '-x509',
      ...ec,
      '-keyout',
      f(`${name}.key`),
      '-out',
      f(`${name}.pem`),
      '-days',
      '30',
      '-subj',
      `/CN=${cn}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    )
  const leaf = async (name, cn, ext, { days = 30, caName = 'ca' } = {}) => {
    fs.writeFileSync(f(`${name}.ext`), `${ext.join('\n')}\n`)
    await ssl(
      'req',
      ...ec,
      '-keyout',
      f(`${name}.key`),
      '-out',
      f(`${name}.csr`),
      '-subj',
      `/CN=${cn}`,
    )
    await ssl(
      'x509',
      '-req',
      '-in',
      f(`${name}.csr`),
      '-CA',
      f(`${caName}.pem`),
      '-CAkey',
      f(`${caName}.key`),
      '-CAcreateserial',
      '-days',
      String(days),
      '-extfile',
      f(`${name}.ext`),
      '-out',
      f(`${name}.pem`),
    )
  }
  const serverExt = (san) => [
    `subjectAltName=${san}`,
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
  ]
  await Promise.all([ca('ca', 'smart-crm test CA'), ca('other-ca', 'unrelated test CA')])
  await leaf('server', 'localhost', serverExt('DNS:localhost,IP:127.0.0.1'))
  await leaf('client', 'smart-crm client', [
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=clientAuth',
  ])
  // `-days -1`: not after = a day before now (not before = now): expired
  await leaf('expired', 'localhost', serverExt('DNS:localhost,IP:127.0.0.1'), { days: -1 })
  await leaf('wrong-name', 'wrong.example', serverExt('DNS:wrong.example'))
  const read = (name) => fs.readFileSync(f(name), 'utf8')
  return {
    dir,
    ca: read('ca.pem'),
    cert: read('server.pem'),
    key: read('server.key'),
    clientCert: read('client.pem'),
    clientKey: read('client.key'),
    expiredCert: read('expired.pem'),
    expiredKey: read('expired.key'),
    wrongNameCert: read('wrong-name.pem'),
    wrongNameKey: read('wrong-name.key'),
    otherCa: read('other-ca.pem'),
    files: {
      ca: f('ca.pem'),
      cert: f('server.pem'),
      key: f('server.key'),
      clientCert: f('client.pem'),
      clientKey: f('client.key'),
      expiredCert: f('expired.pem'),
      expiredKey: f('expired.key'),
      wrongNameCert: f('wrong-name.pem'),
      wrongNameKey: f('wrong-name.key'),
      otherCa: f('other-ca.pem'),
    },
    ms: Date.now() - started,
    /** Removes the directory now (otherwise at process exit). */
    remove: () => removeTempDir(dir),
  }
}

/**
 * Starts a TLS-only redis-server (no plain port) with certificates from
 * `makeCerts` (made here when not given). `serverCert` picks the certificate
 * it presents: 'valid' (default), 'expired' or 'wrongName'. `authClients`
 * requires a client certificate signed by the CA (mutual TLS). With
 * `plain: true` it starts a plain server instead and gives its address as
 * `rediss://`, for the "no TLS behind rediss://" case.
 *
 * Resolves to `{ url: 'rediss://127.0.0.1:P', port, certs, server, pid, setupMs,
 * stop(), kill(), restart() }`; `tlsOptions` are `tls.connect` options that
 * trust the CA (and present the client certificate), for a test's own client.
 */
async function startTlsRedis({
  certs,
  requirePass,
  authClients = false,
  serverCert = 'valid',
  plain = false,
} = {}) {
  const started = Date.now()
  const ownCerts = !certs
  if (!certs) certs = await makeCerts()
  const extraArgs = requirePass ? ['--requirepass', requirePass] : []
  const pick = {
    valid: ['cert', 'key'],
    expired: ['expiredCert', 'expiredKey'],
    wrongName: ['wrongNameCert', 'wrongNameKey'],
  }[serverCert]
  if (!pick) throw new RangeError(`startTlsRedis: unknown serverCert ${serverCert}`)
  const server = plain
    ? await startRedis({ extraArgs })
    : await startRedis({
        extraArgs,
        tls: {
          certFile: certs.files[pick[0]],
          keyFile: certs.files[pick[1]],
          caFile: certs.files.ca,
          authClients,
          clientCertFile: certs.files.clientCert,
          clientKeyFile: certs.files.clientKey,
        },
      })
  const tlsOptions = { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey }
  return {
    url: `rediss://${HOST}:${server.port}`,
    port: server.port,
    certs,
    server,
    tlsOptions,
    plain,
    setupMs: Date.now() - started,
    get pid() {
      return server.pid
    },
    /** One command over TLS (trusting the CA, with the client certificate). */
    command: (args) =>
      plain
        ? command(server, args, { password: requirePass })
        : command(
            requirePass
              ? `rediss://:${encodeURIComponent(requirePass)}@${HOST}:${server.port}`
              : `rediss://${HOST}:${server.port}`,
            args,
            { tls: { ...tlsOptions, rejectUnauthorized: serverCert === 'valid' } },
          ),
    stop: async () => {
      await server.stop()
      if (ownCerts) certs.remove()
    },
    kill: () => server.kill(),
    restart: () => server.restart(),
  }
}

module.exports = {
  startSentinel,
  startCluster,
  makeCerts,
  startTlsRedis,
  keyslot,
  redisCommand: command,
  parseInfo,
}
