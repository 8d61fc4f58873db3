//! Why an outbound request was refused or failed, with a stable code for APIs and delivery logs.

use std::net::IpAddr;

use crate::address::NonPublic;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    #[error("only http and https URLs are allowed, not {0:?}")]
    SchemeNotAllowed(String),
    /// The target, or one of the addresses its name resolves to, is not public and not allowed.
    #[error("{host}: address {address} is {reason} and not allowed")]
    AddressNotAllowed {
        host: String,
        address: IpAddr,
        reason: NonPublic,
    },
    #[error("could not resolve {host}: {reason}")]
    DnsFailed { host: String, reason: String },
    #[error("could not connect: {0}")]
    ConnectFailed(String),
    #[error("the request timed out")]
    Timeout,
    #[error("the response is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// A fetch met a redirect it may not follow (no usable `Location`).
    #[error("redirect not followed: {0}")]
    RedirectNotAllowed(String),
    #[error("more than {limit} redirects")]
    TooManyRedirects { limit: usize },
    /// A fetch ended on a response that is not a success.
    #[error("the target answered with status {0}")]
    Status(u16),
    #[error("content type {0:?} is not accepted")]
    ContentTypeNotAllowed(String),
    /// The connection was made but the exchange failed (TLS, protocol, reset).
    #[error("the request failed: {0}")]
    RequestFailed(String),
    /// The client could not be built from its configuration.
    #[error("outbound client configuration: {0}")]
    Config(String),
}

impl OutboundError {
    /// A stable snake_case code for API errors and delivery logs.
    pub fn code(&self) -> &'static str {
        match self {
            OutboundError::InvalidUrl(_) => "invalid_url",
            OutboundError::SchemeNotAllowed(_) => "scheme_not_allowed",
            OutboundError::AddressNotAllowed { .. } => "address_not_allowed",
            OutboundError::DnsFailed { .. } => "dns_failed",
            OutboundError::ConnectFailed(_) => "connect_failed",
            OutboundError::Timeout => "timeout",
            OutboundError::TooLarge { .. } => "too_large",
            OutboundError::RedirectNotAllowed(_) => "redirect_not_allowed",
            OutboundError::TooManyRedirects { .. } => "too_many_redirects",
            OutboundError::Status(_) => "http_status",
            OutboundError::ContentTypeNotAllowed(_) => "content_type_not_allowed",
            OutboundError::RequestFailed(_) => "request_failed",
            OutboundError::Config(_) => "outbound_config",
        }
    }

    /// The URL itself is unacceptable: an API answers 4xx, and retrying cannot help.
    /// Everything else is about the target's behaviour (a 502, or a retry for webhooks).
    pub fn is_refused_target(&self) -> bool {
        matches!(
            self,
            OutboundError::InvalidUrl(_)
                | OutboundError::SchemeNotAllowed(_)
                | OutboundError::AddressNotAllowed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::address::classify;

    #[test]
    fn messages_say_which_host_and_address_were_refused() {
        let address: IpAddr = "::ffff:169.254.169.254".parse().unwrap();
        let err = OutboundError::AddressNotAllowed {
            host: "metadata.example".to_owned(),
            address,
            reason: classify(address).unwrap(),
        };
        assert_eq!(err.code(), "address_not_allowed");
        assert!(err.is_refused_target());
        assert_eq!(
            err.to_string(),
            "metadata.example: address ::ffff:169.254.169.254 is cloud_metadata \
             (169.254.169.254 inside ipv4_mapped) and not allowed"
        );
        assert!(!OutboundError::Timeout.is_refused_target());
    }
}
