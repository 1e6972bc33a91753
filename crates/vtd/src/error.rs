//! Errors as the API answers them: a status and a one-line message.

use api::control::ErrorBody;
use vt_http::Response;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// The methods the path takes, sent as `Allow` with a 405.
    pub allow: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            allow: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }

    pub fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        Self::new(500, format!("{what}: {e}"))
    }

    pub fn response(&self) -> Response {
        let body = ErrorBody {
            error: self.message.clone(),
        };
        let mut r = Response::json(self.status, serde_json::to_vec(&body).unwrap_or_default());
        if let Some(allow) = &self.allow {
            r.headers.push(("Allow".into(), allow.clone()));
        }
        r
    }
}
