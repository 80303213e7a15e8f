//! The Wrapper HTTP client (SPEC §4): snapshot lists with cursor paging,
//! reference objects, credit balance and idempotent deductions.
//!
//! Every request carries `X-Tenant-Id` and, when configured, the bearer token
//! (marked sensitive so it never appears in debug output). Ids always travel as
//! one percent-encoded path segment. Error messages name the method and path
//! template, never the token.
//!
//! * **Retries.** Reads are retried on connection errors, timeouts, 429 and
//!   5xx, with jittered backoff and a bounded number of attempts; a deduction
//!   is retried only with its own idempotency key. An answer (4xx, a redirect,
//!   a body over the limit) is never retried.
//! * **No redirects.** A 3xx is `INVALID_RESPONSE` and is not followed, so
//!   neither the token, the tenant header nor a request body reaches another
//!   host (a 302 would also turn a deduction into a GET).
//! * **Bounded bodies.** A body is read chunk by chunk and refused
//!   (`INVALID_RESPONSE`) as soon as it passes `maxResponseBytes`, or before
//!   any of it is read when its `Content-Length` already does: nothing is
//!   buffered past the limit.
//! * **Bounded loads.** A list fails its load with `INVALID_RESPONSE` when a
//!   `nextCursor` repeats one seen earlier in the load (a paging cycle), or
//!   past [`MAX_ROWS`] rows or [`MAX_PAGES`] pages; and one snapshot load
//!   reads at most [`LOAD_BYTES_FACTOR`] × `maxResponseBytes` over all its
//!   pages. A failed or abandoned load aborts its page downloads.
//! * **Two circuit breakers** ([`crate::breaker`]), so neither path can starve
//!   the other. The snapshot breaker treats a whole load as one call: the load
//!   asks once at its start and, once admitted (a half-open probe included),
//!   all its page requests go out; its outcome is reported once. The reference
//!   breaker guards each reference read, balance and deduction request.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::background::{LoadThread, Priority};
use crate::backoff::Backoff;
use crate::breaker::{Breaker, Circuit};
use crate::config::Config;
use crate::critical::{CriticalStore, List, ListBuilder, RowSink, StoreBuilder};
use crate::error::{CoreError, Result};
use crate::ids::encode_segment;
use crate::metrics::Metrics;

/// The batch profiles endpoint (SPEC §10), without its query.
const PROFILES_PATH: &str = "/api/users/profiles";
/// Most ids in one batch profiles request.
pub const MAX_BATCH_IDS: usize = 100;

/// The body of a batch profiles answer.
#[derive(Deserialize)]
struct Profiles {
    profiles: HashMap<String, Box<serde_json::value::RawValue>>,
}

/// Attempts per request (first try included).
const ATTEMPTS: u32 = 3;
/// Most rows one list may have (10 million): a larger answer is invalid.
pub const MAX_ROWS: usize = 10_000_000;
/// Most pages followed for one list (100,000: 10 million rows in pages of 100).
pub const MAX_PAGES: usize = 100_000;
/// One snapshot load reads at most this many times `maxResponseBytes` over all
/// the pages of its four lists (1 GiB with the default 64 MiB).
pub const LOAD_BYTES_FACTOR: u64 = 16;
/// The first allocation for a body, whatever its `Content-Length` says; the
/// buffer grows with the chunks that actually arrive.
const FIRST_BODY_ALLOCATION: u64 = 1 << 20;
/// Pages smaller than this are parsed on the async task that downloaded
/// them; larger ones on the load's thread, while the next page downloads.
const INLINE_PAGE_BYTES: usize = 64 << 10;

/// A full load from the Wrapper, built.
#[derive(Debug)]
pub struct Built {
    /// The new store (the rules of snapshot rows kept, `critical.rs`).
    pub store: CriticalStore,
    /// Lists the Wrapper answered 304 to (credits, roles, users, configs):
    /// their tables are empty here, and the installation keeps the current
    /// ones (conditional loads, SPEC §4).
    pub unchanged: [bool; 4],
}

/// The bounds of one load (see the module docs); fields so tests can shrink them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Rows per list.
    max_rows: usize,
    /// Pages per list.
    max_pages: usize,
    /// Bytes over all pages of one snapshot.
    max_load_bytes: u64,
}

/// Which of the two breakers a call answers to (indexes [`WrapperClient::failing`]).
#[derive(Debug, Clone, Copy)]
enum Lane {
    /// Snapshot loads (the four list endpoints).
    Snapshot = 0,
    /// Reference reads, balances and deductions.
    Reference = 1,
}

/// A Wrapper client bound to one tenant. Cheap to clone (clones share the
/// connection pool, the breakers and the counters); every method is safe to
/// call concurrently from any task.
#[derive(Clone)]
pub struct WrapperClient {
    /// Pooled HTTP client with the default headers; never follows redirects.
    /// Shared by every tenant of a pool.
    http: reqwest::Client,
    /// `X-Tenant-Id`, sent with every request (not a default header of
    /// `http`, which a pool shares).
    tenant: HeaderValue,
    /// Base URL without trailing slash.
    base: String,
    /// Shared counters (requests, errors, `wrapper_failing`).
    metrics: Arc<Metrics>,
    /// Base delay of the retry schedule.
    retry_base: Duration,
    /// Fails snapshot loads fast while they fail; admits a whole load at once.
    snapshot_breaker: Arc<Breaker>,
    /// Fails reference and credit requests fast while they fail.
    reference_breaker: Arc<Breaker>,
    /// Whether the latest call of each [`Lane`] failed unavailable: the
    /// metric `wrapper_failing` (health `degraded`) is true while either is,
    /// so one path's success does not hide the other's outage.
    failing: Arc<[AtomicBool; 2]>,
    /// `maxResponseBytes`: the largest body read.
    max_response_bytes: u64,
    /// Bounds of one load.
    limits: Limits,
    /// Each list's `ETag` as of the last complete load (credits, roles,
    /// users, configs), for conditional loads.
    etags: Arc<Mutex<[Option<String>; 4]>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Paged<'a> {
    #[serde(borrow)]
    items: Vec<&'a serde_json::value::RawValue>,
    #[serde(default)]
    next_cursor: serde_json::Value,
}

