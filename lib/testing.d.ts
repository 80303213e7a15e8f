// Types of smart-crm-consumer/testing (SPEC §9).
import type {
  TenantPool,
  SmartCRMConsumer,
  SmartCRMConsumerOptions,
  ChangeEvent,
  ErrorCode,
  JsonValue,
} from './index'

/** A seeded user: status (e.g. 'active') and role ids. */
export interface TestUser {
  status: string
  roles?: string[]
}

/**
 * Every consumer option (validated as `new SmartCRMConsumer` validates them;
 * `wrapperUrl` may be left out, the environment is not read), plus the data
 * the memory Wrapper starts with.
 */
export interface TestConsumerOptions extends SmartCRMConsumerOptions {
  /** operationCode → cost; `null` = configured but inactive. */
  credits?: Record<string, number | null>
  /** roleId → permission patterns. */
  roles?: Record<string, string[]>
  users?: Record<string, TestUser>
  /** configId → its JSON value. */
  configs?: Record<string, JsonValue>
  /** Reference objects by cache key (`user:{id}`, `hierarchy:{id}`, `audit:{id}`, `historical:{key}`); `null` or absent = 404. */
  reference?: Record<string, Record<string, JsonValue> | null>
  /** userId → available credits; a user without one has 0. */
  balances?: Record<string, number>
}

/** The envelope fields of an applied event; the rest is filled as a publisher fills it. */
export interface ApplyOptions {
  /** Per-entity version (SPEC §3): an event not newer than the one held is `stale`. */
  version?: number
  /** Default a fresh id; one applied already is a `replay`. */
  eventId?: string
  /** Default now; with a `signingSecret`, one outside the window is `expired`. */
  timestamp?: string | Date
}

/** The public methods `failNext` can make fail. */
export type FailableMethod =
  | 'initialize'
  | 'getUserProfile'
  | 'getHierarchy'
  | 'getAuditLog'
  | 'getHistoricalData'
  | 'getUserCredits'
  | 'checkCredits'
  | 'deductCredits'

/** One applied deduction. */
export interface Deduction {
  userId: string
  amount: number
  operationCode: string | null
  idempotencyKey: string
  /** The balance after it. */
  remaining: number
}

/** A rejected `apply()`: a `RangeError` (`ERR_OUT_OF_RANGE`). */
export interface RejectedEventError extends RangeError {
  code: 'ERR_OUT_OF_RANGE'
  reason:
    | 'malformed'
    | 'badSignature'
    | 'expired'
    | 'wrongTenant'
    | 'wrongTopic'
    | 'stale'
    | 'replay'
    | 'tooLarge'
    | 'unknownType'
}

/** A `SmartCRMConsumer` (the same class) whose Wrapper and Redis are memory. */
export interface TestConsumer extends SmartCRMConsumer {
  /**
   * Applies one event through the consumer's event rules (SPEC §3) and returns
   * its change; reads right after see it, listeners have been called. Throws a
   * {@link RejectedEventError} for a rejected event, which changes nothing.
   */
  apply(eventType: string, data?: Record<string, JsonValue>, options?: ApplyOptions): ChangeEvent
  /** What the Wrapper answers for `key` from now on (`null` = 404); the cached entry is dropped. */
  setReference(key: string, value: Record<string, JsonValue> | null): void
  /**
   * The next call of `method` fails with `code` (queued: call it twice, the next
   * two calls fail). `checkCredits` reads the balance as `getUserCredits` does:
   * a failure armed for either is taken by whichever reads a balance next.
   */
  failNext(method: FailableMethod, code: ErrorCode): void
  /** The deductions applied so far, in order (a fresh copy). */
  readonly deductions: Deduction[]
}

/** Throws a `TypeError`/`RangeError` (`ERR_INVALID_OPTION`) naming an invalid option. */
export declare function createTestConsumer(options: TestConsumerOptions | string): TestConsumer

/** A tenant pool of test doubles (see `createTestPool`). */
export interface TestTenantPool extends Omit<TenantPool, 'tenant' | 'peek'> {
  tenant(tenantId: string): Promise<TestConsumer>
  peek(tenantId: string): TestConsumer | null
}

/**
 * A tenant pool (SPEC §8) whose tenants are test doubles: `tenants` maps each
 * tenant the memory Wrapper serves to its seed; another id is refused with
 * `WRAPPER_AUTH`. Works with the Express `tenant(pool)` middleware.
 */
export declare function createTestPool(
  options?: Omit<TestConsumerOptions, 'tenantId'> & {
    tenants?: Record<string, Omit<TestConsumerOptions, 'tenantId'>>
  },
): TestTenantPool
