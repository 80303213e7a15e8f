'use strict'
// The topology launchers of tools/test-helpers/topologies.js work, fast, and
// leave nothing behind: every PID gone and every temporary directory removed
// after stop(). (They are test infrastructure; the package is tested with
// them in redis-sentinel/-cluster/-tls.spec.js.)

const test = require('ava')
const fs = require('node:fs')
const tls = require('node:tls')
const { X509Certificate } = require('node:crypto')

const {
  startSentinel,
  startCluster,
  makeCerts,
  startTlsRedis,
  keyslot,
} = require('../tools/test-helpers/topologies.js')
const { connectRedis } = require('../tools/test-helpers/resp.js')
const { pidAlive } = require('./helpers/topology.js')
const { waitFor } = require('./helpers/fixture.js')

const gone = (pids) =>
  waitFor(() => pids.every((p) => !pidAlive(p)), { timeout: 5000, message: 'every PID gone' })

test('startSentinel: master, replica and three sentinels that agree; failover() and killPrimary() promote; stop() leaves nothing', async (t) => {
  const s = await startSentinel({ password: 'pw-1', sentinelPassword: 'spw-1' })
  t.teardown(() => s.stop())
  t.log(`setup ${s.setupMs} ms`)
  t.true(s.setupMs < 15_000)
  t.is(s.sentinels.length, 3)
  t.regex(s.sentinels[0], /^127\.0\.0\.1:\d+$/)
  t.is(s.masterName, 'mymaster')
  t.deepEqual(s.options, {
    sentinels: s.sentinels,
    masterName: 'mymaster',
    password: 'pw-1',
    sentinelPassword: 'spw-1',
  })
  t.is(await s.currentMaster(), s.primary)
  t.is(await s.role(s.replica), 'slave')
  // the sentinels require their password, the data nodes theirs
  const bare = await connectRedis(`redis://${s.sentinels[0]}`)
  t.teardown(() => bare.destroy())
  await t.throwsAsync(bare.command('SENTINEL', 'MASTERS'), { message: /NOAUTH/ })
  const pids = s.pids
  t.is(pids.length, 5)

  const f = await s.failover()
  t.log(`SENTINEL FAILOVER promoted in ${f.ms} ms`)
  t.is(f.from, s.primary)
  t.is(f.to, s.replica)
  t.is(await s.currentMaster(), s.replica)
  t.is(await s.role(s.replica), 'master')
  const d0 = Date.now()
  await s.waitDemoted()
  t.log(`old master demoted (a replica in sync) ${Date.now() - d0} ms later`)
  t.is(await s.role(s.primary), 'slave')

  const k = await s.killPrimary()
  t.log(`killed master replaced in ${k.ms} ms`)
  t.is(k.killed, s.replica)
  t.is(k.to, s.primary)
  t.is(await s.currentMaster(), s.primary)
  t.false(s.replica.running)

  await s.stop()
  await gone(pids)
  t.false(fs.existsSync(s.dir), 'the config directory is removed')
  await s.stop() // idempotent
  t.pass()
})

test('startCluster: six nodes, cluster_state ok; keyslot = CLUSTER KEYSLOT; failoverPrimary() and kill() promote the replica; stop() leaves nothing', async (t) => {
  const c = await startCluster()
  t.teardown(() => c.stop())
  t.log(`setup ${c.setupMs} ms`)
  t.true(c.setupMs < 20_000)
  t.is(c.nodes.length, 6)
  t.regex(c.nodes[0], /^redis:\/\/127\.0\.0\.1:\d+$/)
  const primaries = await c.primaries()
  const replicas = await c.replicas()
  t.is(primaries.length, 3)
  t.is(replicas.length, 3)
  for (const p of primaries) t.truthy(await c.replicaOf(p))
  for (const name of [
    'crm:acme:configs',
    'crm:b0a6e370:users',
    '{user1000}.following',
    'a{}b',
    'x{y',
  ]) {
    t.is(keyslot(name), await c.command(c.servers[0], ['CLUSTER', 'KEYSLOT', name]), name)
  }
  t.is(keyslot('crm:acme:configs'), c.keyslot('crm:acme:configs'))
  const owner = await c.nodeForChannel('crm:acme:configs')
  t.true(primaries.includes(owner))
  t.is(await c.nodeForSlot(keyslot('crm:acme:configs')), owner)

  // subscriptions() finds a subscriber, whichever node it is on
  const sub = await connectRedis(replicas[0].url)
  t.teardown(() => sub.destroy())
  let got = 0
  sub.on('message', () => got++)
  await sub.subscribe('topo-test')
  const per = await c.subscriptions(['topo-test'])
  t.deepEqual(
    per.filter((x) => Number(x.counts['topo-test']) > 0).map((x) => x.server),
    [replicas[0]],
  )
  // PUBLISH is broadcast over the cluster (but counts only the local subscribers)
  t.is(await c.command(primaries[1], ['PUBLISH', 'topo-test', 'x']), 0)
  await waitFor(() => got === 1, { message: 'the broadcast message' })

  const pids = c.pids
  const f = await c.failoverPrimary(primaries[0])
  t.log(`CLUSTER FAILOVER in ${f.ms} ms`)
  t.is(f.from, primaries[0])
  t.true((await c.primaries()).includes(f.to))
  t.false((await c.primaries()).includes(f.from))

  const k = await c.kill(f.to)
  t.log(`killed primary replaced in ${k.ms} ms`)
  t.is(k.to, f.from)
  t.true((await c.primaries()).includes(f.from))
  const r0 = Date.now()
  await f.to.restart()
  await c.waitStable()
  t.log(`killed node back and the cluster stable in ${Date.now() - r0} ms`)
  t.is((await c.replicas()).length, 3)

  t.true(fs.existsSync(c.dir))
  await c.stop()
  await gone(pids)
  t.false(fs.existsSync(c.dir), 'the nodes.conf directory is removed')
})

