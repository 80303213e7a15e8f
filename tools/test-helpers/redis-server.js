'use strict'
// Test helper (`smart-crm-consumer/test-helpers`): runs a private, throwaway
// `redis-server` (found on PATH) for a test, a bench run, the demo or the example app.
//
// Each server is a child of this process on a port picked here, so tests can stop,
// kill, restart and freeze it at will. Only those children are ever signalled: the
// shared Redis on 6379 is never touched. Children still running when this process
// exits are SIGKILLed, so a crashed test does not leak servers; their log files
// and the temporary directories made by `tempDir` (configs, certificates) go too.
//
// The same launcher runs a TLS-only server (`tls`), a sentinel (`configFile` +
// `sentinel`) and a cluster node (`extraArgs`); topologies.js builds on it.

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const tls = require('node:tls')

const HOST = '127.0.0.1'
const SHARED_PORT = 6379
const STARTUP_TIMEOUT_MS = 10_000
const POLL_INTERVAL_MS = 20
const PING_TIMEOUT_MS = 500
const STOP_GRACE_MS = 3_000
const BIND_ATTEMPTS = 10
const BIND_RETRY_MS = 200

/** Children started here and not yet exited, with their log files and temp dirs. */
const liveChildren = new Set()
const logFiles = new Set()
const tempDirs = new Set()

process.on('exit', () => {
  for (const child of liveChildren) {
    try {
      child.kill('SIGKILL')
    } catch {
      // already gone
    }
  }
  if (!process.env.REDIS_TEST_KEEP_LOGS) {
    for (const file of logFiles) fs.rmSync(file, { force: true })
  }
  for (const dir of tempDirs) fs.rmSync(dir, { force: true, recursive: true })
})

// The 'exit' hook does not run when this process dies by a signal (a test
// runner's timeout, SIGKILL). A watchdog child holds the read end of a pipe from
// us: at EOF (we are gone, however we died) it SIGKILLs the servers it was told
// about. It is told `+pid` on start and `-pid` on exit, so it never signals a
// process that is not one of our live servers; and `f<path>` / `r<path>` for the
// log files and temporary directories it should then delete.
const WATCHDOG_SOURCE = `
const pids = new Set()
const files = new Set()
let buf = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (d) => {
  buf += d
  let i
  while ((i = buf.indexOf('\\n')) !== -1) {
    const line = buf.slice(0, i)
    buf = buf.slice(i + 1)
    const arg = line.slice(1)
    if (line[0] === '+') pids.add(Number(arg))
    else if (line[0] === '-') pids.delete(Number(arg))
    else if (line[0] === 'f') files.add(arg)
    else if (line[0] === 'r') files.delete(arg)
  }
})
const killAll = () => {
  for (const pid of pids) { try { process.kill(pid, 'SIGKILL') } catch {} }
  for (const file of files) { try { require('node:fs').rmSync(file, { force: true, recursive: true }) } catch {} }
  process.exit(0)
}
process.stdin.on('end', killAll)
process.stdin.on('error', killAll)
process.on('SIGINT', () => {})
process.on('SIGTERM', () => {})
`
let watchdog = null

function tellWatchdog(line) {
  if (!watchdog) {
    watchdog = spawn(process.execPath, ['-e', WATCHDOG_SOURCE], {
      stdio: ['pipe', 'ignore', 'ignore'],
    })
    watchdog.on('error', () => {})
    watchdog.stdin.on('error', () => {})
    watchdog.on('exit', () => {
      watchdog = null
    })
    watchdog.unref()
    watchdog.stdin.unref()
  }
  watchdog.stdin.write(`${line}\n`)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Resolves to a TCP port that was free on 127.0.0.1 a moment ago (never 6379). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, HOST, () => {
      const { port } = server.address()
      server.close(() => (port === SHARED_PORT ? freePort().then(resolve, reject) : resolve(port)))
    })
  })
}

/**
 * Sends PING and INFO (after AUTH when a password is known). Resolves 'ours'
 * when the server answers with `process_id` = `pid`, 'other' when another
 * server holds the port, 'noauth' when it is up but will not say who it is
 * (password unknown), or null when it does not answer (yet). With `tlsOptions`
 * it speaks TLS (`tls.connect` options; the certificate is not checked: this
 * asks whether our child is up, not whether its certificate is good).
 */