#[derive(Deserialize)]
struct Available {
    available: f64,
}

#[derive(Deserialize)]
struct Remaining {
    remaining: f64,
}

#[derive(Deserialize)]
struct Refusal {
    #[serde(default)]
    available: Option<f64>,
}

/// The body of a deduction request.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct DeductBody<'a> {
    amount: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation_code: Option<&'a str>,
    idempotency_key: &'a str,
}

enum Outcome {
    /// 2xx with its body.
    Ok(Bytes),
    /// 304 to a conditional request: unchanged, nothing downloaded.
    NotModified,
    /// A status that is an answer (404, 401/403, 402, other 4xx) with its body.
    Answer(StatusCode, Bytes),
}

/// How one request ended, after its retries.
enum Exchange {
    /// 2xx or a 4xx answer.
    Answered(Outcome),
    /// The Wrapper answered, but with something refused (a redirect, a body
    /// over the limit): `INVALID_RESPONSE`, not an outage.
    Refused(CoreError),
    /// Every attempt failed: the message of the last one.
    Down(String),
}

/// Why a body could not be read.
enum BodyError {
    /// Over `maxResponseBytes` (announced or as it arrived).
    TooLarge,
    /// The connection failed while reading.
    Cut(reqwest::Error),
}

/// The byte budget of one snapshot load, shared by its four lists.
struct LoadBudget {
    /// Bytes read so far over all pages.
    used: AtomicU64,
    /// The bound.
    max: u64,
}

impl LoadBudget {
    /// Counts `n` more bytes; false once the load is over its bound.
    fn take(&self, n: usize) -> bool {
        self.used.fetch_add(n as u64, Relaxed) + n as u64 <= self.max
    }
}

/// A page download running in its own task, aborted when dropped: a load that
/// fails (or is dropped) stops its downloads instead of leaving them to retry.
struct PageTask(tokio::task::JoinHandle<Result<Option<Page>>>);

/// One downloaded page.
struct Page {
    /// Its body.
    body: Bytes,
    /// Its `ETag`, if any.
    etag: Option<String>,
}

/// One list endpoint as loaded.
struct Listed<S> {
    /// The sink with the list's rows; `None` when the Wrapper answered 304
    /// (unchanged).
    sink: Option<S>,
    /// The first page's `ETag`.
    etag: Option<String>,
}

