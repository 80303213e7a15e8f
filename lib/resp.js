'use strict'
// A minimal RESP2 Redis client over `net`/`tls`, for the doctor (lib/doctor.js),
// which must run with the package's runtime dependencies alone.
//
// Commands, pub/sub, AUTH/SELECT from the URL. The test helpers
// (tools/test-helpers/resp.js) build on it, adding pipelined bulk publishing.
//
// Replies are matched to commands in order. Replies: simple string → string,
// error → rejected Error (`code` = first word), integer → number, bulk string →
// string (null when nil), array → array (nested; null when nil).

const net = require('node:net')
const tls = require('node:tls')
const { EventEmitter } = require('node:events')

const CRLF = '\r\n'

/** An error reply from Redis. */
class RedisReplyError extends Error {
  constructor(line) {
    super(line)
    this.name = 'RedisReplyError'
    this.code = line.split(' ', 1)[0]
  }
}

/**
 * Parses one reply starting at `pos`. Returns `{ value, end }`, or null when the
 * buffer does not hold the whole reply yet.
 */
function parseReply(buf, pos) {
  if (pos >= buf.length) return null
  const lineEnd = buf.indexOf(CRLF, pos)
  if (lineEnd === -1) return null
  const line = buf.toString('utf8', pos + 1, lineEnd)
  const next = lineEnd + 2
  switch (buf[pos]) {
    case 0x2b: // + simple string
      return { value: line, end: next }
    case 0x2d: // - error
      return { value: new RedisReplyError(line), end: next }
    case 0x3a: // : integer
      return { value: Number(line), end: next }
    case 0x24: {
      // $ bulk string
      const len = Number(line)
      if (len < 0) return { value: null, end: next }
      if (buf.length < next + len + 2) return null
      return { value: buf.toString('utf8', next, next + len), end: next + len + 2 }
    }
    case 0x2a: {
      // * array
      const count = Number(line)
      if (count < 0) return { value: null, end: next }
      const items = []
      let at = next
      for (let i = 0; i < count; i++) {
        const item = parseReply(buf, at)
        if (!item) return null
        items.push(item.value)
        at = item.end
      }
      return { value: items, end: at }
    }
    default:
      throw new Error(`RESP protocol error: unexpected byte 0x${buf[pos].toString(16)}`)
  }
}

/** Encodes one command as a RESP array of bulk strings. */
function encodeCommand(args) {
  if (args.every((a) => !Buffer.isBuffer(a))) {
    let out = `*${args.length}${CRLF}`
    for (const arg of args) {
      const s = String(arg)
      out += `$${Buffer.byteLength(s)}${CRLF}${s}${CRLF}`
    }
    return out
  }
  const parts = [Buffer.from(`*${args.length}${CRLF}`)]
  for (const arg of args) {
    const b = Buffer.isBuffer(arg) ? arg : Buffer.from(String(arg))
    parts.push(Buffer.from(`$${b.length}${CRLF}`), b, Buffer.from(CRLF))
  }
  return Buffer.concat(parts)
}

function encodeMessage(message) {
  return typeof message === 'string' || Buffer.isBuffer(message) ? message : JSON.stringify(message)
}

/**
 * One connection. Events: `'message'` (channel, message), `'pmessage'` (pattern,
 * channel, message), `'close'`, and `'error'` (only emitted while listened to).
 */
class RespClient extends EventEmitter {
  constructor(socket) {
    super()
    this.socket = socket
    this.closed = false
    this._pending = [] // { resolve, reject, replies, onReply? }
    this._head = 0
    this._buf = Buffer.alloc(0)
    this._pubsub = false
    this._channels = new Set()
    this._patterns = new Set()
    socket.setNoDelay(true)
    socket.on('data', (chunk) => this._onData(chunk))
    socket.on('error', (err) => this._fail(err))
    socket.on('close', () => this._fail(new Error('connection closed')))
  }

  /** Sends a command; resolves to its reply, rejects on an error reply. */
  command(...args) {
    if (args.length === 1 && Array.isArray(args[0])) args = args[0]
    return this._send(encodeCommand(args), 1)
  }

  /** PUBLISH; resolves to the number of receivers. Objects are sent as JSON. */
  publish(channel, message) {
    return this.command('PUBLISH', channel, encodeMessage(message))
  }

  /** SUBSCRIBE; resolves to the subscription count after the last channel. */
  subscribe(...channels) {
    return this._subscription('SUBSCRIBE', channels)
  }

  /** PSUBSCRIBE; resolves to the subscription count after the last pattern. */
  psubscribe(...patterns) {
    return this._subscription('PSUBSCRIBE', patterns)
  }

  /** UNSUBSCRIBE (all channels when none given). */
  unsubscribe(...channels) {
    return this._subscription('UNSUBSCRIBE', channels)
  }

  /** PUNSUBSCRIBE (all patterns when none given). */
  punsubscribe(...patterns) {
    return this._subscription('PUNSUBSCRIBE', patterns)
  }

