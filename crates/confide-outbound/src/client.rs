//! The one HTTP client for every request the platform sends out: webhook posts that never follow
//! redirects, and fetches that follow them with every hop checked again.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, StatusCode};
use url::Url;

use crate::error::OutboundError;
use crate::policy::Allowlist;
use crate::resolve::{CheckedResolver, DnsConfig};
use crate::target::{TargetHost, check_literal, parse_url};

/// Settings of an [`OutboundClient`].
#[derive(Clone, Debug)]
pub struct OutboundConfig {
    /// Non-public targets the operator allows (on-premises receivers).
    pub allow: Allowlist,
    pub dns: DnsConfig,
    /// For name resolution and for the TCP and TLS handshakes.
    pub connect_timeout: Duration,
    /// For a whole request, from resolution to the last byte of the body.
    pub timeout: Duration,
    /// The largest response body a webhook post reads.
    pub max_response_bytes: u64,
    pub user_agent: String,
    /// PEM certificates trusted besides the system's roots: an on-premises receiver's internal CA.
    pub extra_root_certificates_pem: Option<Vec<u8>>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            allow: Allowlist::default(),
            dns: DnsConfig::System,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_response_bytes: 1024 * 1024,
            user_agent: concat!("Confide/", env!("CARGO_PKG_VERSION")).to_owned(),
            extra_root_certificates_pem: None,
        }
    }
}

/// Limits of one fetch (a URL import).
#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub max_bytes: u64,
    /// Redirects followed, each to a target checked like the first.
    pub max_redirects: usize,
    /// Accepted media types (`text/html`), compared without parameters; empty accepts any.
    pub content_types: Vec<String>,
    /// The `Accept` header sent.
    pub accept: Option<String>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_bytes: 10 * 1024 * 1024,
            max_redirects: 5,
            content_types: Vec::new(),
            accept: None,
        }
    }
}

/// A response whose body has been read in full, within the size limit.
#[derive(Clone, Debug)]
pub struct OutboundResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl OutboundResponse {
    /// The media type without parameters, lowercased (`text/html`).
    pub fn media_type(&self) -> Option<String> {
        media_type(&self.headers)
    }
}

/// A successful fetch whose body is read chunk by chunk, never past the size limit.
#[derive(Debug)]
pub struct StreamingResponse {
    /// Where the body came from, after redirects.
    url: Url,
    response: reqwest::Response,
    limit: u64,
    received: u64,
}

impl StreamingResponse {
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    pub fn headers(&self) -> &HeaderMap {
        self.response.headers()
    }

    /// The media type without parameters, lowercased (`text/html`).
    pub fn media_type(&self) -> Option<String> {
        media_type(self.response.headers())
    }

