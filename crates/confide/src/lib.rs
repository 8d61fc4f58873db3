//! The `confide` binary's library half: configuration, wiring and commands, so tests can start a
//! real server in-process.

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod knowledge_cli;
pub mod server;
pub mod telemetry;
