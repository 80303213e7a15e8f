'use strict'
// Deterministic bench data: operation codes, roles with prefix patterns, users,
// ~1 KB user profiles and change events. Every process that builds the same
// sizes gets the same values, so the package, the baseline and the floor all
// run on the same data.

/** A small deterministic PRNG (mulberry32). */
function rng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const WORDS = (
  'account activity address agent amount analysis approval archive asset audit balance ' +
  'branch budget campaign channel client closing comment company contact contract ' +
  'conversion customer deal delivery demo discount document domain email estimate event ' +
  'forecast funnel invoice lead license margin meeting milestone note offer opportunity ' +
  'order partner payment pipeline pricing product project proposal quota quote referral ' +
  'region renewal report revenue segment service signature stage subscription support ' +
  'target task team territory ticket trial upsell vendor visit workflow'
).split(' ')

const opCode = (i) => `crm.m${i % 97}.op${i}`
const roleId = (i) => `role-${i}`
const userId = (i) => `user-${String(i).padStart(7, '0')}`

/** Credit configs: `{ operationCode, creditCost, isActive, version }`. */
function credits(n) {
  const out = []
  for (let i = 0; i < n; i++) {
    out.push({ operationCode: opCode(i), creditCost: (i % 17) + 0.5, isActive: true, version: 1 })
  }
  return out
}

/**
 * Role `r`'s permissions: `prefixes` patterns `crm.r{r}.p{k}.*` first, then
 * exact `crm.r{r}.e{k}.act` up to `perms` in all.
 */
function rolePermissions(r, perms = 50, prefixes = 5) {
  const out = []
  for (let k = 0; k < perms; k++) {
    out.push(k < prefixes ? `crm.r${r}.p${k}.*` : `crm.r${r}.e${k}.act`)
  }
  return out
}

/** Roles: `{ roleId, roleName, permissions, version }`. */
function roles(n, perms = 50, prefixes = 5) {
  const out = []
  for (let r = 0; r < n; r++) {
    out.push({
      roleId: roleId(r),
      roleName: `Role ${r}`,
      permissions: rolePermissions(r, perms, prefixes),
      version: 1,
    })
  }
  return out
}

/** User `u`'s `k` distinct roles among `nRoles`. */
function userRoles(u, nRoles, k) {
  const out = []
  const step = Math.max(1, Math.floor(nRoles / k))
  for (let j = 0; j < k; j++) out.push(roleId((u + j * step) % nRoles))
  return out
}

/** User access rows: `{ userId, status, roles, version }`. */
function users(n, nRoles, rolesPerUser = 2) {
  const out = []
  for (let u = 0; u < n; u++) {
    out.push({
      userId: userId(u),
      status: u % 50 === 49 ? 'suspended' : 'active',
      roles: userRoles(u, nRoles, rolesPerUser),
      version: 1,
    })
  }
  return out
}

/** Active configs. */
function configs(n) {
  const out = []
  for (let i = 0; i < n; i++) {
    out.push({
      configId: `config-${i}`,
      config: { limit: i * 10, enabled: i % 2 === 0 },
      version: 1,
    })
  }
  return out
}

function sentence(next, words) {
  const out = []
  for (let i = 0; i < words; i++) out.push(WORDS[Math.floor(next() * WORDS.length)])
  return out.join(' ')
}

/** A user profile of about 1 KB of JSON, unique per `i`. */
function profile(i) {
  const next = rng(i + 1)
  const id = userId(i)
  const first = sentence(next, 1)
  const last = sentence(next, 1)
  return {
    userId: id,
    name: `${first} ${last} ${i}`,
    email: `${first}.${last}.${i}@example.com`,
    title: sentence(next, 3),
    department: sentence(next, 2),
    phone: `+1-555-${String(1000 + (i % 9000)).padStart(4, '0')}`,
    locale: 'en-US',
    timezone: 'Europe/Berlin',
    managerId: userId(Math.floor(i / 10)),
    avatarUrl: `https://avatars.example.com/${id}.png`,
    createdAt: new Date(Date.UTC(2024, 0, 1) + i * 60000).toISOString(),
    address: {
      street: `${100 + (i % 900)} ${sentence(next, 2)} street`,
      city: sentence(next, 1),
      zip: String(10000 + (i % 89999)),
      country: 'DE',
    },
    skills: [sentence(next, 1), sentence(next, 1), sentence(next, 1), sentence(next, 1)],
    preferences: { theme: i % 2 ? 'dark' : 'light', digest: 'weekly', language: 'en' },
    bio: sentence(next, 58),
  }
}

/**
 * A `credit-config-changed` event that sets `operationCode` to `newValue`
 * (with `version` = `newValue`, so later events are newer per operation).
 */
function creditEvent(tenantId, operationCode, seq) {
  return JSON.stringify({
    eventId: `bench-${seq}`,
    eventType: 'credit-config-changed',
    tenantId,
    version: seq + 1,
    timestamp: new Date().toISOString(),
    data: {
      operationCode,
      changedFields: ['credit_cost'],
      newValue: seq,
      oldValue: seq - 1,
    },
  })
}

module.exports = {
  rng,
  opCode,
  roleId,
  userId,
  credits,
  roles,
  rolePermissions,
  userRoles,
  users,
  configs,
  profile,
  creditEvent,
}