impl Drop for PageTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl WrapperClient {
    /// The counters this client adds to (its tenant's).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Builds the client from the configuration, with its own HTTP connection pool.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self> {
        let http = Self::http_client(config)?;
        Self::with_http(config, metrics, http)
    }

    /// The HTTP client (connection pool, TLS roots, default headers) of
    /// `config`'s Wrapper, to be shared by the clients of many tenants
    /// ([`WrapperClient::with_http`]): everything in it is the same for every
    /// tenant of a pool; the tenant's header is added per request.
    pub fn http_client(config: &Config) -> Result<reqwest::Client> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(token) = &config.wrapper_token {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| CoreError::option_range("wrapperToken", "a valid header value"))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        reqwest::Client::builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| CoreError::WrapperUnavailable(format!("cannot build HTTP client: {e}")))
    }

    /// A client for `config`'s tenant over `http` (made by
    /// [`WrapperClient::http_client`] from options that differ at most in the
    /// tenant id). Its breakers and counters are its own.
    pub fn with_http(
        config: &Config,
        metrics: Arc<Metrics>,
        http: reqwest::Client,
    ) -> Result<Self> {
        let tenant = HeaderValue::from_str(&config.tenant_id)
            .map_err(|_| CoreError::option_range("tenantId", "a valid header value"))?;
        let breaker = || {
            Arc::new(Breaker::new(
                config.breaker_failures,
                config.breaker_cool_down,
            ))
        };
        Ok(WrapperClient {
            http,
            tenant,
            base: config.wrapper_url.clone(),
            metrics,
            retry_base: Duration::from_millis(100),
            snapshot_breaker: breaker(),
            reference_breaker: breaker(),
            failing: Arc::new([AtomicBool::new(false), AtomicBool::new(false)]),
            max_response_bytes: config.max_response_bytes,
            etags: Arc::new(Mutex::new(Default::default())),
            limits: Limits {
                max_rows: MAX_ROWS,
                max_pages: MAX_PAGES,
                max_load_bytes: config.max_response_bytes.saturating_mul(LOAD_BYTES_FACTOR),
            },
        })
    }

    /// Records whether `lane` is failing and updates `wrapper_failing`.
    fn set_failing(&self, lane: Lane, failing: bool) {
        self.failing[lane as usize].store(failing, Relaxed);
        let any = self.failing.iter().any(|f| f.load(Relaxed));
        self.metrics.wrapper_failing.store(any, Relaxed);
    }

    /// A reference-path request: admitted and reported per request by the
    /// reference breaker.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        idempotency_key: Option<&str>,
    ) -> Result<Outcome> {
        let Some(permit) = self.reference_breaker.try_acquire() else {
            self.set_failing(Lane::Reference, true);
            return Err(CoreError::WrapperUnavailable(format!(
                "{}: circuit open",
                label_of(&method, path)
            )));
        };
        match self.exchange(method, path, body, idempotency_key).await {
            Exchange::Answered(outcome) => {
                permit.success();
                self.set_failing(Lane::Reference, false);
                Ok(outcome)
            }
            Exchange::Refused(e) => {
                permit.success();
                self.set_failing(Lane::Reference, false);
                Err(e)
            }
            Exchange::Down(msg) => {
                permit.failure();
                self.set_failing(Lane::Reference, true);
                Err(CoreError::WrapperUnavailable(msg))
            }
        }
    }

    /// One request with its retries; no breaker (the caller has a permit).
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        idempotency_key: Option<&str>,
    ) -> Exchange {
        self.exchange_if(method, path, body, idempotency_key, None)
            .await
            .0
    }

    /// [`WrapperClient::exchange`] with `If-None-Match: if_none_match` when
    /// given; also returns the answer's `ETag` (2xx only).
    async fn exchange_if(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        idempotency_key: Option<&str>,
        if_none_match: Option<&str>,
    ) -> (Exchange, Option<String>) {
        let label = label_of(&method, path);
        let url = format!("{}{}", self.base, path);
        let mut backoff = Backoff::new(self.retry_base, self.retry_base * 8);
        let mut attempt = 0;
        loop {
            attempt += 1;
            Metrics::inc(&self.metrics.wrapper_requests);
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("x-tenant-id", self.tenant.clone());
            if let Some(b) = body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_vec());
            }
            if let Some(k) = idempotency_key {
                req = req.header("idempotency-key", k);
            }
            if let Some(tag) = if_none_match {
                req = req.header(reqwest::header::IF_NONE_MATCH, tag);
            }
            let failure = match req.send().await {
                Ok(mut resp) => {
                    let status = resp.status();
                    if status == StatusCode::NOT_MODIFIED && if_none_match.is_some() {
                        return (Exchange::Answered(Outcome::NotModified), None);
                    }
                    let etag = resp
                        .headers()
                        .get(reqwest::header::ETAG)
                        .and_then(|v| v.to_str().ok())
                        .filter(|v| v.len() <= 256)
                        .map(str::to_owned);
                    if status.is_redirection() {
                        Metrics::inc(&self.metrics.wrapper_errors);
                        return (Exchange::Refused(CoreError::InvalidResponse(format!(
                            "{label}: HTTP {} redirect, not followed (the consumer never follows redirects)",
                            status.as_u16()
                        ))), None);
                    }
                    let answer = status.is_success()
                        || (status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS);
                    if answer {
                        match read_body(&mut resp, self.max_response_bytes).await {
                            Ok(bytes) if status.is_success() => {
                                return (Exchange::Answered(Outcome::Ok(bytes)), etag);
                            }
                            Ok(bytes) => {
                                // An answer, not an outage: the Wrapper is up.
                                Metrics::inc(&self.metrics.wrapper_errors);
                                return (Exchange::Answered(Outcome::Answer(status, bytes)), None);
                            }
                            Err(BodyError::TooLarge) => {
                                Metrics::inc(&self.metrics.wrapper_errors);
                                return (
                                    Exchange::Refused(CoreError::InvalidResponse(format!(
                                        "{label}: response body over maxResponseBytes ({} bytes)",
                                        self.max_response_bytes
                                    ))),
                                    None,
                                );
                            }
                            Err(BodyError::Cut(e)) => {
                                format!("{label}: body cut off ({})", kind_of(&e))
                            }
                        }
                    } else {
                        // 5xx or 429: the body is not read (dropping it closes the connection).
                        format!("{label}: HTTP {}", status.as_u16())
                    }
                }
                Err(e) => format!("{label}: {}", kind_of(&e)),
            };
            Metrics::inc(&self.metrics.wrapper_errors);
            if attempt >= ATTEMPTS {
                return (Exchange::Down(failure), None);
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// GET returning the body of a 2xx; maps answers to error codes.
    async fn get(&self, path: &str) -> Result<Bytes> {
        match self.send(Method::GET, path, None, None).await? {
            Outcome::Ok(b) => Ok(b),
            Outcome::NotModified => Err(CoreError::InvalidResponse(format!("GET {path}: 304"))),
            Outcome::Answer(status, _) => Err(answer_error(status, path)),
        }
    }

    /// GET of one snapshot page: no breaker (the load holds the permit).
    /// With `if_none_match` (a list's first page), `Ok(None)` is a 304; the
    /// page's `ETag` comes back with its body.
    async fn get_page(&self, path: &str, if_none_match: Option<&str>) -> Result<Option<Page>> {
        let (exchange, etag) = self
            .exchange_if(Method::GET, path, None, None, if_none_match)
            .await;
        match exchange {
            Exchange::Answered(Outcome::Ok(body)) => Ok(Some(Page { body, etag })),
            Exchange::Answered(Outcome::NotModified) => Ok(None),
            Exchange::Answered(Outcome::Answer(status, _)) => Err(answer_error(status, path)),
            Exchange::Refused(e) => Err(e),
            Exchange::Down(msg) => Err(CoreError::WrapperUnavailable(msg)),
        }
    }

    /// Loads a whole list endpoint into `sink`, following `nextCursor` pages
    /// within the load's bounds (see the module docs). No row is kept as a
    /// row: each page is parsed (borrowing its body) straight into the sink
    /// and then freed. A page under [`INLINE_PAGE_BYTES`] is parsed here; a
    /// larger one on the load's thread (`worker`), which answers the page's
    /// cursor first, so the next page downloads while the rows are parsed
    /// and built.
    async fn list<S: RowSink>(
        &self,
        path: &str,
        budget: &LoadBudget,
        if_none_match: Option<String>,
        sink: S,
        worker: &LoadThread,
    ) -> Result<Listed<S>> {
        let bad = |what: String| CoreError::InvalidResponse(format!("GET {path}: {what}"));
        let mut sink = Some(sink);
        let mut held = 0usize;
        let mut seen: HashSet<String> = HashSet::new();
        let mut next_page = Some(self.fetch_page(path, None, if_none_match));
        let mut pages = 0usize;
        let mut etag = None;
        let max_rows = self.limits.max_rows;
        while let Some(mut pending) = next_page.take() {
            pages += 1;
            let page = (&mut pending.0).await.map_err(|_| {
                CoreError::WrapperUnavailable(format!("GET {path}: page task failed"))
            })??;
            let Some(page) = page else {
                return Ok(Listed {
                    sink: None,
                    etag: None,
                });
            };
            if pages == 1 {
                etag = page.etag;
            }
            let body = page.body;
            if !budget.take(body.len()) {
                return Err(bad(format!(
                    "the load passed {} bytes ({LOAD_BYTES_FACTOR} × maxResponseBytes) over all its pages",
                    budget.max
                )));
            }
            let mut s = sink.take().expect("the sink is back after each page");
            let mut job = None;
            let mut speculative: Option<(String, PageTask)> = None;
            let head = if body.len() < INLINE_PAGE_BYTES {
                let mut head = None;
                let rows = parse_page(&body, &mut s, held, max_rows, |h| head = Some(h));
                sink = Some(s);
                rows?;
                head
            } else {
                // The cursor is most often the page's last member: guess it
                // from the tail and ask for that page now; the parsed cursor
                // decides (a wrong guess is dropped, its request aborted).
                let guess = guess_cursor(&body)
                    .filter(|c| !seen.contains(c) && pages < self.limits.max_pages);
                speculative = guess.map(|c| {
                    let task = self.fetch_page(path, Some(&c), None);
                    (c, task)
                });
                let (tx, rx) = tokio::sync::oneshot::channel();
                job = Some(worker.run(move || {
                    let r = parse_page(&body, &mut s, held, max_rows, |h| {
                        let _ = tx.send(h);
                    });
                    drop(body);
                    (s, r)
                }));
                rx.await.ok()
            };
            let head = match head {
                Some(Ok(h)) => h,
                Some(Err(what)) => return Err(bad(what)),
                None => return Err(bad("parsing the page failed".into())),
            };
            held += head.rows;
            if let Some(c) = head.next {
                if pages >= self.limits.max_pages {
                    return Err(bad(format!("more than {} pages", self.limits.max_pages)));
                }
                if seen.contains(&c) {
                    return Err(bad(format!(
                        "page {pages} repeats a nextCursor seen earlier in this load (a paging cycle)"
                    )));
                }
                next_page = Some(match speculative.take() {
                    Some((guess, task)) if guess == c => task,
                    _ => self.fetch_page(path, Some(&c), None),
                });
                seen.insert(c);
            }
            // The next page downloads while this one's rows are built.
            if let Some(job) = job {
                let Some((s, rows)) = job.await else {
                    return Err(bad("parsing the page failed".into()));
                };
                rows?;
                sink = Some(s);
            }
        }
        Ok(Listed { sink, etag })
    }

    /// Starts downloading one page in its own task.
    fn fetch_page(
        &self,
        path: &str,
        cursor: Option<&str>,
        if_none_match: Option<String>,
    ) -> PageTask {
        let me = self.clone();
        let page_path = match cursor {
            Some(c) => format!("{path}?cursor={}", encode_segment(c)),
            None => path.to_owned(),
        };
        PageTask(tokio::spawn(async move {
            me.get_page(&page_path, if_none_match.as_deref()).await
        }))
    }

    /// The circuit as `health()` reports it: the worse of the two breakers
    /// (open, then half-open, then closed).
    pub fn circuit(&self) -> Circuit {
        let (snapshot, reference) = self.circuits();
        snapshot.max(reference)
    }

    /// Both circuits: (snapshot loads, reference and credit requests).
    pub fn circuits(&self) -> (Circuit, Circuit) {
        (
            self.snapshot_breaker.circuit(),
            self.reference_breaker.circuit(),
        )
    }

    /// Loads the whole critical snapshot: the four list endpoints,
    /// concurrently, built page by page into a store (no row is kept).
    ///
    /// One call for the snapshot breaker: admitted once, at the start (then
    /// every page request goes out, even as the half-open probe), and reported
    /// once, at the end. Loads may run concurrently, each with its own budget.
    pub async fn snapshot(&self) -> Result<Built> {
        self.snapshot_if(false, Priority::Normal).await
    }

    /// [`WrapperClient::snapshot`]; with `conditional`, a list whose `ETag`
    /// from the last complete load is known is asked with `If-None-Match`,
    /// and a 304 leaves its table empty, marked in [`Built::unchanged`]
    /// (SPEC §4). `priority`: the scheduling of the load's thread, which
    /// parses and builds the large pages (background.rs).
    pub async fn snapshot_if(&self, conditional: bool, priority: Priority) -> Result<Built> {
        let Some(permit) = self.snapshot_breaker.try_acquire() else {
            self.set_failing(Lane::Snapshot, true);
            return Err(CoreError::WrapperUnavailable(
                "snapshot load: circuit open".into(),
            ));
        };
        let result = self.load(conditional, priority).await;
        if let Err(CoreError::WrapperUnavailable(_)) = &result {
            permit.failure();
            self.set_failing(Lane::Snapshot, true);
        } else {
            permit.success();
            self.set_failing(Lane::Snapshot, false);
        }
        result
    }

    /// The four lists of one snapshot, within one budget, on one load thread.
    async fn load(&self, conditional: bool, priority: Priority) -> Result<Built> {
        let budget = LoadBudget {
            used: AtomicU64::new(0),
            max: self.limits.max_load_bytes,
        };
        let tags = if conditional {
            self.etags.lock().unwrap_or_else(|p| p.into_inner()).clone()
        } else {
            Default::default()
        };
        let worker = LoadThread::new(priority);
        let [t0, t1, t2, t3] = tags.clone();
        let sink = ListBuilder::new;
        let (credits, roles, users, configs) = tokio::try_join!(
            self.list(
                List::Credits.path(),
                &budget,
                t0,
                sink(List::Credits),
                &worker
            ),
            self.list(List::Roles.path(), &budget, t1, sink(List::Roles), &worker),
            self.list(List::Users.path(), &budget, t2, sink(List::Users), &worker),
            self.list(
                List::Configs.path(),
                &budget,
                t3,
                sink(List::Configs),
                &worker
            ),
        )?;
        let unchanged = [
            credits.sink.is_none(),
            roles.sink.is_none(),
            users.sink.is_none(),
            configs.sink.is_none(),
        ];
        // Every list loaded: these tags describe what the store will hold.
        let next = [credits.etag, roles.etag, users.etag, configs.etag];
        {
            let mut held = self.etags.lock().unwrap_or_else(|p| p.into_inner());
            for (i, tag) in next.into_iter().enumerate() {
                if !unchanged[i] {
                    held[i] = tag;
                }
            }
        }
        let store = StoreBuilder::join([credits.sink, roles.sink, users.sink, configs.sink]);
        Ok(Built { store, unchanged })
    }

    /// `GET {path}` for a reference object; the body must be a JSON object and
    /// is returned as text.
    pub async fn object(&self, path: &str) -> Result<String> {
        let body = self.get(path).await?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| CoreError::InvalidResponse(format!("GET {path}: not UTF-8")))?;
        // Validates JSON and "is an object" without building a tree of values.
        let is_object = text.trim_start().starts_with('{')
            && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
        if !is_object {
            return Err(CoreError::InvalidResponse(format!(
                "GET {path}: not a JSON object"
            )));
        }
        Ok(text.to_owned())
    }

    /// `GET /api/users/profiles?ids=a,b,c` (SPEC §10 batch reads; each id
    /// percent-encoded, the caller sends at most [`MAX_BATCH_IDS`]) →
    /// `{ profiles: { [id]: object } }`, each profile as JSON text. An id left
    /// out is unknown to the Wrapper. `Ok(None)` when the Wrapper answers 404
    /// or 405: it does not have the endpoint.
    pub async fn profiles(&self, ids: &[&str]) -> Result<Option<HashMap<String, String>>> {
        let mut path = String::from(PROFILES_PATH);
        path.push_str("?ids=");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                path.push(',');
            }
            path.push_str(&encode_segment(id));
        }
        let body = match self.send(Method::GET, &path, None, None).await? {
            Outcome::Ok(b) => b,
            Outcome::Answer(StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED, _) => {
                return Ok(None)
            }
            Outcome::NotModified => {
                return Err(CoreError::InvalidResponse(format!(
                    "GET {PROFILES_PATH}: 304"
                )))
            }
            Outcome::Answer(status, _) => return Err(answer_error(status, PROFILES_PATH)),
        };
        let invalid = || {
            CoreError::InvalidResponse(format!(
                "GET {PROFILES_PATH}: expected {{ profiles: {{ [id]: object }} }}"
            ))
        };
        let answer: Profiles = parse_object(&body).map_err(|_| invalid())?;
        let mut out = HashMap::with_capacity(answer.profiles.len());
        for (id, value) in answer.profiles {
            let text = value.get();
            if first_byte(text.as_bytes()) != Some(b'{') {
                return Err(invalid());
            }
            out.insert(id, text.to_owned());
        }
        Ok(Some(out))
    }

    /// `GET /api/users/{id}/credits` → `available`.
    pub async fn user_credits(&self, user_id: &str) -> Result<f64> {
        let path = format!("/api/users/{}/credits", encode_segment(user_id));
        let body = self.get(&path).await?;
        let a: Available = parse_object(&body).map_err(|_| {
            CoreError::InvalidResponse(format!("GET {path}: expected {{ available: number }}"))
        })?;
        Ok(a.available)
    }

    /// `POST /api/users/{id}/credits/deduct` → `remaining`. Retried (bounded)
    /// on connection errors and 5xx with the same idempotency key; a 402 is
    /// `INSUFFICIENT_CREDITS` and is not retried.
    pub async fn deduct(
        &self,
        user_id: &str,
        amount: f64,
        operation_code: Option<&str>,
        idempotency_key: &str,
    ) -> Result<f64> {
        let path = format!("/api/users/{}/credits/deduct", encode_segment(user_id));
        let body = serde_json::to_vec(&DeductBody {
            amount,
            operation_code,
            idempotency_key,
        })
        .map_err(|e| CoreError::arg_range(format!("cannot encode deduction: {e}")))?;
        match self
            .send(Method::POST, &path, Some(&body), Some(idempotency_key))
            .await?
        {
            Outcome::Ok(b) => parse_object::<Remaining>(&b)
                .map(|r| r.remaining)
                .map_err(|_| {
                    CoreError::InvalidResponse(format!(
                        "POST {path}: expected {{ remaining: number }}"
                    ))
                }),
            Outcome::Answer(StatusCode::PAYMENT_REQUIRED, b) => {
                Err(CoreError::InsufficientCredits {
                    available: serde_json::from_slice::<Refusal>(&b)
                        .ok()
                        .and_then(|r| r.available),
                })
            }
            Outcome::NotModified => Err(CoreError::InvalidResponse(format!("POST {path}: 304"))),
            Outcome::Answer(status, _) => Err(answer_error(status, &path)),
        }
    }
}