function probe(port, pid, password, tlsOptions) {
  return new Promise((resolve) => {
    const socket = tlsOptions
      ? tls.connect({ port, host: HOST, rejectUnauthorized: false, ...tlsOptions })
      : net.connect({ port, host: HOST })
    let received = ''
    let settled = false
    const done = (result) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      resolve(result)
    }
    const timer = setTimeout(() => done(null), PING_TIMEOUT_MS)
    socket.on(tlsOptions ? 'secureConnect' : 'connect', () => {
      const auth = password ? respCommand('AUTH', password) : ''
      socket.write(auth + respCommand('PING') + respCommand('INFO', 'server'))
    })
    socket.on('data', (chunk) => {
      received += chunk
      if (/^-(NOAUTH|WRONGPASS)/m.test(received)) return done('noauth')
      if (/^-/m.test(received)) return done(null) // e.g. LOADING
      const m = /process_id:(\d+)\r\n/.exec(received)
      if (m && received.includes('+PONG')) done(Number(m[1]) === pid ? 'ours' : 'other')
    })
    socket.on('error', () => done(null))
    socket.on('close', () => done(null))
  })
}

function respCommand(...args) {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`
}

/** The value of `--requirepass` in extra arguments, if any. */
function passwordOf(extraArgs) {
  const i = extraArgs.findIndex((a) => String(a) === '--requirepass')
  return i !== -1 && i + 1 < extraArgs.length ? String(extraArgs[i + 1]) : null
}

function fileSize(file) {
  try {
    return fs.statSync(file).size
  } catch {
    return 0
  }
}

/** The log written since `from`, at most its last 2 KB. */
function logSince(file, from) {
  try {
    const text = fs.readFileSync(file).subarray(from).toString('utf8')
    return text.length > 2048 ? text.slice(-2048) : text
  } catch {
    return ''
  }
}

/**
 * The redis-server command line: an optional config file first (a sentinel
 * needs one it can rewrite), the listening port(s), no persistence, then
 * `extraArgs`.
 */
function serverArgs({ port, extraArgs, configFile, sentinel, tls: tlsFiles }) {
  const args = configFile ? [configFile] : []
  if (tlsFiles) {
    args.push(
      '--port',
      '0',
      '--tls-port',
      String(port),
      '--tls-cert-file',
      tlsFiles.certFile,
      '--tls-key-file',
      tlsFiles.keyFile,
      '--tls-auth-clients',
      tlsFiles.authClients ? 'yes' : 'no',
    )
    if (tlsFiles.caFile) args.push('--tls-ca-cert-file', tlsFiles.caFile)
  } else {
    args.push('--port', String(port))
  }
  args.push('--bind', HOST, '--daemonize', 'no')
  if (!sentinel) args.push('--save', '', '--appendonly', 'no')
  args.push(...extraArgs.map(String))
  if (sentinel) args.push('--sentinel')
  return args
}

/** `tls.connect` options for the readiness probe of a TLS server (client certificate if any). */
function probeTlsOptions(tlsFiles) {
  if (!tlsFiles) return null
  const out = {}
  if (tlsFiles.clientCertFile) out.cert = fs.readFileSync(tlsFiles.clientCertFile)
  if (tlsFiles.clientKeyFile) out.key = fs.readFileSync(tlsFiles.clientKeyFile)
  return out
}

/**
 * Spawns one redis-server. Returns `{ child, exited, done }`: `exited` resolves
 * when the child has exited (or failed to spawn), after which `done` is true.
 */
function spawnServer(args, logFile) {
  const logFrom = fileSize(logFile)
  const fd = fs.openSync(logFile, 'a')
  let child
  try {
    child = spawn('redis-server', args, { stdio: ['ignore', fd, fd] })
  } finally {
    fs.closeSync(fd)
  }
  const proc = { child, done: false, error: null, logFrom }
  proc.exited = new Promise((resolve) => {
    const finish = () => {
      if (proc.done) return
      proc.done = true
      liveChildren.delete(child)
      resolve()
    }
    child.once('exit', finish)
    child.once('error', (err) => {
      proc.error = err
      finish()
    })
  })
  liveChildren.add(child)
  if (child.pid) {
    tellWatchdog(`+${child.pid}`)
    child.once('exit', () => tellWatchdog(`-${child.pid}`))
  }
  // A server a test forgot to stop must not keep the process alive; the exit
  // hook kills it. Waits below re-ref the child while they need its events.
  child.unref()
  return proc
}

function signal(proc, sig) {
  if (proc.done) return
  try {
    proc.child.kill(sig)
  } catch {
    // exited meanwhile
  }
}

/**
 * Runs a short-lived tool (`redis-cli`, `openssl`) as a tracked child: killed
 * with the servers if this process dies, SIGKILLed after `timeoutMs`. Resolves
 * to its stdout; rejects with its output when it exits non-zero.
 */
function runTool(command, args, { timeoutMs = 30_000, input } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args.map(String), {
      stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    liveChildren.add(child)
    if (child.pid) tellWatchdog(`+${child.pid}`)
    if (input !== undefined) child.stdin.end(input)
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    const finish = (error) => {
      clearTimeout(timer)
      liveChildren.delete(child)
      if (child.pid) tellWatchdog(`-${child.pid}`)
      if (error) reject(error)
      else resolve(out)
    }
    child.once('error', (e) => finish(new Error(`${command} could not be run: ${e.message}`)))
    child.once('close', (code, sig) => {
      if (code === 0) return finish()
      const why = sig ? `was killed by ${sig}` : `exited with ${code}`
      finish(new Error(`${command} ${args.slice(0, 3).join(' ')}… ${why}:\n${out}${err}`.trim()))
    })
  })
}

/** Waits for the child to exit, keeping the event loop alive meanwhile. */
async function waitExit(proc) {
  if (proc.done) return
  proc.child.ref()
  try {
    await proc.exited
  } finally {
    proc.child.unref()
  }
}

/**
 * Polls PING every 20 ms until our child answers: the reply must come from its
 * PID, not from another server that holds the port. Throws (after killing the
 * child) when it exits first or does not answer within 10 s; `err.addressInUse`
 * tells whether its port was taken.
 */
async function waitReady(proc, port, logFile, password, tlsOptions) {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS
  for (;;) {
    if (proc.done) break
    const answer = await probe(port, proc.child.pid, password, tlsOptions)
    // 'noauth' (password set by other means than --requirepass): up, unverified
    if (answer === 'ours' || (answer === 'noauth' && !proc.done)) return
    if (proc.done || Date.now() >= deadline) break
    await sleep(POLL_INTERVAL_MS)
  }
  const exitedEarly = proc.done
  signal(proc, 'SIGKILL')
  await waitExit(proc)
  const log = logSince(logFile, proc.logFrom)
  const why = proc.error
    ? `could not be spawned (${proc.error.message})`
    : exitedEarly
      ? 'exited during startup'
      : `did not answer PING within ${STARTUP_TIMEOUT_MS} ms`
  const err = new Error(`redis-server on port ${port} ${why}; log ${logFile}:\n${log}`)
  err.addressInUse = /address already in use/i.test(log)
  throw err
}

function newLogFile(port) {
  const name = `smart-crm-redis-${port}-${process.pid}-${Date.now().toString(36)}.log`
  const file = path.join(os.tmpdir(), name)
  logFiles.add(file)
  if (!process.env.REDIS_TEST_KEEP_LOGS) tellWatchdog(`f${file}`)
  return file
}

/**
 * Makes a private temporary directory (for configs, certificates, cluster
 * state), removed when this process exits however it ends. Returns its path.
 */
function tempDir(prefix = 'smart-crm-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  tempDirs.add(dir)
  tellWatchdog(`f${dir}`)
  return dir
}

/** Removes a directory made by `tempDir` now. */
function removeTempDir(dir) {
  if (!tempDirs.delete(dir)) return
  fs.rmSync(dir, { force: true, recursive: true })
  tellWatchdog(`r${dir}`)
}

/** A running (or stopped) private redis-server; see `startRedis`. */
class RedisServer {
  constructor(port, spec, logFile, proc) {
    this.port = port
    this.url = `${spec.tls ? 'rediss' : 'redis'}://${HOST}:${port}`
    this.extraArgs = spec.extraArgs
    this.logFile = logFile
    this._spec = spec
    this._proc = proc
    this._paused = false
  }

  /** PID of the current (latest) child process. */
  get pid() {
    return this._proc.child.pid
  }

  /** Whether the current child has not exited yet. */
  get running() {
    return !this._proc.done
  }

  /** SIGTERM, wait for exit (SIGKILL after 3 s). Idempotent. */
  async stop() {
    const proc = this._proc
    if (proc.done) return
    if (!proc.stopping) {
      proc.stopping = (async () => {
        signal(proc, 'SIGTERM')
        // a frozen server only handles SIGTERM once it runs again
        if (this._paused) signal(proc, 'SIGCONT')
        this._paused = false
        const timer = setTimeout(() => signal(proc, 'SIGKILL'), STOP_GRACE_MS)
        try {
          await waitExit(proc)
        } finally {
          clearTimeout(timer)
        }
      })()
    }
    await proc.stopping
  }

  /** SIGKILL and wait for exit. Idempotent. */
  async kill() {
    const proc = this._proc
    signal(proc, 'SIGKILL')
    this._paused = false
    await waitExit(proc)
  }

  /**
   * Starts the server again on the same port (stopping it first if it still
   * runs) and waits until it answers. Retries a few times while the port is busy.
   */
  async restart() {
    await this.stop()
    for (let attempt = 1; ; attempt++) {
      const proc = spawnServer(serverArgs({ ...this._spec, port: this.port }), this.logFile)
      this._proc = proc
      this._paused = false
      try {
        await waitReady(
          proc,
          this.port,
          this.logFile,
          passwordOf(this.extraArgs),
          probeTlsOptions(this._spec.tls),
        )
        return
      } catch (err) {
        if (!err.addressInUse || attempt >= BIND_ATTEMPTS) throw err
        await sleep(BIND_RETRY_MS)
      }
    }
  }

  /** SIGSTOP: the server keeps its sockets open but answers nothing (half-open link). */
  pause() {
    if (this._proc.done) return
    signal(this._proc, 'SIGSTOP')
    this._paused = true
  }

  /** SIGCONT: undoes `pause()`. */
  resume() {
    if (this._proc.done) return
    signal(this._proc, 'SIGCONT')
    this._paused = false
  }
}

