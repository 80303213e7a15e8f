//! The Wrapper HTTP client (SPEC §4): snapshot lists with cursor paging,
//! reference objects, credit balance and idempotent deductions.
//!
//! Every request carries `X-Tenant-Id` and, when configured, the bearer token
//! (marked sensitive so it never appears in debug output). Ids always travel as
//! one percent-encoded path segment. Reads are retried on connection errors,
//! timeouts, 429 and 5xx, with jittered backoff and a bounded number of
//! attempts; a deduction is retried only with its own idempotency key. Error
//! messages name the method and path template, never the token.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::backoff::Backoff;
use crate::breaker::{Breaker, Circuit};
use crate::config::Config;
use crate::error::{CoreError, Result};
use crate::ids::{check_path_id, encode_segment};
use crate::metrics::Metrics;
use crate::model::{ConfigRow, CreditRow, RoleRow, Snapshot, UserRow};

/// Attempts per request (first try included).
const ATTEMPTS: u32 = 3;
/// Most pages followed for one list before the answer is called invalid.
const MAX_PAGES: usize = 1_000_000;

/// A Wrapper client bound to one tenant. Cheap to clone; safe to share.
#[derive(Clone)]
pub struct WrapperClient {
    /// Pooled HTTP client with the default headers.
    http: reqwest::Client,
    /// Base URL without trailing slash.
    base: String,
    /// Shared counters (requests, errors, `wrapper_failing`).
    metrics: Arc<Metrics>,
    /// Base delay of the retry schedule.
    retry_base: Duration,
    /// Fails calls fast while the Wrapper is down.
    breaker: Arc<Breaker>,
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
    Ok(bytes::Bytes),
    /// A status that is an answer (404, 401/403, 402, other 4xx) with its body.
    Answer(StatusCode, bytes::Bytes),
}