/// `METHOD /path` without the query, for error messages.
fn label_of(method: &Method, path: &str) -> String {
    format!("{method} {}", path.split('?').next().unwrap_or(path))
}

/// Reads the body chunk by chunk, refusing it once it passes `limit` bytes
/// (or at once when its `Content-Length` says it will): at most `limit` bytes
/// are ever buffered.
async fn read_body(
    resp: &mut reqwest::Response,
    limit: u64,
) -> std::result::Result<Bytes, BodyError> {
    let announced = resp.content_length();
    if announced.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let first = announced.unwrap_or(0).min(FIRST_BODY_ALLOCATION) as usize;
    let mut buf = BytesMut::with_capacity(first);
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Cut)? {
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// What a page's envelope says, before its rows are built.
struct PageHead {
    /// Rows on the page.
    rows: usize,
    /// The next page's cursor (`None`: the last page, or a plain array).
    next: Option<String>,
}

/// Parses one page (a plain array of rows or `{ items, nextCursor }`),
/// borrowing `body`: tells `on_head` what its envelope says (or why it is
/// refused, with nothing built), then builds its rows into `sink`. `held`:
/// rows of the list before this page.
fn parse_page<S: RowSink>(
    body: &[u8],
    sink: &mut S,
    held: usize,
    max_rows: usize,
    on_head: impl FnOnce(std::result::Result<PageHead, String>),
) -> Result<()> {
    let parsed = match first_byte(body) {
        Some(b'[') => serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(body)
            .map_err(|e| format!("not JSON ({e})"))
            .map(|rows| (rows, None)),
        Some(b'{') => serde_json::from_slice::<Paged<'_>>(body)
            .map_err(|e| format!("wrong shape ({e})"))
            .and_then(|page| {
                let next = match &page.next_cursor {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => return Err("nextCursor is not a string".into()),
                };
                Ok((page.items, next))
            }),
        _ => Err("not a JSON array or page".into()),
    };
    let parsed = parsed.and_then(|(rows, next)| {
        if held.saturating_add(rows.len()) > max_rows {
            return Err(format!("more than {max_rows} rows"));
        }
        Ok((rows, next))
    });
    match parsed {
        Err(e) => {
            on_head(Err(e));
            Ok(())
        }
        Ok((rows, next)) => {
            on_head(Ok(PageHead {
                rows: rows.len(),
                next,
            }));
            sink.push_page(&rows)
        }
    }
}

/// The `nextCursor` a page most likely has, read from its last bytes
/// (`…,"nextCursor":"c"}`) without parsing it: a guess, used only to ask for
/// the next page early (the parsed page decides). `None` for a cursor with
/// escapes, `null`, or anything else.
fn guess_cursor(body: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"nextCursor\":";
    let tail = &body[body.len().saturating_sub(256)..];
    let at = tail.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let rest = tail[at..].strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let c = std::str::from_utf8(&rest[..end]).ok()?;
    if c.contains('\\') || c.is_empty() {
        return None;
    }
    Some(c.to_owned())
}

fn first_byte(body: &[u8]) -> Option<u8> {
    body.iter().find(|b| !b.is_ascii_whitespace()).copied()
}

/// Parses `body` as `T`, but only from a JSON object: serde's derived
/// structs would also accept an array of the fields in order.
fn parse_object<T: DeserializeOwned>(body: &[u8]) -> std::result::Result<T, String> {
    if first_byte(body) != Some(b'{') {
        return Err("not a JSON object".into());
    }
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

fn answer_error(status: StatusCode, path: &str) -> CoreError {
    match status {
        StatusCode::NOT_FOUND => CoreError::NotFound(path.to_owned()),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CoreError::WrapperAuth(status.as_u16()),
        s => CoreError::InvalidResponse(format!("{path}: unexpected HTTP {}", s.as_u16())),
    }
}

fn kind_of(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "body error"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::sync::Mutex;

    use serde_json::{json, Value};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One answer of the test server.
    struct Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        /// Send a `Content-Length` of the body (else the body ends with the connection).
        length: bool,
    }

    fn json_reply(v: Value) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: v.to_string().into_bytes(),
            length: true,
        }
    }

    /// A real HTTP/1.1 server on a free port: answers each request with
    /// `reply(path)`, then closes the connection; logs the paths.
    async fn serve(
        reply: impl Fn(&str) -> Reply + Send + Sync + 'static,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let reply = Arc::new(reply);
        let served = log.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (reply, log) = (reply.clone(), served.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                    log.lock().unwrap().push(path.clone());
                    let r = reply(&path);
                    let mut out = format!("HTTP/1.1 {} X\r\nconnection: close\r\n", r.status);
                    for (k, v) in &r.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    if r.length {
                        out.push_str(&format!("content-length: {}\r\n", r.body.len()));
                    }
                    out.push_str("\r\n");
                    let _ = sock.write_all(out.as_bytes()).await;
                    let _ = sock.write_all(&r.body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        (url, log)
    }

    fn client(url: &str, extra: Value) -> WrapperClient {
        let mut options = json!({ "tenantId": "t1", "wrapperUrl": url });
        if let (Value::Object(o), Value::Object(e)) = (&mut options, extra) {
            o.extend(e);
        }
        let config = Config::from_json(&options, &HashMap::new()).unwrap();
        WrapperClient::new(&config, Arc::new(Metrics::default())).unwrap()
    }

    /// A sink that keeps the rows as JSON values.
    impl RowSink for Vec<Value> {
        fn push_page(&mut self, rows: &[&serde_json::value::RawValue]) -> Result<()> {
            for r in rows {
                self.push(serde_json::from_str(r.get()).unwrap());
            }
            Ok(())
        }
    }

    fn thread() -> LoadThread {
        LoadThread::new(Priority::Normal)
    }

    /// `n` user rows `u{from}`.. as JSON text.
    fn users_json(from: usize, n: usize, status: &str) -> Vec<Value> {
        (from..from + n)
            .map(|i| json!({ "userId": format!("u{i}"), "status": status, "roles": ["sales", "ops"] }))
            .collect()
    }

    #[tokio::test]
    async fn large_pages_are_built_on_the_load_thread_with_the_row_rules() {
        let (url, log) = serve(|path| match path {
            "/api/users/access" => {
                json_reply(json!({ "items": users_json(0, 3000, "active"), "nextCursor": "2" }))
            }
            "/api/users/access?cursor=2" => {
                let mut items = users_json(3000, 3000, "active");
                // a repeated id: one user, the later row wins
                items.push(json!({ "userId": "u0", "status": "suspended", "roles": [] }));
                json_reply(json!({ "items": items, "nextCursor": null }))
            }
            "/api/roles" => json_reply(json!([{ "roleId": "sales", "permissions": ["a.*"] }])),
            _ => json_reply(json!([])),
        })
        .await;
        let w = client(&url, json!({}));
        let built = w.snapshot().await.unwrap();
        assert_eq!(built.store.sizes(), [0, 1, 6000, 0]);
        assert_eq!(built.store.user_access("u0").unwrap().status(), "suspended");
        assert_eq!(built.store.user_access("u5999").unwrap().roles().len(), 2);
        assert_eq!(built.unchanged, [false; 4]);
        assert_eq!(log.lock().unwrap().len(), 5);

        // a row that breaks the id rule on a large page fails the load, named
        let (url, _) = serve(|path| match path {
            "/api/users/access" => {
                let mut items = users_json(0, 3000, "active");
                items.push(json!({ "userId": "..", "status": "active", "roles": [] }));
                json_reply(json!(items))
            }
            _ => json_reply(json!([])),
        })
        .await;
        let w = client(&url, json!({}));
        match w.snapshot().await {
            Err(CoreError::InvalidResponse(m)) => {
                assert!(m.contains("row 3000") && m.contains("userId"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        // so does a large page that is not JSON
        let (url, _) = serve(|path| match path {
            "/api/users/access" => {
                let mut r = json_reply(json!(users_json(0, 3000, "active")));
                r.body.truncate(r.body.len() - 10);
                r
            }
            _ => json_reply(json!([])),
        })
        .await;
        let w = client(&url, json!({}));
        match w.snapshot().await {
            Err(CoreError::InvalidResponse(m)) => assert!(m.contains("not JSON"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_cursor_guess_reads_the_tail() {
        let g = |s: &str| guess_cursor(s.as_bytes());
        assert_eq!(
            g(r#"{"items":[],"nextCursor":"p-2"}"#).as_deref(),
            Some("p-2")
        );
        assert_eq!(g(r#"{"items":[],"nextCursor":null}"#), None);
        assert_eq!(g(r#"{"items":[],"nextCursor":"a\"b"}"#), None);
        assert_eq!(g(r#"{"nextCursor":"x","items":[]}"#).as_deref(), Some("x"));
    }

    #[tokio::test]
    async fn a_wrong_cursor_guess_is_dropped_and_the_parsed_cursor_followed() {
        // the real cursor comes first; the last row holds a decoy
        let page = |n: usize, next: &str| {
            let mut items = users_json(n * 3000, 3000, "active");
            items.push(
                json!({ "userId": format!("decoy{n}"), "status": "active", "roles": [],
                               "note": "\"nextCursor\":\"decoy\"" }),
            );
            let body = format!(
                r#"{{"nextCursor":{next},"items":{},"x":{{"nextCursor":"decoy"}}}}"#,
                Value::Array(items)
            );
            Reply {
                status: 200,
                headers: vec![("content-type", "application/json".into())],
                body: body.into_bytes(),
                length: true,
            }
        };
        let (url, log) = serve(move |path| match path {
            "/api/users/access" => page(0, r#""two""#),
            "/api/users/access?cursor=two" => page(1, "null"),
            _ => json_reply(json!([])),
        })
        .await;
        let w = client(&url, json!({}));
        let built = w.snapshot().await.unwrap();
        assert_eq!(built.store.sizes()[2], 6002, "both pages, all rows");
        let log = log.lock().unwrap();
        assert!(log.iter().any(|p| p == "/api/users/access?cursor=two"));
    }

    fn budget(max: u64) -> LoadBudget {
        LoadBudget {
            used: AtomicU64::new(0),
            max,
        }
    }

    fn invalid(r: Result<Vec<Value>>) -> String {
        match r {
            Err(CoreError::InvalidResponse(m)) => m,
            other => panic!("expected INVALID_RESPONSE, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_cursor_cycle_fails_the_list_at_once() {
        let (url, log) = serve(|path| {
            let next = match path {
                "/l" => "a",
                "/l?cursor=a" => "b",
                _ => "a",
            };
            json_reply(json!({ "items": [{}], "nextCursor": next }))
        })
        .await;
        let w = client(&url, json!({}));
        let msg = invalid(
            w.list("/l", &budget(u64::MAX), None, Vec::new(), &thread())
                .await
                .map(|l| l.sink.unwrap_or_default()),
        );
        assert!(msg.contains("paging cycle"), "{msg}");
        assert_eq!(log.lock().unwrap().len(), 3, "first page, a, b");
    }

    /// Pages that never end: cursor n leads to n + 1, two rows each.
    async fn endless() -> (String, Arc<Mutex<Vec<String>>>) {
        serve(|path| {
            let n: u64 = path
                .split("cursor=")
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            json_reply(json!({ "items": [{}, {}], "nextCursor": (n + 1).to_string() }))
        })
        .await
    }

    #[tokio::test]
    async fn rows_pages_and_bytes_of_a_load_are_bounded() {
        let (url, log) = endless().await;
        let mut w = client(&url, json!({}));
        w.limits.max_rows = 5;
        let msg = invalid(
            w.list("/l", &budget(u64::MAX), None, Vec::new(), &thread())
                .await
                .map(|l| l.sink.unwrap_or_default()),
        );
        assert!(msg.contains("more than 5 rows"), "{msg}");

        let mut w = client(&url, json!({}));
        w.limits.max_pages = 4;
        log.lock().unwrap().clear();
        let msg = invalid(
            w.list("/l", &budget(u64::MAX), None, Vec::new(), &thread())
                .await
                .map(|l| l.sink.unwrap_or_default()),
        );
        assert!(msg.contains("more than 4 pages"), "{msg}");
        assert_eq!(log.lock().unwrap().len(), 4);

        let w = client(&url, json!({}));
        let msg = invalid(
            w.list("/l", &budget(200), None, Vec::new(), &thread())
                .await
                .map(|l| l.sink.unwrap_or_default()),
        );
        assert!(msg.contains("passed 200 bytes"), "{msg}");
    }

    #[tokio::test]
    async fn the_load_budget_is_sixteen_times_max_response_bytes() {
        let w = client("http://127.0.0.1:9", json!({ "maxResponseBytes": 1000 }));
        assert_eq!(w.limits.max_load_bytes, 16_000);
        let w = client("http://127.0.0.1:9", json!({}));
        assert_eq!(w.limits.max_load_bytes, 1 << 30);
        assert_eq!(w.limits.max_rows, 10_000_000);
    }

    #[tokio::test]
    async fn a_redirect_is_invalid_and_never_followed() {
        let (target, stolen) = serve(|_| json_reply(json!({ "stolen": true }))).await;
        for status in [301u16, 302, 303, 307, 308] {
            let location = format!("{target}/elsewhere");
            let (url, log) = serve(move |_| Reply {
                status,
                headers: vec![("location", location.clone())],
                body: Vec::new(),
                length: true,
            })
            .await;
            let w = client(
                &url,
                json!({ "wrapperToken": "tok-secret", "circuitBreaker": { "failures": 1 } }),
            );
            match w.object("/api/hierarchy/x").await {
                Err(CoreError::InvalidResponse(m)) => {
                    assert!(
                        m.contains(&status.to_string()) && !m.contains("tok-secret"),
                        "{m}"
                    )
                }
                other => panic!("{status}: {other:?}"),
            }
            assert_eq!(log.lock().unwrap().len(), 1, "{status}: not retried");
            assert_eq!(w.circuit(), Circuit::Closed, "an answer, not an outage");
            assert!(!w.metrics.wrapper_failing.load(Relaxed));
        }
        assert!(stolen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn bodies_over_max_response_bytes_are_refused() {
        let (url, log) = serve(|path| match path {
            // Announced over the limit, then (almost) nothing: refused from the header.
            "/announced" => Reply {
                status: 200,
                headers: vec![("content-length", "5000".into())],
                body: b"{}".to_vec(),
                length: false,
            },
            // No length: refused as the chunks pass the limit.
            "/streamed" => Reply {
                status: 200,
                headers: vec![],
                body: format!("{{\"x\":\"{}\"}}", "y".repeat(5000)).into_bytes(),
                length: false,
            },
            // Exactly the limit: fine.
            _ => Reply {
                status: 200,
                headers: vec![],
                body: format!("{{\"x\":\"{}\"}}", "y".repeat(1000 - 8)).into_bytes(),
                length: true,
            },
        })
        .await;
        let w = client(&url, json!({ "maxResponseBytes": 1000 }));
        for path in ["/announced", "/streamed"] {
            match w.object(path).await {
                Err(CoreError::InvalidResponse(m)) => {
                    assert!(m.contains("maxResponseBytes (1000 bytes)"), "{m}")
                }
                other => panic!("{path}: {other:?}"),
            }
        }
        assert_eq!(w.object("/exact").await.unwrap().len(), 1000);
        assert_eq!(log.lock().unwrap().len(), 3, "nothing retried");
        assert_eq!(w.circuit(), Circuit::Closed);
    }

    #[tokio::test]
    async fn a_whole_snapshot_is_one_call_for_its_breaker() {
        let down = Arc::new(AtomicBool::new(true));
        let is_down = down.clone();
        let (url, log) = serve(move |_| {
            if is_down.load(SeqCst) {
                Reply {
                    status: 503,
                    headers: vec![],
                    body: Vec::new(),
                    length: true,
                }
            } else {
                json_reply(json!([]))
            }
        })
        .await;
        let w = client(
            &url,
            json!({ "circuitBreaker": { "failures": 1, "coolDownMs": 50 } }),
        );
        assert!(matches!(
            w.snapshot().await,
            Err(CoreError::WrapperUnavailable(_))
        ));
        assert_eq!(w.circuits(), (Circuit::Open, Circuit::Closed));
        assert_eq!(w.circuit(), Circuit::Open, "health shows the worse");
        assert!(w.metrics.wrapper_failing.load(Relaxed));
        let sent = log.lock().unwrap().len();
        match w.snapshot().await {
            Err(CoreError::WrapperUnavailable(m)) => assert!(m.contains("circuit open"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(log.lock().unwrap().len(), sent, "fails fast, sends nothing");
        down.store(false, SeqCst);
        // Wait out the cool-down: the breaker's state is a function of time.
        tokio::time::sleep(Duration::from_millis(80)).await;
        log.lock().unwrap().clear();
        w.snapshot().await.expect("the probe admits the whole load");
        assert_eq!(log.lock().unwrap().len(), 4, "all four lists in the probe");
        assert_eq!(w.circuits(), (Circuit::Closed, Circuit::Closed));
        assert!(!w.metrics.wrapper_failing.load(Relaxed));
    }

    #[tokio::test]
    async fn batch_profiles_encode_each_id_and_read_the_map() {
        let (url, log) = serve(|path| {
            if path.starts_with("/api/users/profiles?ids=a%2Cb,") {
                json_reply(json!({ "profiles": { "a,b": { "n": 1 }, "c/d": { "n": 2 } } }))
            } else if path.contains("bad") {
                json_reply(json!({ "profiles": { "bad": [1] } }))
            } else {
                let status = if path.contains("gone") { 405 } else { 404 };
                Reply {
                    status,
                    headers: vec![],
                    body: Vec::new(),
                    length: true,
                }
            }
        })
        .await;
        let w = client(&url, json!({}));
        let got = w.profiles(&["a,b", "c/d", "x"]).await.unwrap().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got["a,b"], r#"{"n":1}"#);
        assert_eq!(got["c/d"], r#"{"n":2}"#);
        assert_eq!(
            log.lock().unwrap()[0],
            "/api/users/profiles?ids=a%2Cb,c%2Fd,x"
        );
        assert_eq!(w.profiles(&["missing"]).await.unwrap(), None, "404");
        assert_eq!(w.profiles(&["gone"]).await.unwrap(), None, "405");
        assert!(matches!(
            w.profiles(&["bad"]).await,
            Err(CoreError::InvalidResponse(_))
        ));
    }
}