/**
 * Starts a private redis-server on 127.0.0.1 and waits until it answers PING.
 *
 * @param {object} [options]
 * @param {number} [options.port] port to use; default: a free one (never 6379)
 * @param {string[]} [options.extraArgs] more redis-server arguments, e.g.
 *   `['--requirepass', 'secret']`
 * @param {string} [options.configFile] a config file, put first on the command
 *   line (a sentinel needs one it can rewrite)
 * @param {boolean} [options.sentinel] run as a sentinel (`--sentinel`; needs
 *   `configFile`; no persistence options are added)
 * @param {object} [options.tls] TLS only: `{ certFile, keyFile, caFile?,
 *   authClients?, clientCertFile?, clientKeyFile? }` (paths). The server then
 *   listens with TLS on `port` and nothing else, `url` is `rediss://…`, and the
 *   readiness probe speaks TLS (with the client certificate, if given).
 * @param {boolean} [options.retryBind=true] when a port is taken, try again
 *   (another free port, or the given one after a pause); false: throw at once
 *   with `err.addressInUse` (for a caller that picks other ports itself, e.g.
 *   a cluster node whose bus port was taken)
 * @returns {Promise<RedisServer>} `{ port, url, pid, logFile, running, stop(),
 *   kill(), restart(), pause(), resume() }`
 */
