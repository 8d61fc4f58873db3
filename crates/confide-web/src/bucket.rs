//! The S3 client both kinds of bucket share: organizations' inbox backup buckets and the
//! operator's knowledge bucket. Each caller names the HTTP connector, which is where they differ.

use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::client::HttpConnector;
use object_store::{BackoffConfig, RetryConfig};

/// Where a bucket is and the key that opens it.
pub(crate) struct BucketAccess<'a> {
    pub bucket: &'a str,
    pub region: &'a str,
    /// An S3-compatible service's base URL: path-style requests, plain http only when it says
    /// http. AWS itself when `None`.
    pub endpoint: Option<&'a str>,
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
}

impl BucketAccess<'_> {
    /// The S3 client's builder, sending through `connector`, with a few retries.
    pub(crate) fn builder(&self, connector: impl HttpConnector) -> AmazonS3Builder {
        let builder = AmazonS3Builder::new()
            .with_bucket_name(self.bucket)
            .with_region(self.region)
            .with_access_key_id(self.access_key_id)
            .with_secret_access_key(self.secret_access_key)
            .with_http_connector(connector)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(60),
            });
        match self.endpoint {
            Some(endpoint) => builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false),
            None => builder,
        }
    }
}