impl WrapperClient {
    /// Builds the client from the configuration.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let tenant = HeaderValue::from_str(&config.tenant_id)
            .map_err(|_| CoreError::option_range("tenantId", "a valid header value"))?;
        headers.insert("x-tenant-id", tenant);
        if let Some(token) = &config.wrapper_token {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| CoreError::option_range("wrapperToken", "a valid header value"))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| CoreError::WrapperUnavailable(format!("cannot build HTTP client: {e}")))?;
        Ok(WrapperClient {
            http,
            base: config.wrapper_url.clone(),
            metrics,
            retry_base: Duration::from_millis(100),
            breaker: Arc::new(Breaker::new(
                config.breaker_failures,
                config.breaker_cool_down,
            )),
        })
    }

    /// Sends one request with retries. `label` names it in errors.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        idempotency_key: Option<&str>,
    ) -> Result<Outcome> {
        let label = format!("{method} {}", path.split('?').next().unwrap_or(path));
        if !self.breaker.admit() {
            self.metrics.wrapper_failing.store(true, Relaxed);
            return Err(CoreError::WrapperUnavailable(format!(
                "{label}: circuit open"
            )));
        }
        let url = format!("{}{}", self.base, path);
        let mut backoff = Backoff::new(self.retry_base, self.retry_base * 8);
        let mut attempt = 0;
        loop {
            attempt += 1;
            Metrics::inc(&self.metrics.wrapper_requests);
            let mut req = self.http.request(method.clone(), &url);
            if let Some(b) = body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_vec());
            }
            if let Some(k) = idempotency_key {
                req = req.header("idempotency-key", k);
            }
            let failure = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    match resp.bytes().await {
                        Ok(bytes) if status.is_success() => {
                            self.breaker.success();
                            self.metrics.wrapper_failing.store(false, Relaxed);
                            return Ok(Outcome::Ok(bytes));
                        }
                        Ok(bytes)
                            if status.is_client_error()
                                && status != StatusCode::TOO_MANY_REQUESTS =>
                        {
                            // An answer, not an outage: the Wrapper is up.
                            self.breaker.success();
                            self.metrics.wrapper_failing.store(false, Relaxed);
                            Metrics::inc(&self.metrics.wrapper_errors);
                            return Ok(Outcome::Answer(status, bytes));
                        }
                        Ok(_) => format!("{label}: HTTP {}", status.as_u16()),
                        Err(e) => format!("{label}: body cut off ({})", kind_of(&e)),
                    }
                }
                Err(e) => format!("{label}: {}", kind_of(&e)),
            };
            Metrics::inc(&self.metrics.wrapper_errors);
            if attempt >= ATTEMPTS {
                self.breaker.failure();
                self.metrics.wrapper_failing.store(true, Relaxed);
                return Err(CoreError::WrapperUnavailable(failure));
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// GET returning the body of a 2xx; maps answers to error codes.
    async fn get(&self, path: &str) -> Result<bytes::Bytes> {
        match self.send(Method::GET, path, None, None).await? {
            Outcome::Ok(b) => Ok(b),
            Outcome::Answer(status, _) => Err(answer_error(status, path)),
        }
    }

    /// Loads a whole list endpoint, following `nextCursor` pages. The next
    /// page is requested as soon as the current one's cursor is known, so its
    /// download overlaps the parsing of the current page's rows.
    pub async fn list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>> {
        let mut out: Vec<T> = Vec::new();
        let mut seen_cursor: Option<String> = None;
        let mut next_body = Some(self.fetch_page(path, None));
        for _ in 0..MAX_PAGES {
            let Some(pending) = next_body.take() else {
                return Ok(out);
            };
            let body = pending.await.map_err(|_| {
                CoreError::WrapperUnavailable(format!("GET {path}: page task failed"))
            })??;
            let bad = |what: String| CoreError::InvalidResponse(format!("GET {path}: {what}"));
            match first_byte(&body) {
                Some(b'[') => {
                    let rows: Vec<&serde_json::value::RawValue> = serde_json::from_slice(&body)
                        .map_err(|e| bad(format!("not JSON ({e})")))?;
                    push_rows(&mut out, &rows).map_err(bad)?;
                    return Ok(out);
                }
                Some(b'{') => {
                    let page: Paged<'_> = serde_json::from_slice(&body)
                        .map_err(|e| bad(format!("wrong shape ({e})")))?;
                    let next = match &page.next_cursor {
                        serde_json::Value::Null => None,
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        _ => return Err(bad("nextCursor is not a string".into())),
                    };
                    if let Some(c) = &next {
                        if seen_cursor.as_deref() == Some(c.as_str()) {
                            return Err(bad("nextCursor repeats".into()));
                        }
                        next_body = Some(self.fetch_page(path, Some(c.clone())));
                        seen_cursor = Some(c.clone());
                    }
                    push_rows(&mut out, &page.items).map_err(bad)?;
                }
                _ => return Err(bad("not a JSON array or page".into())),
            }
        }
        Err(CoreError::InvalidResponse(format!(
            "GET {path}: too many pages"
        )))
    }

    /// Starts downloading one page in its own task.
    fn fetch_page(
        &self,
        path: &str,
        cursor: Option<String>,
    ) -> tokio::task::JoinHandle<Result<bytes::Bytes>> {
        let me = self.clone();
        let page_path = match cursor {
            Some(c) => format!("{path}?cursor={}", encode_segment(&c)),
            None => path.to_owned(),
        };
        tokio::spawn(async move { me.get(&page_path).await })
    }

    /// The circuit breaker's state.
    pub fn circuit(&self) -> Circuit {
        self.breaker.circuit()
    }

    /// Loads the whole critical snapshot: the four list endpoints, concurrently.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let (credits, roles, users, configs) = tokio::try_join!(
            self.list::<CreditRow>("/api/credits/configs"),
            self.list::<RoleRow>("/api/roles"),
            self.list::<UserRow>("/api/users/access"),
            self.list::<ConfigRow>("/api/configs/active"),
        )?;
        if let Some(bad) = credits
            .iter()
            .find(|c| !c.credit_cost.is_finite() || c.credit_cost < 0.0)
        {
            return Err(CoreError::InvalidResponse(format!(
                "GET /api/credits/configs: creditCost of {:?} is not a finite, non-negative number",
                bad.operation_code
            )));
        }
        Ok(Snapshot {
            credits,
            roles,
            users,
            configs,
        })
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

    /// `GET /api/users/{id}/credits` → `available`.
    pub async fn user_credits(&self, user_id: &str) -> Result<f64> {
        check_path_id("userId", user_id)?;
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
        check_path_id("userId", user_id)?;
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
            Outcome::Answer(status, _) => Err(answer_error(status, &path)),
        }
    }
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

/// Parses each row (which must be a JSON object) and appends it to `out`.
fn push_rows<T: DeserializeOwned>(
    out: &mut Vec<T>,
    rows: &[&serde_json::value::RawValue],
) -> std::result::Result<(), String> {
    out.reserve(rows.len());
    for (i, raw) in rows.iter().enumerate() {
        let row = parse_object(raw.get().as_bytes()).map_err(|e| format!("row {i}: {e}"))?;
        out.push(row);
    }
    Ok(())
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
