//! An S3-compatible bucket (AWS S3, Garage, MinIO, ...), through the `object_store` crate:
//! `--blobs s3://BUCKET`, the endpoint from `--s3-endpoint` (path-style addressing, so a local
//! endpoint works), credentials and region from the standard `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` and `AWS_REGION`. Objects are named by the hex SHA-256 of their
//! bytes; a `PUT` is acknowledged by the store once the object is durable there.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use ota_proto::Sha256;

use super::{BlobError, BlobErrorKind, BlobStore, Stored};

/// A bucket.
#[derive(Debug)]
pub struct Bucket {
    store: AmazonS3,
    describe: String,
}

fn classify(e: object_store::Error) -> BlobError {
    let kind = match &e {
        object_store::Error::NotFound { .. } => BlobErrorKind::NotFound,
        // Connection refused, timed out, 5xx after retries: the store is away.
        object_store::Error::Generic { .. } => BlobErrorKind::Unreachable,
        _ => BlobErrorKind::Other,
    };
    BlobError::new(kind, e.to_string())
}

impl Bucket {
    /// The bucket `name` at `endpoint` (`None`: AWS itself), with credentials and region from
    /// the environment.
    pub fn open(name: &str, endpoint: Option<&str>) -> Result<Self, BlobError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(name)
            // A request that cannot reach the store fails in seconds (503 to the client), rather
            // than after minutes of retries.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(5),
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_timeout(Duration::from_secs(30))
                    .with_allow_http(endpoint.is_some_and(|e| e.starts_with("http://"))),
            );
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
        }
        let store = builder
            .build()
            .map_err(|e| BlobError::new(BlobErrorKind::Other, format!("bucket {name}: {e}")))?;
        let describe = match endpoint {
            Some(e) => format!("s3://{name} at {e}"),
            None => format!("s3://{name}"),
        };
        Ok(Bucket { store, describe })
    }

    fn path(digest: &Sha256) -> Path {
        Path::from(digest.to_string())
    }
}

#[async_trait::async_trait]
impl BlobStore for Bucket {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn put(&self, digest: &Sha256, bytes: Bytes) -> Result<(), BlobError> {
        self.store
            .put(&Self::path(digest), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(classify)
    }

    async fn get(&self, digest: &Sha256) -> Result<Bytes, BlobError> {
        let result = self.store.get(&Self::path(digest)).await.map_err(classify)?;
        result.bytes().await.map_err(classify)
    }

    async fn list(&self) -> Result<Vec<Stored>, BlobError> {
        let objects: Vec<_> = self.store.list(None).try_collect().await.map_err(classify)?;
        Ok(objects
            .into_iter()
            .filter_map(|o| {
                let digest = o.location.filename()?.parse().ok()?;
                let secs = o.last_modified.timestamp().max(0) as u64;
                Some(Stored {
                    digest,
                    modified: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
                })
            })
            .collect())
    }

    async fn delete(&self, digest: &Sha256) -> Result<(), BlobError> {
        match self.store.delete(&Self::path(digest)).await {
            Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn presign(
        &self,
        digest: &Sha256,
        expires: Duration,
    ) -> Result<Option<String>, BlobError> {
        let url = self
            .store
            .signed_url(http::Method::GET, &Self::path(digest), expires)
            .await
            .map_err(classify)?;
        Ok(Some(url.to_string()))
    }

    async fn ping(&self) -> Result<(), BlobError> {
        // A listing of at most one object: the bucket answers, with these credentials.
        let mut stream = self.store.list(None);
        stream.try_next().await.map(|_| ()).map_err(classify)
    }
}
