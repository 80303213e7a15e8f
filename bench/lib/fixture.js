'use strict'
// Sets up one subject inside a child process: a Wrapper simulator holding the
// critical data (in this process, or the parent's when `wrapperUrl` is given)
// and the package, the baseline or the floor's raw-RESP subscriber.

const { startWrapperSim } = require('../../tools/wrapper-sim.js')
const { connectRedis } = require('../../__test__/helpers/resp.js')
const data = require('./data.js')
const { makeSubject } = require('./common.js')

/** The small critical data set of the in-process rows. */
function smallData({ ops = 10000, roles = 40, users = 64 } = {}) {
  return {
    credits: data.credits(ops),
    roles: data.roles(roles, 50, 5),
    users: data.users(users, roles, 5),
    configs: data.configs(4),
  }
}

/**
 * `{ subject, sim, floor, close }`. `floor` is a raw RESP subscriber (the test
 * helper) on the credit-configs channel, set only for side 'floor'; side
 * 'none' sets up neither.
 */
async function setupSide({ side, redisUrl, tenantId, wrapperUrl, ops, extra = {} }) {
  let sim = null
  if (!wrapperUrl) {
    sim = await startWrapperSim({ tenantId, data: smallData({ ops }) })
    wrapperUrl = sim.url
  }
  let subject = null
  let floor = null
  if (side === 'floor') {
    floor = await connectRedis(redisUrl)
    await floor.subscribe(`crm:${tenantId}:credit-configs`)
  } else if (side !== 'none') {
    subject = makeSubject(side, { tenantId, wrapperUrl, redisUrl, ...extra })
    await subject.initialize()
  }
  const close = async () => {
    if (subject) await subject.shutdown()
    if (floor) floor.destroy()
    if (sim) await sim.stop()
  }
  return { subject, sim, floor, close }
}

module.exports = { smallData, setupSide }
