//! The OpenAI-compatible backend against small in-test servers speaking the chat-completions API:
//! request shape, tools, n, log-probs and token ids, retries, timeouts, dead servers, context
//! overflow, load balancing and the concurrency limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use policy::{
    Backoff, ChatRequest, Error, FinishReason, Message, OpenAiConfig, OpenAiPolicy, Policy,
    SamplingParams, ToolSpec,
};
use serde_json::{json, Value};

/// What the server answers to one request.
struct Reply {
    status: u16,
    body: Value,
    delay: Duration,
    retry_after: Option<&'static str>,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply {
            status: 200,
            body,
            delay: Duration::ZERO,
            retry_after: None,
        }
    }

    fn status(status: u16, body: Value) -> Reply {
        Reply {
            status,
            ..Reply::ok(body)
        }
    }

    fn slow(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Script = dyn Fn(usize, &Value) -> Reply + Send + Sync;

struct ServerState {
    script: Box<Script>,
    requests: Mutex<Vec<(Value, Option<String>)>>,
    count: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

struct Server {
    url: String,
    state: Arc<ServerState>,
}

impl Server {
    fn requests(&self) -> Vec<Value> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|(b, _)| b.clone())
            .collect()
    }

    fn count(&self) -> usize {
        self.state.count.load(Ordering::SeqCst)
    }
}

async fn chat(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let n = state.count.fetch_add(1, Ordering::SeqCst);
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    state.requests.lock().unwrap().push((body.clone(), auth));
    let reply = (state.script)(n, &body);
    tokio::time::sleep(reply.delay).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        Json(reply.body),
    )
        .into_response();
    if let Some(seconds) = reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", seconds.parse().unwrap());
    }
    response
}

async fn serve(script: impl Fn(usize, &Value) -> Reply + Send + Sync + 'static) -> Server {
    let state = Arc::new(ServerState {
        script: Box::new(script),
        requests: Mutex::new(Vec::new()),
        count: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { url, state }
}

/// A URL where nothing listens: a port that was bound, then released.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    url
}

fn config(urls: Vec<String>) -> OpenAiConfig {
    let mut config = OpenAiConfig::new(urls, "test-model");
    config.backoff = Backoff {
        base: Duration::from_millis(5),
        max: Duration::from_millis(20),
    };
    config.max_retries = 3;
    config.request_timeout = Duration::from_secs(10);
    config
}

fn request() -> ChatRequest {
    ChatRequest {
        messages: vec![Message::system("be brief"), Message::user("list files")],
        tools: vec![ToolSpec {
            name: "bash".into(),
            description: "run a command".into(),
            parameters: json!({"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}),
        }],
        sampling: SamplingParams {
            seed: Some(42),
            max_tokens: Some(64),
            ..SamplingParams::default()
        },
        token_trace: false,
    }
}

fn tool_call_reply(content: Option<&str>, arguments: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "test-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "bash", "arguments": arguments}}
            ]},
            "finish_reason": "tool_calls"
        }],
        "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}
    })
}

#[tokio::test]
async fn request_shape_and_structured_tool_calls() {
    let server = serve(|_, _| Reply::ok(tool_call_reply(None, r#"{"command": "ls"}"#))).await;
    let mut config = config(vec![server.url.clone()]);
    config.api_key = Some("sk-test".into());
    config.extra_body.insert("top_k".into(), json!(20));
    let policy = OpenAiPolicy::new(config).unwrap();
    let completions = policy.complete(&request()).await.unwrap();
    assert_eq!(completions.len(), 1);
    let completion = &completions[0];
    let calls = completion.calls.as_ref().unwrap();
    assert_eq!(calls[0].name, "bash");
    assert_eq!(calls[0].id.as_deref(), Some("call_a"));
    assert_eq!(calls[0].arguments, json!({"command": "ls"}));
    assert_eq!(completion.finish_reason, FinishReason::ToolCalls);
    assert_eq!(completion.usage.prompt_tokens, 30);
    assert_eq!(completion.usage.completion_tokens, 9);
    assert!(completion.tokens.is_none());
    assert_eq!(completion.message.tool_calls.len(), 1);

    let body = &server.requests()[0];
    assert_eq!(body["model"], "test-model");
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["function"]["name"], "bash");
    assert_eq!(body["n"], 1);
    assert_eq!(body["seed"], 42);
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["top_k"], 20);
    assert!(body.get("logprobs").is_none() && body.get("stop").is_none());
    let auth = server.state.requests.lock().unwrap()[0].1.clone();
    assert_eq!(auth.as_deref(), Some("Bearer sk-test"));
}

#[tokio::test]
async fn assistant_tool_calls_and_tool_results_go_back_in_openai_shape() {
    let server = serve(|_, _| Reply::ok(tool_call_reply(Some("ok"), "{}"))).await;
    let policy = OpenAiPolicy::new(config(vec![server.url.clone()])).unwrap();
    let first = policy.complete(&request()).await.unwrap().remove(0);
    let mut follow_up = request();
    follow_up.messages.push(first.message.clone());
    follow_up
        .messages
        .push(Message::tool("call_a", "a.py\nb.py"));
    policy.complete(&follow_up).await.unwrap();
    let body = &server.requests()[1];
    assert_eq!(
        body["messages"][2],
        json!({"role": "assistant", "content": "ok", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "bash", "arguments": "{}"}}
        ]})
    );
    assert_eq!(
        body["messages"][3],
        json!({"role": "tool", "tool_call_id": "call_a", "content": "a.py\nb.py"})
    );
}

