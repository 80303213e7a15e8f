'use strict'
// Test helper (`smart-crm-consumer/test-helpers`): the minimal RESP2 Redis
// client over `net`/`tls` (lib/resp.js, which the doctor ships with; one copy),
// for publishing events, subscribing and poking at Redis, plus `publishMany`,
// pipelined bulk publishing for storms and benchmarks.
//
// Replies are matched to commands in order, so commands pipeline freely: call
// `command()` many times and await the promises later. Replies: simple string →
// string, error → rejected Error (`code` = first word), integer → number, bulk
// string → string (null when nil), array → array (nested; null when nil).

const { connectRedis, RedisReplyError, encodeCommand, encodeMessage } = require('../../lib/resp.js')

const PUBLISH_CHUNK = 1000

/**
 * Pipelines many commands, respecting backpressure; resolves to the sum of
 * their integer replies (for PUBLISH: the total receiver count).
 */
async function pipelineSum(client, commands) {
  if (client.closed) throw new Error('connection closed')
  let total = 0
  let left = commands.length
  if (left === 0) return 0
  let done
  const all = new Promise((resolve, reject) => {
    done = { resolve, reject }
  })
  let failed = false
  const entry = {
    replies: 1,
    resolve: (n) => {
      total += n
      if (--left === 0) done.resolve(total)
    },
    reject: (err) => {
      if (!failed) done.reject(err)
      failed = true
    },
  }
  for (let i = 0; i < commands.length && !client.closed; i += PUBLISH_CHUNK) {
    const chunk = commands.slice(i, i + PUBLISH_CHUNK)
    for (let j = 0; j < chunk.length; j++) client._pending.push(entry)
    if (!client.socket.write(chunk.map(encodeCommand).join(''))) {
      await new Promise((resolve) => {
        const go = () => {
          client.socket.off('drain', go)
          client.socket.off('close', go)
          resolve()
        }
        client.socket.on('drain', go)
        client.socket.on('close', go)
      })
    }
  }
  return all
}

/**
 * Publishes every message of `messages` to `channel` over one pipelined
 * connection (written in chunks, with backpressure), then closes it.
 * Objects are sent as JSON.
 *
 * @returns {Promise<number>} the total receiver count over all messages
 */
async function publishMany(url, channel, messages) {
  const client = await connectRedis(url)
  try {
    return await pipelineSum(
      client,
      messages.map((m) => ['PUBLISH', channel, encodeMessage(m)]),
    )
  } finally {
    await client.close()
  }
}

module.exports = { connectRedis, publishMany, RedisReplyError }
