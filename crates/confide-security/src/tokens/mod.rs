//! Opaque tokens: random values, sessions, API keys, CSRF tokens, signed single-purpose tokens
//! for password resets and invitations, and signed page cursors.

mod api_key;
mod csrf;
mod cursor;
mod invite;
mod presign;
mod random;
mod reset;
mod session;
mod signed;

pub use api_key::{API_KEY_LEN, NewApiKey, api_key_matches, new_api_key, parse_api_key};
pub use csrf::{csrf_token, verify_csrf_token};
pub use cursor::{issue_cursor, verify_cursor};
pub use invite::{issue_invite_token, parse_invite_token, verify_invite_token};
pub use presign::{presign_file, verify_presigned_file};
pub(crate) use random::try_fill_random;
pub use random::{MAX_RANDOM_TOKEN_BYTES, constant_time_eq, random_token, sha256_hex};
pub use reset::{issue_reset_token, parse_reset_token, verify_reset_token};
pub use session::{new_session_token, session_token_hash};