    /// The next piece of the body, or `None` at its end; `too_large` once past the limit.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, OutboundError> {
        let chunk = self.response.chunk().await.map_err(from_reqwest)?;
        if let Some(chunk) = &chunk {
            self.received = self.received.saturating_add(chunk.len() as u64);
            if self.received > self.limit {
                return Err(OutboundError::TooLarge { limit: self.limit });
            }
        }
        Ok(chunk)
    }

    /// The whole body.
    pub async fn bytes(mut self) -> Result<Bytes, OutboundError> {
        let mut body = BytesMut::new();
        while let Some(chunk) = self.chunk().await? {
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

/// The SSRF-safe client. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct OutboundClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    resolver: CheckedResolver,
    allow: Arc<Allowlist>,
    timeout: Duration,
    max_response_bytes: u64,
    user_agent: String,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient")
            .field("allow", &self.inner.allow)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl OutboundClient {
    pub fn new(config: OutboundConfig) -> Result<Self, OutboundError> {
        let allow = Arc::new(config.allow);
        let resolver = CheckedResolver::new(&config.dns, allow.clone(), config.connect_timeout)?;
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = &config.extra_root_certificates_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| OutboundError::Config(format!("extra root certificates: {e}")))?;
            builder = builder.tls_certs_merge(roots);
        }
        let http = builder
            // A proxy would resolve and connect on our behalf, past every check.
            .no_proxy()
            // Never followed by reqwest: webhooks do not follow, fetches check each hop first.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .dns_resolver(Arc::new(resolver.clone()))
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| OutboundError::Config(describe(&e)))?;
        Ok(OutboundClient {
            inner: Arc::new(Inner {
                http,
                resolver,
                allow,
                timeout: config.timeout,
                max_response_bytes: config.max_response_bytes,
                user_agent: config.user_agent,
            }),
        })
    }

    /// The product token of the `User-Agent` every request sends (`Confide` of `Confide/1.2`):
    /// the name a site's `robots.txt` addresses us by.
    pub fn product_token(&self) -> &str {
        let agent = self.inner.user_agent.as_str();
        let end = agent
            .find(|c: char| !(c.is_ascii_alphabetic() || c == '-' || c == '_'))
            .unwrap_or(agent.len());
        agent.get(..end).unwrap_or_default()
    }

    pub fn allowlist(&self) -> &Allowlist {
        &self.inner.allow
    }

    /// Checks a URL's form and, for an address literal, the address; no network. For validating
    /// a URL when it is saved.
    pub fn check_url(&self, url: &str) -> Result<Url, OutboundError> {
        let url = parse_url(url)?;
        check_literal(&url, &self.inner.allow)?;
        Ok(url)
    }

    /// Like [`check_url`](Self::check_url), and also resolves a name now to check its addresses,
    /// so a user learns at once. Every request checks again: DNS answers change.
    pub async fn check_url_resolved(&self, url: &str) -> Result<Url, OutboundError> {
        let url = parse_url(url)?;
        if let TargetHost::Name(name) = check_literal(&url, &self.inner.allow)? {
            self.inner.resolver.resolve(&name).await?;
        }
        Ok(url)
    }

    /// Like [`check_url_resolved`](Self::check_url_resolved), answering every address the target
    /// resolves to now (the literal itself for an address literal).
    pub async fn resolve_url(&self, url: &str) -> Result<(Url, Vec<IpAddr>), OutboundError> {
        let url = parse_url(url)?;
        let addresses = match check_literal(&url, &self.inner.allow)? {
            TargetHost::Name(name) => self.inner.resolver.resolve(&name).await?,
            TargetHost::Address(ip) => vec![ip],
        };
        Ok((url, addresses))
    }

    /// Sends one request as it is given (object storage speaks PUT, POST and DELETE), to a target
    /// checked like a webhook's: a redirect is returned as the answer, never followed, and the
    /// answer's body is read up to the configured limit (a larger one is `too_large`).
    pub async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: HeaderMap,
        body: impl Into<Bytes>,
    ) -> Result<OutboundResponse, OutboundError> {
        let url = self.check_url(url)?;
        let response = self
            .inner
            .http
            .request(method, url.clone())
            .headers(headers)
            .body(body.into())
            .send()
            .await
            .map_err(from_reqwest)?;
        let answer = StreamingResponse {
            url,
            response,
            limit: self.inner.max_response_bytes,
            received: 0,
        };
        let (status, headers) = (answer.status(), answer.headers().clone());
        let body = answer.read_within_limit().await?;
        Ok(OutboundResponse {
            status,
            headers,
            body,
        })
    }

    /// Posts a webhook. A redirect is returned as the response, never followed. The body is read
    /// up to the configured limit; a larger one is `too_large`.
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: impl Into<Bytes>,
    ) -> Result<OutboundResponse, OutboundError> {
        let answer = self.send_post(url, headers, body).await?;
        let (status, headers) = (answer.status(), answer.headers().clone());
        let body = answer.read_within_limit().await?;
        Ok(OutboundResponse {
            status,
            headers,
            body,
        })
    }

    /// Posts like [`OutboundClient::post`], but an answer longer than the limit is cut there
    /// (`true` says it was) instead of refused: the receiver's status still stands, so a webhook
    /// receiver that took an event is not sent it again because it answered at length.
    pub async fn post_cutting_answer(
        &self,
        url: &str,
        headers: HeaderMap,
        body: impl Into<Bytes>,
    ) -> Result<(OutboundResponse, bool), OutboundError> {
        let answer = self.send_post(url, headers, body).await?;
        let (status, headers) = (answer.status(), answer.headers().clone());
        let (body, cut) = answer.read_cut().await?;
        Ok((
            OutboundResponse {
                status,
                headers,
                body,
            },
            cut,
        ))
    }

    /// Posts a request whose answer is read as it arrives (a model's streamed answer), at most
    /// `max_bytes` of it. A redirect is returned as the response, never followed.
    pub async fn post_streaming(
        &self,
        url: &str,
        headers: HeaderMap,
        body: impl Into<Bytes>,
        max_bytes: u64,
    ) -> Result<StreamingResponse, OutboundError> {
        let mut answer = self.send_post(url, headers, body).await?;
        answer.limit = max_bytes;
        Ok(answer)
    }

    /// Checks the URL and sends the post; the answer's body is still to be read.
    async fn send_post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: impl Into<Bytes>,
    ) -> Result<StreamingResponse, OutboundError> {
        let url = self.check_url(url)?;
        let response = self
            .inner
            .http
            .post(url.clone())
            .headers(headers)
            .body(body.into())
            .send()
            .await
            .map_err(from_reqwest)?;
        Ok(StreamingResponse {
            url,
            response,
            limit: self.inner.max_response_bytes,
            received: 0,
        })
    }

    /// Fetches a document (a URL import) with its whole body.
    pub async fn fetch(
        &self,
        url: &str,
        options: &FetchOptions,
    ) -> Result<(Url, OutboundResponse), OutboundError> {
        let (url, response, _) = self.fetch_reading(url, options, false).await?;
        Ok((url, response))
    }

    /// Fetches a document like [`fetch`](Self::fetch), but one longer than `options.max_bytes`
    /// is cut there (`true` says it was) instead of refused, and the rest is not read: for a file
    /// read only so far, as a `robots.txt` is.
    pub async fn fetch_cut(
        &self,
        url: &str,
        options: &FetchOptions,
    ) -> Result<(Url, OutboundResponse, bool), OutboundError> {
        self.fetch_reading(url, options, true).await
    }

    /// Fetches a document, its body cut at the limit or refused past it.
    async fn fetch_reading(
        &self,
        url: &str,
        options: &FetchOptions,
        cut_at_limit: bool,
    ) -> Result<(Url, OutboundResponse, bool), OutboundError> {
        // One deadline over every hop and the body, not one per request.
        tokio::time::timeout(self.inner.timeout, async {
            let response = self.open_within_deadline(url, options).await?;
            let url = response.url.clone();
            let (status, headers) = (response.status(), response.headers().clone());
            let (body, cut) = if cut_at_limit {
                response.read_cut().await?
            } else {
                (response.read_within_limit().await?, false)
            };
            Ok((
                url,
                OutboundResponse {
                    status,
                    headers,
                    body,
                },
                cut,
            ))
        })
        .await
        .map_err(|_| OutboundError::Timeout)?
    }

    /// Opens a document (a URL import): follows up to `max_redirects` redirects, each target
    /// checked like the first; the final response must be a success of an accepted media type.
    pub async fn open(
        &self,
        url: &str,
        options: &FetchOptions,
    ) -> Result<StreamingResponse, OutboundError> {
        tokio::time::timeout(self.inner.timeout, self.open_within_deadline(url, options))
            .await
            .map_err(|_| OutboundError::Timeout)?
    }

    async fn open_within_deadline(
        &self,
        url: &str,
        options: &FetchOptions,
    ) -> Result<StreamingResponse, OutboundError> {
        let accept =
            match &options.accept {
                Some(accept) => Some(HeaderValue::from_str(accept).map_err(|_| {
                    OutboundError::Config("the Accept header is invalid".to_owned())
                })?),
                None => None,
            };
        let mut url = self.check_url(url)?;
        let mut redirects = 0;
        loop {
            let mut request = self.inner.http.get(url.clone());
            if let Some(accept) = &accept {
                request = request.header(ACCEPT, accept.clone());
            }
            let response = request.send().await.map_err(from_reqwest)?;
            let status = response.status();
            if is_followed_redirect(status) {
                if redirects >= options.max_redirects {
                    return Err(OutboundError::TooManyRedirects {
                        limit: options.max_redirects,
                    });
                }
                redirects += 1;
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .ok_or_else(|| {
                        OutboundError::RedirectNotAllowed(format!("{status} without a Location"))
                    })?;
                let next = url.join(location).map_err(|e| {
                    OutboundError::RedirectNotAllowed(format!("Location {location:?}: {e}"))
                })?;
                url = self.check_url(next.as_str())?;
                continue;
            }
            if !status.is_success() {
                return Err(OutboundError::Status(status.as_u16()));
            }
            if !options.content_types.is_empty() {
                let found = media_type(response.headers()).unwrap_or_default();
                if !options
                    .content_types
                    .iter()
                    .any(|accepted| accepted.eq_ignore_ascii_case(&found))
                {
                    return Err(OutboundError::ContentTypeNotAllowed(found));
                }
            }
            return Ok(StreamingResponse {
                url,
                response,
                limit: options.max_bytes,
                received: 0,
            });
        }
    }
}

