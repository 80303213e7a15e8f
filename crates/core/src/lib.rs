//! The core of smart-crm-consumer: everything but the JavaScript binding.
//!
//! | module | concern |
//! | --- | --- |
//! | [`config`] | options, defaults, env fallbacks, validation |
//! | [`protocol`] | the change-event protocol: topics, types, parsing, rejection reasons |
//! | [`secret`] | values that are never printed |
//! | [`signature`] | RFC 8785 canonical JSON and HMAC-SHA256 signatures |
//! | [`ids`] | the id rule, URL path segments, reference cache keys |
//! | [`intern`] | shared names, name lists and user access shapes of the critical store |
//! | [`memory`] | giving freed memory back after large loads and tenant releases |
//! | [`model`] | critical entities and snapshot rows |
//! | [`critical`] | the critical store with versions and tombstones |
//! | [`delta`] | replica batches for the JS read replica |
//! | [`outbox`] | coalescing, ordered delivery of batches to JS |
//! | [`redis_target`] | where Redis is: server, Sentinel or Cluster, TLS; options and connections |
//! | [`reference`] | the TTL, byte-bounded, single-flight reference cache |
//! | [`shared_ref`] | the shared reference tier in Redis: layout, fence, fleet-wide single-flight (SPEC §7) |
//! | [`commands`] | the command connection: lazy, replaced after failures, Cluster redirects |
//! | [`wrapper`] | the Wrapper HTTP client |
//! | [`tenant`] | one tenant's state, shared by the consumer and its tasks |
//! | [`subscriber`] | the Redis link: connect, subscribe, heartbeat, reconnect backoff, the session loop |
//! | [`reload`] | full reloads: reasons, jitter, coalescing, retries, recorded events |
//! | [`fleet`] | stream-transport full loads: the shared snapshot, the lease, the refresh lease |
//! | [`apply`] | event application and the installation of a reloaded store |
//! | [`replay`] | the `eventId` replay window |
//! | [`stream`] | the stream transport's Redis layout and commands (SPEC §7) |
//! | [`snapshot`] | the shared snapshot's format and checks (SPEC §7) |
//! | [`backoff`] | jittered backoff schedules |
//! | [`breaker`] | the Wrapper circuit breaker |
//! | [`metrics`] | counters and health |
//! | `tasks` | the background tasks of a handle: joined on shutdown, aborted on drop |
//! | [`consumer`] | the consumer that ties them together |
//! | [`pool`] | many tenants' consumers over one Redis link and one HTTP pool (SPEC §8) |
//! | [`publisher`] | the publishing side, for a Wrapper written in Node |
//! | [`testing`] | the test double's core (SPEC §9): one tenant in memory, no task, socket or timer |
//!
//! This crate never imports napi: `cargo test` covers it without Node.

#![warn(missing_docs)]

pub(crate) mod apply;
pub mod background;
pub mod backoff;
pub mod breaker;
pub mod commands;
pub mod config;
pub mod consumer;
pub mod critical;
pub mod delta;
pub mod error;
pub mod fleet;
pub mod ids;
pub mod intern;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod packing;
pub mod pool;
pub mod protocol;
pub mod publisher;
pub mod redis_target;
pub mod ref_table;
pub mod reference;
pub mod reload;
pub mod replay;
pub mod secret;
pub mod shared_ref;
pub mod signature;
pub mod snapshot;
pub mod stream;
pub(crate) mod subscriber;
pub(crate) mod tasks;
pub(crate) mod tenant;
pub mod testing;
pub mod wrapper;

pub use config::Config;
pub use consumer::Consumer;
pub use error::{ArgKind, CoreError, Result};
pub use pool::Pool;
