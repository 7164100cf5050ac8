//! A policy served by one or more OpenAI-compatible chat-completions servers (vLLM, SGLang,
//! OpenAI itself).
//!
//! Each request takes a slot of a concurrency limit, goes to the endpoint with the fewest
//! requests outstanding, and is retried with seeded exponential backoff on transport errors,
//! HTTP 429 and 5xx (on another endpoint where there is one). It never reads the environment:
//! the API key comes in [`OpenAiConfig`].

pub mod wire;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::chat::{ChatRequest, Completion};
use crate::error::{Error, Result};
use crate::seed::{derive_seed, Backoff, SplitMix64};
use crate::Policy;

/// How to reach the servers and how hard to try.
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// API base URLs, each ending before `/chat/completions` (e.g. `http://host:8000/v1`).
    pub endpoints: Vec<String>,
    pub model: String,
    pub api_key: Option<String>,
    /// Wall-clock limit of one attempt, response body included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Requests in flight at once, over all endpoints.
    pub max_concurrency: usize,
    /// Attempts after the first.
    pub max_retries: u32,
    pub backoff: Backoff,
    /// Seeds the retry jitter (with the request's sampling seed).
    pub seed: u64,
    /// Fields merged into every request body (e.g. `top_k`, `chat_template_kwargs`).
    pub extra_body: Map<String, Value>,
}

impl OpenAiConfig {
    pub fn new(endpoints: Vec<String>, model: impl Into<String>) -> OpenAiConfig {
        OpenAiConfig {
            endpoints,
            model: model.into(),
            api_key: None,
            request_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            max_concurrency: 256,
            max_retries: 5,
            backoff: Backoff {
                base: Duration::from_millis(500),
                max: Duration::from_secs(30),
            },
            seed: 0,
            extra_body: Map::new(),
        }
    }
}

struct Endpoint {
    base: String,
    url: String,
    outstanding: AtomicUsize,
}

/// Counts a request as outstanding on its endpoint until dropped.
struct Outstanding<'a>(&'a AtomicUsize);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct OpenAiPolicy {
    config: OpenAiConfig,
    client: reqwest::Client,
    endpoints: Vec<Endpoint>,
    slots: Semaphore,
    /// Rotates the starting point of the endpoint search so ties are spread evenly.
    next_endpoint: AtomicUsize,
    requests: AtomicU64,
}

impl OpenAiPolicy {
    pub fn new(config: OpenAiConfig) -> Result<OpenAiPolicy> {
        if config.endpoints.is_empty() {
            return Err(Error::Config {
                message: "no endpoint given".into(),
            });
        }
        if config.model.is_empty() {
            return Err(Error::Config {
                message: "no model name given (pass --model NAME)".into(),
            });
        }
        if config.max_concurrency == 0 {
            return Err(Error::Config {
                message: "max_concurrency must be at least 1".into(),
            });
        }
        let mut endpoints = Vec::new();
        for base in &config.endpoints {
            let base = base.trim_end_matches('/').to_string();
            let parsed = reqwest::Url::parse(&base).map_err(|e| Error::Config {
                message: format!("endpoint `{base}` is not a URL: {e}"),
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(Error::Config {
                    message: format!("endpoint `{base}` must be http:// or https://"),
                });
            }
            endpoints.push(Endpoint {
                url: format!("{base}/chat/completions"),
                base,
                outstanding: AtomicUsize::new(0),
            });
        }
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.max_concurrency)
            .build()
            .map_err(|e| Error::Config {
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(OpenAiPolicy {
            slots: Semaphore::new(config.max_concurrency),
            config,
            client,
            endpoints,
            next_endpoint: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
        })
    }

    /// Requests outstanding per endpoint, in configuration order.
    pub fn outstanding(&self) -> Vec<usize> {
        self.endpoints
            .iter()
            .map(|e| e.outstanding.load(Ordering::Relaxed))
            .collect()
    }

    /// The endpoint with the fewest outstanding requests, avoiding `avoid` if there is another.
    fn pick(&self, avoid: Option<usize>) -> usize {
        let n = self.endpoints.len();
        let start = self.next_endpoint.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| n == 1 || Some(i) != avoid)
            .min_by_key(|&i| self.endpoints[i].outstanding.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    async fn attempt(&self, endpoint: &Endpoint, body: &Value, n: u32) -> Result<Vec<Completion>> {
        let _slot = self.slots.acquire().await.map_err(|_| Error::Config {
            message: "the request limiter was closed".into(),
        })?;
        endpoint.outstanding.fetch_add(1, Ordering::Relaxed);
        let _outstanding = Outstanding(&endpoint.outstanding);
        let timeout = self.config.request_timeout;
        let mut builder = self.client.post(&endpoint.url).json(body).timeout(timeout);
        if let Some(key) = &self.config.api_key {
            builder = builder.bearer_auth(key);
        }
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                Error::Timeout {
                    endpoint: endpoint.base.clone(),
                    timeout,
                }
            } else {
                Error::Transport {
                    endpoint: endpoint.base.clone(),
                    message: error_chain(&e),
                }
            }
        };
        let response = builder.send().await.map_err(transport)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after_delay);
        let bytes = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let body: String = text.chars().take(2000).collect();
            if status.as_u16() == 400 && wire::is_context_length_message(&body) {
                return Err(Error::ContextLength { message: body });
            }
            return Err(Error::Http {
                endpoint: endpoint.base.clone(),
                status: status.as_u16(),
                body,
                retry_after,
            });
        }
        wire::parse_response(&bytes, n).map_err(|message| Error::BadResponse {
            endpoint: endpoint.base.clone(),
            message,
        })
    }
}

