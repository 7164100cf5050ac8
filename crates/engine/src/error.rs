//! The engine crate's error type, and the OpenAI-style errors answered to requests.

/// What can stop the engine from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model: {0}")]
    Model(#[from] model::Error),
    #[error(transparent)]
    Policy(#[from] policy::Error),
    #[error("the model engine thread could not start: {0}")]
    Engine(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error answered to one request; the server carries on.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status it is answered with.
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
            param: None,
        }
    }

    pub fn bad_param(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param),
            ..Self::bad_request(message)
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: 404,
            kind: "not_found_error",
            message: message.into(),
            param: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: 500,
            kind: "internal_server_error",
            message: message.into(),
            param: None,
        }
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.status,
            }
        })
    }
}