  /** Ends the connection gracefully; pending commands reject. Idempotent. */
  close() {
    if (this.closed) return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.socket.destroy(), 1000)
      this.socket.once('close', () => {
        clearTimeout(timer)
        resolve()
      })
      this.socket.end()
    })
  }

  /** Drops the connection abruptly. */
  destroy() {
    this.socket.destroy()
  }

  _subscription(cmd, names) {
    this._pubsub = true
    const set = cmd.startsWith('P') ? this._patterns : this._channels
    const replies = names.length > 0 ? names.length : Math.max(1, set.size)
    return this._send(encodeCommand([cmd, ...names]), replies)
  }

  _send(payload, replies) {
    if (this.closed) return Promise.reject(new Error('connection closed'))
    return new Promise((resolve, reject) => {
      this._pending.push({ resolve, reject, replies })
      this.socket.write(payload)
    })
  }

  _onData(chunk) {
    this._buf = this._buf.length === 0 ? chunk : Buffer.concat([this._buf, chunk])
    let pos = 0
    for (;;) {
      let parsed
      try {
        parsed = parseReply(this._buf, pos)
      } catch (err) {
        this.socket.destroy(err)
        return
      }
      if (!parsed) break
      pos = parsed.end
      this._onReply(parsed.value)
    }
    this._buf = pos === this._buf.length ? Buffer.alloc(0) : this._buf.subarray(pos)
  }

  _onReply(value) {
    if (this._pubsub && Array.isArray(value) && typeof value[0] === 'string') {
      const kind = value[0]
      if (kind === 'message') return this.emit('message', value[1], value[2])
      if (kind === 'pmessage') return this.emit('pmessage', value[1], value[2], value[3])
      if (kind === 'subscribe') this._channels.add(value[1])
      else if (kind === 'unsubscribe') this._channels.delete(value[1])
      else if (kind === 'psubscribe') this._patterns.add(value[1])
      else if (kind === 'punsubscribe') this._patterns.delete(value[1])
      if (kind.endsWith('subscribe')) value = value[2]
    }
    const entry = this._pending[this._head]
    if (!entry) return
    if (--entry.replies > 0 && !(value instanceof Error)) return
    this._pending[this._head++] = undefined
    if (this._head > 1024 && this._head * 2 > this._pending.length) {
      this._pending = this._pending.slice(this._head)
      this._head = 0
    }
    if (value instanceof RedisReplyError) entry.reject(value)
    else entry.resolve(value)
  }

  _fail(err) {
    const first = !this.closed
    this.closed = true
    const pending = this._pending.slice(this._head)
    this._pending = []
    this._head = 0
    for (const entry of pending) if (entry) entry.reject(err)
    if (!first) return
    if (err.message !== 'connection closed' && this.listenerCount('error') > 0)
      this.emit('error', err)
    if (this.socket.destroyed) this.emit('close')
    else this.socket.once('close', () => this.emit('close'))
  }
}

/**
 * Connects to Redis. Accepts `redis://[user:pass@]host[:port][/db]` (and
 * `rediss://` for TLS); sends AUTH and SELECT as the URL asks.
 *
 * @param {string} url
 * @param {object} [options]
 * @param {number} [options.connectTimeoutMs=5000]
 * @param {object} [options.tls] extra `tls.connect` options for rediss://
 * @returns {Promise<RespClient>} `{ command(...args), publish(channel, message),
 *   subscribe(...channels), psubscribe(...patterns), unsubscribe(...),
 *   punsubscribe(...), close(), destroy(), on('message', fn) }`
 */
async function connectRedis(url, { connectTimeoutMs = 5000, tls: tlsOptions } = {}) {
  const u = new URL(url)
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new TypeError(`redis: unsupported protocol ${u.protocol}`)
  }
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1'
  const port = u.port ? Number(u.port) : 6379
  const socket = await new Promise((resolve, reject) => {
    const secure = u.protocol === 'rediss:'
    const s = secure
      ? tls.connect({ host, port, servername: net.isIP(host) ? undefined : host, ...tlsOptions })
      : net.connect({ host, port })
    const timer = setTimeout(() => {
      s.destroy()
      reject(new Error(`redis: timeout connecting to ${host}:${port}`))
    }, connectTimeoutMs)
    s.once(secure ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer)
      s.removeListener('error', onError)
      resolve(s)
    })
    const onError = (err) => {
      clearTimeout(timer)
      reject(err)
    }
    s.once('error', onError)
  })
  const client = new RespClient(socket)
  try {
    const username = decodeURIComponent(u.username)
    const password = decodeURIComponent(u.password)
    if (password) {
      await (username
        ? client.command('AUTH', username, password)
        : client.command('AUTH', password))
    }
    const db = u.pathname.replace(/^\//, '')
    if (db !== '' && db !== '0') await client.command('SELECT', db)
  } catch (err) {
    client.destroy()
    throw err
  }
  return client
}

module.exports = { connectRedis, RedisReplyError, encodeCommand, encodeMessage }
