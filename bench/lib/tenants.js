'use strict'
// The pool group's (rows 8a–8f) small tenants and helpers: one tenant's data
// (50 operations, 10 roles, 50 users), tenant ids, the two ways of holding N
// tenants (a tenant pool, or N separate SmartCRMConsumers as today), and the
// Redis connections a process holds, counted with CLIENT LIST.

const path = require('node:path')
const data = require('./data.js')
const { ROOT, consumerOptions } = require('./common.js')

/** The size of one small tenant. */
const SMALL = { ops: 50, roles: 10, users: 50, configs: 2 }

/** A small tenant's Wrapper data (the same for every tenant; tenants never share state). */
function smallTenant() {
  return {
    credits: data.credits(SMALL.ops),
    roles: data.roles(SMALL.roles, 20, 2),
    users: data.users(SMALL.users, SMALL.roles, 2),
    configs: data.configs(SMALL.configs),
  }
}

/** Tenant id number `i` of a run (`prefix` keeps runs and sides apart in the simulator's log). */
const tenantId = (prefix, i) => `${prefix}-${String(i).padStart(5, '0')}`

/** The pool's options: the consumer options every bench subject gets, without `tenantId`. */
function poolOptions({ wrapperUrl, redisUrl, ...extra }) {
  const { tenantId: _unused, ...opts } = consumerOptions({ tenantId: '', wrapperUrl, redisUrl })
  return { ...opts, ...extra }
}

/**
 * N tenants held one way or the other, behind one interface:
 * `load(id)` resolves to the tenant's consumer, `release(id)`, `close()`.
 * `'pool'`: one `createTenantPool`; `'separate'`: one `SmartCRMConsumer` per tenant.
 */
function holder(side, { wrapperUrl, redisUrl }) {
  const lib = require(path.join(ROOT, 'lib', 'index.js'))
  if (side === 'pool') {
    const pool = lib.createTenantPool(poolOptions({ wrapperUrl, redisUrl }))
    return {
      pool,
      load: (id) => pool.tenant(id),
      release: (id) => pool.release(id),
      loaded: () => pool.tenants().length,
      close: () => pool.shutdown(),
    }
  }
  if (side === 'separate') {
    const held = new Map()
    return {
      pool: null,
      load: async (id) => {
        const c = new lib.SmartCRMConsumer(consumerOptions({ tenantId: id, wrapperUrl, redisUrl }))
        held.set(id, c)
        await c.initialize()
        return c
      },
      release: (id) => {
        const c = held.get(id)
        held.delete(id)
        return c ? c.shutdown() : Promise.resolve()
      },
      loaded: () => held.size,
      close: () => Promise.all([...held.values()].map((c) => c.shutdown())),
    }
  }
  throw new Error(`unknown side ${side}`)
}

/**
 * The connections of a Redis server other than `self` (this counting
 * client's id): `{ connections, subscriptions }` (channels subscribed, summed
 * over the connections).
 */
async function countClients(rc, self) {
  const lines = String(await rc.command('CLIENT', 'LIST'))
    .trim()
    .split('\n')
    .filter((l) => l && !l.startsWith(`id=${self} `))
  let subscriptions = 0
  for (const l of lines) {
    const m = / sub=(\d+)/.exec(l)
    if (m) subscriptions += Number(m[1])
  }
  return { connections: lines.length, subscriptions }
}

/**
 * Event `i` of row 8d's stream over `tenants` tenants: for tenant i mod
 * `tenants`, it sets the cost of one of the tenant's operations (cycling
 * through them) to i + 1 (versions grow per operation). `{ tenant, op, value,
 * channel, text }`.
 */
function poolEvent({ prefix, tenants }, i) {
  const tenant = tenantId(prefix, i % tenants)
  const op = data.opCode(Math.floor(i / tenants) % SMALL.ops)
  return {
    tenant,
    op,
    value: i + 1,
    channel: `crm:${tenant}:credit-configs`,
    text: data.creditEvent(tenant, op, i + 1),
  }
}

module.exports = {
  SMALL,
  smallTenant,
  tenantId,
  poolOptions,
  holder,
  countClients,
  poolEvent,
}