impl StreamingResponse {
    /// The body up to the limit, and whether there was more (not read).
    async fn read_cut(mut self) -> Result<(Bytes, bool), OutboundError> {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let mut kept = BytesMut::new();
        while let Some(chunk) = self.response.chunk().await.map_err(from_reqwest)? {
            let room = limit.saturating_sub(kept.len());
            if chunk.len() > room {
                kept.extend_from_slice(chunk.get(..room).unwrap_or_default());
                return Ok((kept.freeze(), true));
            }
            kept.extend_from_slice(&chunk);
        }
        Ok((kept.freeze(), false))
    }

    /// The whole body, refused early when its declared length is already past the limit.
    async fn read_within_limit(self) -> Result<Bytes, OutboundError> {
        if self
            .response
            .content_length()
            .is_some_and(|length| length > self.limit)
        {
            return Err(OutboundError::TooLarge { limit: self.limit });
        }
        self.bytes().await
    }
}

fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    Some(essence.to_ascii_lowercase())
}

/// Maps reqwest's error; a refusal from our resolver travels inside it and comes out as it was.
fn from_reqwest(err: reqwest::Error) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(current) = source {
        if let Some(ours) = current.downcast_ref::<OutboundError>() {
            return ours.clone();
        }
        source = current.source();
    }
    if err.is_timeout() {
        return OutboundError::Timeout;
    }
    let connect = err.is_connect();
    // The URL can carry a receiver's secret; the delivery log has it already.
    let detail = describe(&err.without_url());
    if connect {
        OutboundError::ConnectFailed(detail)
    } else {
        OutboundError::RequestFailed(detail)
    }
}

/// An error and its causes on one line.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
