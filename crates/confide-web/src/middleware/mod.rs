//! Layers every request passes through, outermost first: request id, client address,
//! security headers, parameter-pollution guard.

mod chat_cors;
mod client_ip;
mod cors;
mod headers;
mod params;
pub mod rate_limit;
mod request_id;

pub use chat_cors::chat_cors;
pub use client_ip::{ClientIp, client_ip, recorded as recorded_client_ip};
pub use cors::cors;
pub use headers::security_headers;
pub use params::reject_duplicate_parameters;
pub use rate_limit::{chat_rate_limit, rate_limit};
pub use request_id::{RequestId, request_id};
