// smart-crm-consumer/express as an ES module.
import cjs from './express.js'

export const { requirePermission, requireCredits, metricsHandler, tenant } = cjs
export default cjs
