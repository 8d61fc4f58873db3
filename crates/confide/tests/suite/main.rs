//! The `confide` binary's tests through its public interfaces (HTTP, WebSocket, CLI), against real
//! servers on 127.0.0.1, on SQLite and (with `CONFIDE_TEST_DATABASE_URL`) PostgreSQL.
//!
//! One test binary for all of them, each area a module: it is built and linked once instead of
//! once per area, and its tests share the runner's threads instead of each area waiting for the
//! slowest test of the one before. Run one area with `cargo test -p confide --test suite knowledge::`.

mod common;

mod application_api;
mod auth;
mod avatar;
mod bot_transfer;
mod chat;
mod chat_log;
mod cli;
mod country;
mod dialogues;
mod extract_sandbox;
mod generated_answers;
mod handover;
mod http;
mod identity;
mod inbox_backup;
mod knowledge;
mod knowledge_cli;
mod languages;
mod nudges;
mod spam;
mod statistics;
mod tenancy;
mod tickets;
mod webhooks;
