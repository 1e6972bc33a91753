//! Errors as the API answers them: a status and a one-line message.

use api::control::ErrorBody;
use vt_http::Response;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
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
        Response::json(self.status, serde_json::to_vec(&body).unwrap_or_default())
    }
}
