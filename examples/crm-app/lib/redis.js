'use strict'
// A private, throwaway redis-server for the example (server.js, tests, load
// runs) when no REDIS_URL is given: a child of this process on a free port of
// 127.0.0.1, never the shared 6379, killed by PID when this process exits.

const { spawn } = require('node:child_process')
const net = require('node:net')

const HOST = '127.0.0.1'
const SHARED_PORT = 6379
const live = new Set()

process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL')
    } catch {
      // already gone
    }
  }
})

/** A TCP port that was free on 127.0.0.1 a moment ago (never 6379). */
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

/** Resolves to the `process_id` the server on `port` reports, or null when it does not answer. */
function serverPid(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: HOST })
    let text = ''
    const done = (v) => {
      clearTimeout(timer)
      socket.destroy()
      resolve(v)
    }
    const timer = setTimeout(() => done(null), 500)
    socket.on('connect', () => socket.write('*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n'))
    socket.on('data', (d) => {
      text += d
      const m = /process_id:(\d+)\r\n/.exec(text)
      if (m) done(Number(m[1]))
    })
    socket.on('error', () => done(null))
  })
}

/**
 * Starts redis-server and waits (10 s at most) until it answers as itself.
 *
 * @returns {Promise<{ url: string, port: number, pid: number, stop(): Promise<void> }>}
 */
async function startRedis({ timeoutMs = 10_000 } = {}) {
  const port = await freePort()
  const args = ['--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no']
  const child = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'pipe'] })
  live.add(child)
  let stderr = ''
  child.stderr.on('data', (d) => (stderr += d))
  const exited = new Promise((resolve) => child.once('exit', resolve))
  let spawnError = null
  child.once('error', (err) => (spawnError = err))
  child.once('exit', () => live.delete(child))
  const deadline = Date.now() + timeoutMs
  while ((await serverPid(port)) !== child.pid) {
    if (spawnError || child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL')
      const why = spawnError ? spawnError.message : `exit ${child.exitCode}`
      throw new Error(`redis-server on port ${port} did not start (${why}) ${stderr}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return {
    url: `redis://${HOST}:${port}`,
    port,
    pid: child.pid,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000)
      await exited
      clearTimeout(timer)
    },
  }
}

module.exports = { startRedis, freePort }
