//! object_store's HTTP transport, replaced by the SSRF-safe outbound client: every request the S3
//! client makes (writes, and any credential lookup it might attempt) goes to a target checked like
//! a webhook's, connects only to the addresses that were checked, and never follows a redirect.
//! A request over plain http is sent only while its host resolves to on-premises addresses alone
//! ([`check_plain_http`]), checked again before each request.

use async_trait::async_trait;
use confide_outbound::{OutboundClient, OutboundError};
use http_body_util::BodyExt;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpResponseBody, HttpService,
};

use super::check_plain_http;

/// Hands object_store our client, whatever options it asks for.
#[derive(Debug)]
pub struct GuardedConnector(pub OutboundClient);

impl HttpConnector for GuardedConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(GuardedService(self.0.clone())))
    }
}

#[derive(Debug)]
struct GuardedService(OutboundClient);

#[async_trait]
impl HttpService for GuardedService {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        // A part of an upload is at most the writer's buffer (a few MiB): read it whole.
        let body = body.collect().await?.to_bytes();
        let url = parts.uri.to_string();
        if parts.uri.scheme_str() == Some("http") {
            // The send resolves the name again, through the same resolver and its cache.
            let (checked, addresses) = self
                .0
                .resolve_url(&url)
                .await
                .map_err(|err| HttpError::new(kind(&err), err))?;
            check_plain_http(&checked, &addresses)
                .map_err(|err| HttpError::new(HttpErrorKind::Unknown, err))?;
        }
        let answer = self
            .0
            .send(parts.method, &url, parts.headers, body)
            .await
            .map_err(|err| HttpError::new(kind(&err), err))?;
        let mut response = HttpResponse::new(HttpResponseBody::from(answer.body));
        *response.status_mut() = answer.status;
        *response.headers_mut() = answer.headers;
        Ok(response)
    }
}

/// Which failures object_store may retry: network trouble yes, a refused target never.
fn kind(err: &OutboundError) -> HttpErrorKind {
    match err {
        OutboundError::DnsFailed { .. } | OutboundError::ConnectFailed(_) => HttpErrorKind::Connect,
        OutboundError::Timeout => HttpErrorKind::Timeout,
        OutboundError::RequestFailed(_) => HttpErrorKind::Request,
        OutboundError::TooLarge { .. } => HttpErrorKind::Decode,
        _ => HttpErrorKind::Unknown,
    }
}