/// The longest wait a `Retry-After` header is taken to ask for; the backoff caps it further.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The wait a `Retry-After` header in seconds asks for, at most [`MAX_RETRY_AFTER`]; `None` for
/// a value that is not a non-negative number of seconds (an HTTP date, `-1`, `NaN`). The header
/// comes from the server, so no value of it may panic (`1e20` seconds overflows a `Duration`).
fn retry_after_delay(value: &str) -> Option<Duration> {
    let seconds = value.trim().parse::<f64>().ok()?;
    if seconds.is_nan() || seconds < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(seconds).map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)))
}

/// An error and its sources on one line (reqwest's own message hides the cause).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[async_trait::async_trait]
impl Policy for OpenAiPolicy {
    fn describe(&self) -> String {
        format!(
            "openai:{} model {}",
            self.config.endpoints.join(","),
            self.config.model
        )
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Vec<Completion>> {
        let body = wire::request_body(&self.config.model, request, &self.config.extra_body);
        let serial = self.requests.fetch_add(1, Ordering::Relaxed);
        let mut rng = SplitMix64::new(derive_seed(
            self.config.seed,
            &[request.sampling.seed.unwrap_or(serial)],
        ));
        let mut avoid = None;
        let mut attempt = 0;
        loop {
            let index = self.pick(avoid);
            let endpoint = &self.endpoints[index];
            match self.attempt(endpoint, &body, request.sampling.n).await {
                Ok(completions) => return Ok(completions),
                Err(error) if error.is_retryable() && attempt < self.config.max_retries => {
                    let retry_after = match &error {
                        Error::Http { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    let delay = self.config.backoff.delay(attempt, retry_after, &mut rng);
                    tracing::warn!(%error, attempt, ?delay, "policy request failed; retrying");
                    tokio::time::sleep(delay).await;
                    avoid = Some(index);
                    attempt += 1;
                }
                Err(error) if attempt > 0 && error.is_retryable() => {
                    return Err(Error::RetriesExhausted {
                        attempts: attempt + 1,
                        last: Box::new(error),
                    })
                }
                Err(error) => return Err(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: &str, expected: Option<Duration>) {
        assert_eq!(retry_after_delay(header), expected, "Retry-After: {header}");
    }

    #[test]
    fn retry_after_is_clamped_or_ignored_never_a_panic() {
        check("0", Some(Duration::ZERO));
        check(" 2 ", Some(Duration::from_secs(2)));
        check("1.5", Some(Duration::from_millis(1500)));
        check("86400", Some(MAX_RETRY_AFTER));
        check("86401", Some(MAX_RETRY_AFTER));
        check("1e20", Some(MAX_RETRY_AFTER));
        check("18446744073709551616", Some(MAX_RETRY_AFTER));
        check("99999999999999999999999999999", Some(MAX_RETRY_AFTER));
        check("inf", Some(MAX_RETRY_AFTER));
        check("-1", None);
        check("-0.001", None);
        check("-inf", None);
        check("NaN", None);
        check("", None);
        check("Wed, 21 Oct 2015 07:28:00 GMT", None);
    }
}
