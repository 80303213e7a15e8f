// Types of `smart-crm-consumer/test-helpers` (tools/test-helpers/index.js):
// development and test helpers, not part of the consumer's API.
import type { Logger } from '../../lib/index.js'

/** A private redis-server started by `startRedis` (a child of this process). */
export interface RedisServer {
  readonly port: number
  /** `redis://127.0.0.1:{port}` */
  readonly url: string
  readonly extraArgs: readonly (string | number)[]
  /** Its log file (deleted when this process exits unless REDIS_TEST_KEEP_LOGS is set). */
  readonly logFile: string
  /** PID of the current (latest) child process. */
  readonly pid: number
  /** Whether the current child has not exited yet. */
  readonly running: boolean
  /** SIGTERM, wait for exit (SIGKILL after 3 s). Idempotent. */
  stop(): Promise<void>
  /** SIGKILL and wait for exit. Idempotent. */
  kill(): Promise<void>
  /** Starts it again on the same port and waits until it answers. */
  restart(): Promise<void>
  /** SIGSTOP: sockets stay open, nothing is answered (a half-open link). */
  pause(): void
  /** SIGCONT: undoes `pause()`. */
  resume(): void
}

export interface StartRedisOptions {
  /** Default: a free port. 6379 (the shared Redis) is refused. */
  port?: number
  /** More redis-server arguments, e.g. `['--requirepass', 'secret']`. */
  extraArgs?: (string | number)[]
}

/** Starts a private redis-server on 127.0.0.1 and waits until it answers PING as itself. */
export function startRedis(options?: StartRedisOptions): Promise<RedisServer>
/** Stops every server this process started. */
export function stopAllRedis(): Promise<void>
/** A TCP port that was free on 127.0.0.1 a moment ago (never 6379). */
export function freePort(): Promise<number>

export interface WaitForOptions {
  /** Milliseconds before it throws; default 10000. */
  timeout?: number
  /** Milliseconds between polls; default 5. */
  interval?: number
  /** Named in the error: `timed out after {timeout} ms waiting for {message}`. */
  message?: string
}

/** Polls `fn` until it returns a truthy value, which it resolves to. */
export function waitFor<T>(
  fn: () => T | PromiseLike<T>,
  options?: WaitForOptions,
): Promise<Exclude<T, false | 0 | '' | null | undefined>>

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'

/** A logger that drops every line except those of the `keep` levels (to `console[level]`). */
export function quietLogger(options?: { keep?: LogLevel[] }): Logger
