//! What can go wrong talking to the server, each case named.

use crate::ErrorBody;

/// An error the ota-server answered with (a 4xx or 5xx status and an [`ErrorBody`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code}, HTTP {status})")]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The server's stable error code (`not_found`, `gate_closed`, ...).
    pub code: String,
    /// The server's explanation.
    pub message: String,
}

/// A failed call.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The server said no.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// No connection could be made.
    #[error("cannot reach the ota-server at {base}: {reason}")]
    Unreachable {
        /// The server.
        base: String,
        /// Why, as the system said it.
        reason: String,
    },
    /// The connection broke during the exchange.
    #[error("the exchange with the ota-server at {base} failed: {reason}")]
    Broken {
        /// The server.
        base: String,
        /// What broke.
        reason: String,
    },
    /// No (whole) answer in time.
    #[error("no answer from the ota-server at {base} to {what} within {secs} s")]
    Timeout {
        /// The server.
        base: String,
        /// The request.
        what: String,
        /// The time allowed.
        secs: u64,
    },
    /// An error status without the server's error body (a proxy's page, say).
    #[error("the ota-server answered HTTP {status} to {what}{excerpt}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The request.
        what: String,
        /// `: ` and the start of the body, if there was one.
        excerpt: String,
    },
    /// A success status whose body is not what the route answers.
    #[error("unexpected answer from the ota-server to {what}: {reason}")]
    Decode {
        /// The request.
        what: String,
        /// What did not parse.
        reason: String,
    },
    /// A setting is unusable (the URL, the token).
    #[error("{0}")]
    Setting(String),
}

impl Error {
    /// The server's error code, if it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api(e) => Some(&e.code),
            _ => None,
        }
    }

    /// The HTTP status, if an answer came.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api(e) => Some(e.status),
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: the server (or what is in front of it) was
    /// down, overloaded or restarting. Devices back off and retry on these.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Broken { .. } | Error::Timeout { .. } => true,
            _ => matches!(self.status(), Some(502..=504)),
        }
    }

    pub(super) fn encode(path: &str, e: serde_json::Error) -> Error {
        Error::Setting(format!("cannot encode the request to {path}: {e}"))
    }

    /// The error for a 4xx/5xx answer: the server's [`ErrorBody`] as an [`ApiError`], or, for
    /// any other body, the status with the start of the body.
    pub fn from_answer(method: &str, path: &str, status: u16, body: &[u8]) -> Error {
        if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
            return ApiError { status, code: error.code, message: error.message }.into();
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let excerpt: String = text.chars().take(200).collect();
        let more = if excerpt.len() < text.len() { "..." } else { "" };
        let excerpt = if excerpt.is_empty() { String::new() } else { format!(": {excerpt}{more}") };
        Error::Status { status, what: format!("{method} {path}"), excerpt }
    }

    pub(super) fn transport(base: &str, e: &hyper_util::client::legacy::Error) -> Error {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            reason = s.to_string();
            source = s.source();
        }
        if e.is_connect() {
            Error::Unreachable { base: base.to_owned(), reason }
        } else {
            Error::Broken { base: base.to_owned(), reason }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_read_as_message_code_status() {
        let body = br#"{"error":{"code":"gate_closed","message":"image not confirmed in test"}}"#;
        let err = Error::from_answer("POST", "/api/v1/environments/prod/releases", 409, body);
        assert_eq!(err.to_string(), "image not confirmed in test (gate_closed, HTTP 409)");
        assert_eq!(err.code(), Some("gate_closed"));
        assert!(!err.is_transient());

        let err = Error::from_answer("GET", "/api/v1/images", 502, b"<html>Bad gateway</html>\n");
        assert_eq!(
            err.to_string(),
            "the ota-server answered HTTP 502 to GET /api/v1/images: <html>Bad gateway</html>"
        );
        assert!(err.is_transient());
        let err = Error::from_answer("GET", "/api/v1/nope", 404, b"");
        assert_eq!(err.to_string(), "the ota-server answered HTTP 404 to GET /api/v1/nope");
        let long = "x".repeat(500);
        let err = Error::from_answer("GET", "/api/v1/images", 500, long.as_bytes()).to_string();
        assert!(err.ends_with("...") && err.len() < 300, "{err}");
    }
}
