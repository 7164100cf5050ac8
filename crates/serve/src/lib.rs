//! `atomskill serve`: an OpenAI-compatible HTTP server (`/v1/chat/completions`, `/v1/models`,
//! `/health`) over the in-process [`engine`]. This crate is HTTP only: routes, status codes and
//! server-sent events; what a request means is the engine's. Every bad request gets an
//! OpenAI-style error body with a 4xx status; nothing a client sends stops the server.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use engine::{Answer, ApiError, EngineState, StreamEvent};

pub use engine::ServeOptions;

/// What can stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Server(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The HTTP routes.
pub fn router(state: Arc<EngineState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route("/health", get(|| async { StatusCode::OK }))
        .fallback(|| async { error_response(ApiError::not_found("no such route")) })
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(state)
}

/// Serves on `addr` until the process ends; calls `on_ready` with the bound address.
pub async fn serve(
    options: &ServeOptions,
    addr: SocketAddr,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let state = EngineState::load(options)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind {
            addr: addr.to_string(),
            source,
        })?;
    on_ready(listener.local_addr()?);
    axum::serve(listener, router(state)).await?;
    Ok(())
}

fn error_response(error: ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(error.body())).into_response()
}

async fn list_models(State(state): State<Arc<EngineState>>) -> axum::Json<serde_json::Value> {
    axum::Json(state.models_json())
}

async fn chat_completions(State(state): State<Arc<EngineState>>, body: Bytes) -> Response {
    match engine::answer(&state, &body).await {
        Ok(Answer::Full(json)) => axum::Json(json).into_response(),
        Ok(Answer::Stream(mut events)) => {
            let stream = futures::stream::poll_fn(move |cx| {
                events.poll_recv(cx).map(|item| {
                    item.map(|event| {
                        Ok::<Bytes, std::convert::Infallible>(match event {
                            StreamEvent::Chunk(value) => Bytes::from(format!("data: {value}\n\n")),
                            StreamEvent::Done => Bytes::from_static(b"data: [DONE]\n\n"),
                        })
                    })
                })
            });
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/event-stream")
                .header(header::CACHE_CONTROL, "no-cache")
                .body(Body::from_stream(stream))
                .unwrap_or_else(|_| {
                    error_response(ApiError::internal("cannot build the stream response"))
                })
        }
        Err(error) => error_response(error),
    }
}
