// Types of smart-crm-consumer/express (SPEC §5).
import type { SmartCRMConsumer } from './index'

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

export declare function requirePermission(
  consumer: SmartCRMConsumer,
  permission: string,
  options?: GuardOptions,
): (req: any, res: any, next: Next) => void
export declare function requireCredits(
  consumer: SmartCRMConsumer,
  operationCode: string,
  options?: GuardOptions,
): (req: any, res: any, next: Next) => Promise<void>
export declare function metricsHandler(consumer: SmartCRMConsumer): (req: any, res: any) => void
export type { Req, Res }
