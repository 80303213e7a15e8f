// smart-crm-consumer/testing as an ES module.
import cjs from './testing.js'

export const { createTestConsumer, createTestPool } = cjs
export default cjs
