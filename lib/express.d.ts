// Types of smart-crm-consumer/express (SPEC §5).
import type { SmartCRMConsumer, TenantPool } from './index'

type Req = { user?: { id?: string | number }; creditCost?: number; [key: string]: unknown }
type Res = {
  status(code: number): Res
  json(body: unknown): unknown
  set(name: string, value: string): unknown
  send(body: string): unknown
}
type Next = (err?: unknown) => void

export interface GuardOptions {
  /** Default `req.user?.id`; a finite number is taken as its decimal string. */
  getUserId?: (req: any) => string | number | undefined | null
}

/** A consumer, or a function that picks the request's (with a pool: `(req) => req.crm`). */
export type ConsumerSource = SmartCRMConsumer | ((req: any) => SmartCRMConsumer)

export interface TenantOptions {
  /** Default `req.user?.tenantId`; a finite number is taken as its decimal string. */
  getTenantId?: (req: any) => string | number | undefined | null
}

export declare function requirePermission(
  consumer: ConsumerSource,
  permission: string,
  options?: GuardOptions,
): (req: any, res: any, next: Next) => void
export declare function requireCredits(
  consumer: ConsumerSource,
  operationCode: string,
  options?: GuardOptions,
): (req: any, res: any, next: Next) => Promise<void>
export declare function metricsHandler(
  consumer: SmartCRMConsumer | TenantPool,
  /** For a pool: `{ perTenant: false }` serves the sums only. */
  options?: { perTenant?: boolean },
): (req: any, res: any) => void
/**
 * Sets `req.crm` to the request's tenant consumer (SPEC §8): 401 without a
 * tenant id, 403 `{ error: 'Unknown tenant' }` when the Wrapper refuses it,
 * 503 `{ error: 'Tenant unavailable' }` when it cannot be loaded now.
 */
export declare function tenant(
  pool: TenantPool,
  options?: TenantOptions,
): (req: any, res: any, next: Next) => void
export type { Req, Res }
