// smart-crm-consumer/testing as an ES module.
import cjs from './testing.js'

export const { createTestConsumer } = cjs
export default cjs
