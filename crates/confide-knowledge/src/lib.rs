//! Knowledge: what bot owners teach their bots.
//!
//! - `extract`: text out of PDF, DOCX, HTML, Markdown, CSV and plain text; hostile files are
//!   parsed only in a child process with time and memory limits (`sandbox`).
//! - `normalize`: the child's output is untrusted too; it is normalized and sanitized here.
//! - `chunk`: passages with overlap, each with its page, for the index and for citations.
//! - `generate`: the OpenAI-compatible wire format for grounded answers and embeddings (prompt,
//!   server-sent events, decline, citations, reciprocal rank fusion), without the network.
//! - `links`: where a site import goes next (a sitemap's entries, plain, gzipped or text, and a
//!   page's links).
//! - `robots`: which of a host's URLs its `robots.txt` lets a crawler fetch (RFC 9309).
//! - `index`: one tantivy index directory per bot, a cache of the chunks the database holds.

pub mod chunk;
pub mod extract;
pub mod generate;
pub mod index;
pub mod links;
pub mod normalize;
pub mod robots;
pub mod sandbox;
