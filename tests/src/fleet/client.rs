//! A small HTTP/1.1 client for the ota-server APIs: pooled keep-alive connections (hyper), JSON
//! bodies, the server's JSON errors turned into readable ones.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, RANGE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ota_server::api::ErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A server's base URL and a connection pool.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    pool: Pool<HttpConnector, Full<Bytes>>,
}

/// A response: status and body.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// The body as `T` if the status is a success, else the server's error as an error.
    pub fn json<T: DeserializeOwned>(self) -> Result<T> {
        if !self.status.is_success() {
            bail!("{}", self.error());
        }
        serde_json::from_slice(&self.body)
            .with_context(|| format!("unexpected answer ({})", self.status))
    }

    /// The server's error, readable.
    pub fn error(&self) -> String {
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(e) => {
                format!("{} ({}, HTTP {})", e.error.message, e.error.code, self.status.as_u16())
            }
            Err(_) => format!("HTTP {}: {}", self.status, String::from_utf8_lossy(&self.body)),
        }
    }

    /// The server's error code, if the body is an error.
    pub fn code(&self) -> Option<String> {
        serde_json::from_slice::<ErrorBody>(&self.body).ok().map(|e| e.error.code)
    }
}

impl Client {
    /// A client for the server at `base` (`http://host:port`).
    pub fn new(base: &str) -> Result<Self> {
        if !base.starts_with("http://") {
            bail!("server URL {base:?}: expected http://HOST:PORT");
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let pool = Pool::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        Ok(Client { base: base.trim_end_matches('/').to_owned(), pool })
    }

    /// One request.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<(&str, Bytes)>,
        range_from: Option<u64>,
    ) -> Result<Reply> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header(AUTHORIZATION, format!("Bearer {token}"));
        if let Some(from) = range_from {
            req = req.header(RANGE, format!("bytes={from}-"));
        }
        let body = match body {
            Some((content_type, bytes)) => {
                req = req.header(CONTENT_TYPE, content_type);
                Full::new(bytes)
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| anyhow!("request {path}: {e}"))?;
        let response = self
            .pool
            .request(req)
            .await
            .map_err(|e| anyhow!("cannot reach the ota-server at {}: {e}", self.base))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| anyhow!("{method} {path}: reading the answer: {e}"))?
            .to_bytes();
        Ok(Reply { status, body })
    }

    /// GET.
    pub async fn get(&self, path: &str, token: &str) -> Result<Reply> {
        self.send(Method::GET, path, token, None, None).await
    }

    /// POST a JSON body.
    pub async fn post<T: Serialize>(&self, path: &str, token: &str, body: &T) -> Result<Reply> {
        let bytes = Bytes::from(serde_json::to_vec(body)?);
        self.send(Method::POST, path, token, Some(("application/json", bytes)), None).await
    }
}
