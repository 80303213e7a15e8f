// smart-crm-consumer: the package entry point (ES module).
import cjs from './index.js'

export const {
  SmartCRMConsumer,
  createTenantPool,
  TenantPool,
  createPublisher,
  signMessage,
  canonicalize,
} = cjs
export default cjs