#[tokio::test]
async fn n_samples_with_token_ids_and_logprobs() {
    let server = serve(|_, body| {
        let n = body["n"].as_u64().unwrap() as usize;
        let choices: Vec<Value> = (0..n)
            .rev()
            .map(|i| {
                let text = format!("<tool_call>{{\"name\": \"bash\", \"arguments\": {{\"command\": \"echo {i}\"}}}}</tool_call>");
                json!({
                    "index": i,
                    "message": {"role": "assistant", "content": text, "reasoning_content": "hmm"},
                    "finish_reason": "stop",
                    "logprobs": {"content": [
                        {"token": format!("token_id:{}", 100 + i), "logprob": -0.5, "top_logprobs": []},
                        {"token": "token_id:7", "logprob": -0.25, "top_logprobs": []}
                    ]},
                    "token_ids": if i == 0 { json!([100, 7]) } else { Value::Null },
                })
            })
            .collect();
        Reply::ok(json!({
            "choices": choices,
            "prompt_token_ids": [1, 2, 3],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4}
        }))
    })
    .await;
    let policy = OpenAiPolicy::new(config(vec![server.url.clone()])).unwrap();
    let mut request = request();
    request.sampling.n = 2;
    request.token_trace = true;
    let completions = policy.complete(&request).await.unwrap();
    assert_eq!(completions.len(), 2);
    for (i, completion) in completions.iter().enumerate() {
        let calls = completion.calls.as_ref().unwrap();
        assert_eq!(calls[0].arguments, json!({"command": format!("echo {i}")}));
        assert_eq!(calls[0].id, None);
        assert_eq!(completion.message.reasoning_content.as_deref(), Some("hmm"));
        let tokens = completion.tokens.as_ref().expect("token trace");
        assert_eq!(tokens.prompt_token_ids, vec![1, 2, 3]);
        assert_eq!(tokens.completion_token_ids, vec![100 + i as u32, 7]);
        assert_eq!(tokens.logprobs, vec![-0.5, -0.25]);
        assert_eq!(completion.usage.completion_tokens, 2);
    }
    let body = &server.requests()[0];
    assert_eq!(body["n"], 2);
    assert_eq!(body["logprobs"], true);
    assert_eq!(body["return_token_ids"], true);
    assert_eq!(body["return_tokens_as_token_ids"], true);
}

#[tokio::test]
async fn server_error_then_success_is_retried() {
    let server = serve(|n, _| match n {
        0 => Reply::status(500, json!({"error": "overloaded"})),
        1 => Reply {
            retry_after: Some("0"),
            ..Reply::status(429, json!({"error": "slow down"}))
        },
        _ => Reply::ok(tool_call_reply(None, "{}")),
    })
    .await;
    let policy = OpenAiPolicy::new(config(vec![server.url.clone()])).unwrap();
    let completions = policy.complete(&request()).await.unwrap();
    assert_eq!(completions.len(), 1);
    assert_eq!(server.count(), 3);
}