async function startRedis({
  port,
  extraArgs = [],
  configFile,
  sentinel = false,
  tls,
  retryBind = true,
} = {}) {
  if (port === SHARED_PORT) {
    throw new RangeError('startRedis: port 6379 belongs to the shared Redis; pick another')
  }
  if (sentinel && !configFile) throw new TypeError('startRedis: a sentinel needs a configFile')
  const spec = { extraArgs, configFile, sentinel, tls }
  const fixedPort = port !== undefined
  for (let attempt = 1; ; attempt++) {
    const p = fixedPort ? port : await freePort()
    const logFile = newLogFile(p)
    const proc = spawnServer(serverArgs({ ...spec, port: p }), logFile)
    try {
      await waitReady(proc, p, logFile, passwordOf(extraArgs), probeTlsOptions(tls))
      return new RedisServer(p, spec, logFile, proc)
    } catch (err) {
      // keep the log of a failed start for inspection, unless we (or the caller) retry
      if (err.addressInUse && !retryBind) {
        fs.rmSync(logFile, { force: true })
        logFiles.delete(logFile)
        tellWatchdog(`r${logFile}`)
        throw err
      }
      if (!err.addressInUse || attempt >= BIND_ATTEMPTS) {
        logFiles.delete(logFile)
        tellWatchdog(`r${logFile}`)
        throw err
      }
      fs.rmSync(logFile, { force: true })
      logFiles.delete(logFile)
      if (fixedPort) await sleep(BIND_RETRY_MS)
    }
  }
}

/** Stops every server started by this process (for `test.after.always`). */
async function stopAllRedis() {
  const pending = []
  for (const child of liveChildren) {
    pending.push(
      new Promise((resolve) => {
        child.ref()
        child.once('exit', resolve)
        try {
          child.kill('SIGCONT')
          child.kill('SIGKILL')
        } catch {
          resolve()
        }
      }),
    )
  }
  await Promise.all(pending)
}

module.exports = { startRedis, stopAllRedis, freePort, tempDir, removeTempDir, runTool }
