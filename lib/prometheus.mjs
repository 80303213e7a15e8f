// smart-crm-consumer/prometheus as an ES module.
import cjs from './prometheus.js'

export const { register, metricsText } = cjs
export default cjs