/// A server's `Retry-After` is the server's to choose; absurd values (`1e20` seconds overflowed
/// a `Duration`) are clamped to the backoff's maximum or ignored, and the request still succeeds.
#[tokio::test]
async fn absurd_retry_after_values_neither_panic_nor_stall() {
    const HEADERS: [&str; 5] = ["1e20", "18446744073709551616", "-1", "NaN", "inf"];
    let server = serve(|n, _| match HEADERS.get(n) {
        Some(&header) => Reply {
            retry_after: Some(header),
            ..Reply::status(429, json!({"error": "slow down"}))
        },
        None => Reply::ok(tool_call_reply(None, "{}")),
    })
    .await;
    let mut config = config(vec![server.url.clone()]);
    config.max_retries = HEADERS.len() as u32;
    let policy = OpenAiPolicy::new(config).unwrap();
    let started = Instant::now();
    let completions = policy.complete(&request()).await.unwrap();
    assert_eq!(completions.len(), 1);
    assert_eq!(server.count(), HEADERS.len() + 1);
    // Five waits of at most the backoff's 20 ms maximum each, with a wide margin.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn persistent_server_errors_exhaust_the_retries() {
    let server = serve(|_, _| Reply::status(503, json!({"error": "down"}))).await;
    let policy = OpenAiPolicy::new(config(vec![server.url.clone()])).unwrap();
    let error = policy.complete(&request()).await.unwrap_err();
    assert!(
        matches!(&error, Error::RetriesExhausted { attempts: 4, last } if matches!(**last, Error::Http { status: 503, .. })),
        "{error}"
    );
    assert_eq!(server.count(), 4);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_context_overflow_is_recognised() {
    let server = serve(|n, _| match n {
        0 => Reply::status(400, json!({"error": {"message": "unknown field `foo`"}})),
        _ => Reply::status(400, json!({"object": "error", "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.", "code": 400})),
    })
    .await;
    let policy = OpenAiPolicy::new(config(vec![server.url.clone()])).unwrap();
    let error = policy.complete(&request()).await.unwrap_err();
    assert!(matches!(error, Error::Http { status: 400, .. }), "{error}");
    assert!(!error.is_context_length());
    let error = policy.complete(&request()).await.unwrap_err();
    assert!(error.is_context_length(), "{error}");
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn slow_responses_time_out() {
    let server =
        serve(|_, _| Reply::ok(tool_call_reply(None, "{}")).slow(Duration::from_secs(5))).await;
    let mut config = config(vec![server.url.clone()]);
    config.request_timeout = Duration::from_millis(200);
    let policy = OpenAiPolicy::new(config).unwrap();
    let start = Instant::now();
    let error = policy.complete(&request()).await.unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.count(), 1, "timeouts are not retried");
}

#[tokio::test]
async fn dead_server_is_a_transport_error_after_retries() {
    let policy = OpenAiPolicy::new(config(vec![dead_url().await])).unwrap();
    let error = policy.complete(&request()).await.unwrap_err();
    match &error {
        Error::RetriesExhausted { attempts, last } => {
            assert_eq!(*attempts, 4);
            assert!(matches!(**last, Error::Transport { .. }), "{last}");
        }
        other => panic!("expected exhausted retries, got {other}"),
    }
}

#[tokio::test]
async fn a_dead_endpoint_is_retried_on_a_live_one() {
    let server = serve(|_, _| Reply::ok(tool_call_reply(None, "{}"))).await;
    let mut config = config(vec![dead_url().await, server.url.clone()]);
    config.max_retries = 1;
    let policy = OpenAiPolicy::new(config).unwrap();
    for _ in 0..6 {
        policy.complete(&request()).await.unwrap();
    }
    assert_eq!(server.count(), 6);
}

#[tokio::test]
async fn load_is_balanced_by_outstanding_requests() {
    let slow =
        |_, _: &Value| Reply::ok(tool_call_reply(None, "{}")).slow(Duration::from_millis(300));
    let (a, b) = (serve(slow).await, serve(slow).await);
    let policy = Arc::new(OpenAiPolicy::new(config(vec![a.url.clone(), b.url.clone()])).unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let policy = policy.clone();
            tokio::spawn(async move { policy.complete(&request()).await.map(|c| c.len()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(policy.outstanding(), vec![4, 4]);
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 1);
    }
    assert_eq!((a.count(), b.count()), (4, 4));
    assert_eq!(policy.outstanding(), vec![0, 0]);
}

#[tokio::test]
async fn concurrency_is_limited() {
    let server =
        serve(|_, _| Reply::ok(tool_call_reply(None, "{}")).slow(Duration::from_millis(50))).await;
    let mut config = config(vec![server.url.clone()]);
    config.max_concurrency = 2;
    let policy = Arc::new(OpenAiPolicy::new(config).unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let policy = policy.clone();
            tokio::spawn(async move { policy.complete(&request()).await.is_ok() })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap());
    }
    assert_eq!(server.count(), 8);
    assert_eq!(server.state.max_in_flight.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn malformed_responses_and_configs_are_errors() {
    let server = serve(|_, _| Reply::ok(json!({"not": "a completion"}))).await;
    let policy = OpenAiPolicy::new(config(vec![server.url.clone()])).unwrap();
    let error = policy.complete(&request()).await.unwrap_err();
    assert!(matches!(error, Error::BadResponse { .. }), "{error}");

    for bad in [
        OpenAiConfig::new(vec![], "m"),
        OpenAiConfig::new(vec!["http://x/v1".into()], ""),
        OpenAiConfig::new(vec!["ftp://x/v1".into()], "m"),
        OpenAiConfig::new(vec!["not a url".into()], "m"),
    ] {
        assert!(matches!(OpenAiPolicy::new(bad), Err(Error::Config { .. })));
    }
}