test('makeCerts and startTlsRedis: valid, expired and wrong-name certificates, mutual TLS, a plain server behind rediss://', async (t) => {
  const certs = await makeCerts()
  t.teardown(() => certs.remove())
  t.log(`certificates made in ${certs.ms} ms`)
  for (const k of ['ca', 'cert', 'clientCert', 'expiredCert', 'wrongNameCert', 'otherCa']) {
    t.regex(certs[k], /^-----BEGIN CERTIFICATE-----/, k)
  }
  for (const k of ['key', 'clientKey', 'expiredKey', 'wrongNameKey']) {
    t.regex(certs[k], /^-----BEGIN PRIVATE KEY-----/, k)
  }
  const ca = new X509Certificate(certs.ca)
  t.true(ca.ca)
  t.true(new X509Certificate(certs.cert).checkIssued(ca))
  t.true(new X509Certificate(certs.cert).checkIP('127.0.0.1') === '127.0.0.1')
  t.truthy(new X509Certificate(certs.cert).checkHost('localhost'))
  t.true(new Date(new X509Certificate(certs.expiredCert).validTo) < new Date())
  t.is(new X509Certificate(certs.wrongNameCert).checkHost('localhost'), undefined)
  t.false(new X509Certificate(certs.cert).checkIssued(new X509Certificate(certs.otherCa)))

  /** Connects with node:tls; resolves 'ok' or the error code. */
  const handshake = (port, options) =>
    new Promise((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, ...options }, () => {
        s.destroy()
        resolve('ok')
      })
      s.on('error', (e) => resolve(e.code || e.message))
      s.setTimeout(2000, () => {
        s.destroy()
        resolve('timeout')
      })
    })

  const valid = await startTlsRedis({ certs, requirePass: 'pw' })
  t.teardown(() => valid.stop())
  t.log(`TLS server up in ${valid.setupMs} ms`)
  t.regex(valid.url, /^rediss:\/\/127\.0\.0\.1:\d+$/)
  t.is(await valid.command(['PING']), 'PONG')
  t.is(await handshake(valid.port, { ca: certs.ca }), 'ok')
  t.not(await handshake(valid.port, { ca: certs.otherCa }), 'ok', 'another CA does not verify it')
  t.not(await handshake(valid.port, {}), 'ok', 'nor do the system roots')

  const expired = await startTlsRedis({ certs, serverCert: 'expired' })
  t.teardown(() => expired.stop())
  t.is(await handshake(expired.port, { ca: certs.ca }), 'CERT_HAS_EXPIRED')
  const wrong = await startTlsRedis({ certs, serverCert: 'wrongName' })
  t.teardown(() => wrong.stop())
  t.is(await handshake(wrong.port, { ca: certs.ca }), 'ERR_TLS_CERT_ALTNAME_INVALID')

  const mutual = await startTlsRedis({ certs, authClients: true })
  t.teardown(() => mutual.stop())
  t.is(await mutual.command(['PING']), 'PONG', 'with the client certificate')
  const noCert = await connectRedis(mutual.url, { tls: { ca: certs.ca } })
    .then((c) => c.command('PING').finally(() => c.destroy()))
    .catch((e) => e)
  t.true(noCert instanceof Error, 'refused without a client certificate')

  const plain = await startTlsRedis({ certs, plain: true })
  t.teardown(() => plain.stop())
  t.regex(plain.url, /^rediss:\/\//)
  t.is(await plain.command(['PING']), 'PONG', 'a plain server')
  t.is(await handshake(plain.port, { ca: certs.ca }), 'timeout', 'a TLS client hangs on it')

  const pids = [valid, expired, wrong, mutual, plain].map((s) => s.pid)
  await Promise.all([valid, expired, wrong, mutual, plain].map((s) => s.stop()))
  await gone(pids)
  const dir = certs.dir
  certs.remove()
  t.false(fs.existsSync(dir), 'the certificate directory is removed')
})

test('a process that dies leaves no topology running (the watchdog kills it)', async (t) => {
  const { spawn } = require('node:child_process')
  const child = spawn(
    process.execPath,
    [
      '-e',
      `const T = require('./tools/test-helpers/topologies.js')
       Promise.all([T.startSentinel(), T.startCluster(), T.startTlsRedis()]).then(([s, c, x]) => {
         console.log(JSON.stringify({ pids: [...s.pids, ...c.pids, x.pid], dirs: [s.dir, c.dir, x.certs.dir] }))
       })`,
    ],
    { cwd: require('node:path').join(__dirname, '..'), stdio: ['ignore', 'pipe', 'inherit'] },
  )
  t.teardown(() => child.kill('SIGKILL'))
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  const { pids, dirs } = await waitFor(
    () => {
      try {
        return JSON.parse(out)
      } catch {
        return null
      }
    },
    { timeout: 30_000, interval: 50, message: 'the child to start its topologies' },
  )
  t.is(pids.length, 5 + 6 + 1)
  t.true(pids.every(pidAlive))
  child.kill('SIGKILL')
  await gone(pids)
  await waitFor(() => dirs.every((d) => !fs.existsSync(d)), {
    timeout: 5000,
    message: 'its temp dirs removed',
  })
  t.pass()
})
