'use strict'
// Wrapper simulator: its store. How the `data` option (Maps, arrays or objects
// per collection) becomes `sim.data` (one Map per collection), and the small
// sample store used when no data is given.

/** How items of each collection are keyed when `data` gives them as an array. */
const KEY_FIELDS = {
  credits: ['operationCode'],
  roles: ['roleId'],
  users: ['userId'],
  configs: ['configId'],
  profiles: ['userId', 'id'],
  hierarchy: ['entityId', 'id'],
  auditLogs: ['logId', 'id'],
  historical: ['key', 'id'],
  balances: ['userId'],
}

/** Fills in a record given as `{ [key]: value }`; a few shorthands for brevity. */
function expandRecord(name, key, value) {
  const field = KEY_FIELDS[name][0]
  if (name === 'credits' && typeof value === 'number') {
    return { operationCode: key, creditCost: value }
  }
  if (name === 'roles' && Array.isArray(value)) return { roleId: key, permissions: value }
  const critical = name === 'credits' || name === 'roles' || name === 'users' || name === 'configs'
  if (critical && value && typeof value === 'object' && !(field in value)) {
    return { [field]: key, ...value }
  }
  return value
}

/**
 * One collection as a Map. A Map is used as it is (so a test can keep a
 * reference to it); an array is keyed by its items' key field (or read as
 * `[key, value]` entries); a plain object by its own keys.
 */
function toMap(name, value) {
  if (value === undefined || value === null) return new Map()
  if (value instanceof Map) return value
  if (Array.isArray(value)) {
    return new Map(
      value.map((item) => {
        if (Array.isArray(item) && item.length === 2) return [String(item[0]), item[1]]
        const key = KEY_FIELDS[name].map((f) => item?.[f]).find((k) => k !== undefined)
        if (key === undefined) {
          throw new TypeError(`data.${name}: an item has no ${KEY_FIELDS[name].join(' or ')}`)
        }
        return [String(key), item]
      }),
    )
  }
  if (typeof value === 'object') {
    return new Map(Object.entries(value).map(([k, v]) => [k, expandRecord(name, k, v)]))
  }
  throw new TypeError(`data.${name} must be a Map, an array or an object`)
}

/** Normalises `data` into `{ credits: Map, roles: Map, ... }`; missing collections are empty. */
function normaliseData(data = {}) {
  const out = {}
  for (const name of Object.keys(KEY_FIELDS)) out[name] = toMap(name, data[name])
  return out
}

function profile(userId, name, title, department, managerId) {
  const login = name.split(' ')[0].toLowerCase()
  return {
    userId,
    name,
    email: `${login}@example.com`,
    title,
    department,
    phone: '+1-555-0100',
    locale: 'en-US',
    timezone: 'Europe/Berlin',
    managerId,
    avatarUrl: `https://avatars.example.com/${userId}.png`,
    createdAt: '2025-01-15T09:00:00Z',
  }
}

/**
 * A small, fresh sample store (Maps), the default when `data` is not given.
 *
 * @returns {{ credits: Map, roles: Map, users: Map, configs: Map, profiles: Map,
 *   hierarchy: Map, auditLogs: Map, historical: Map, balances: Map }}
 */
function defaultSeed() {
  return normaliseData({
    credits: [
      { operationCode: 'crm.leads.create', creditCost: 2.5, isActive: true, version: 1 },
      { operationCode: 'crm.leads.delete', creditCost: 1, isActive: true, version: 1 },
      { operationCode: 'crm.contacts.export', creditCost: 0, isActive: true, version: 1 },
      { operationCode: 'crm.reports.generate', creditCost: 10, isActive: true, version: 1 },
      { operationCode: 'crm.legacy.import', creditCost: 5, isActive: false, version: 1 },
    ],
    roles: [
      { roleId: 'admin', roleName: 'Administrator', permissions: ['*'], version: 1 },
      {
        roleId: 'sales',
        roleName: 'Sales',
        permissions: ['crm.leads.*', 'crm.contacts.read'],
        version: 1,
      },
      { roleId: 'viewer', roleName: 'Viewer', permissions: ['crm.contacts.read'], version: 1 },
    ],
    users: [
      { userId: 'u-alice', status: 'active', roles: ['sales'], version: 1 },
      { userId: 'u-bob', status: 'suspended', roles: ['admin'], version: 1 },
      { userId: 'u-carol', status: 'active', roles: ['viewer', 'sales'], version: 1 },
    ],
    configs: [
      { configId: 'feature-flags', config: { beta: true }, version: 1 },
      { configId: 'limits', config: { maxLeadsPerDay: 500, exportBatch: 1000 }, version: 1 },
    ],
    profiles: [
      profile('u-alice', 'Alice Example', 'Account Executive', 'Sales', 'u-bob'),
      profile('u-bob', 'Bob Example', 'Head of Sales', 'Sales', null),
      profile('u-carol', 'Carol Example', 'Sales Analyst', 'Sales', 'u-bob'),
    ],
    hierarchy: [
      {
        entityId: 'org-1',
        name: 'Example Corp',
        type: 'org',
        parentId: null,
        children: ['team-sales'],
      },
      { entityId: 'team-sales', name: 'Sales', type: 'team', parentId: 'org-1', children: [] },
    ],
    auditLogs: [
      {
        logId: 'log-1',
        userId: 'u-alice',
        action: 'crm.leads.create',
        at: '2026-01-10T08:30:00Z',
        details: { leadId: 'lead-42' },
      },
    ],
    historical: [
      { key: 'revenue-2025-q4', currency: 'EUR', total: 125000, months: [40000, 41000, 44000] },
    ],
    balances: { 'u-alice': 100, 'u-bob': 50, 'u-carol': 1 },
  })
}

module.exports = { normaliseData, defaultSeed }
