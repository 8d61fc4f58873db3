//! `realtime-load`: a load generator for Confide's Pusher-protocol hub (issue 3, section 5).
//!
//! Three scenarios, each a subcommand:
//! - `connections`: opens subscribed private-channel connections in steps and reads the server's
//!   RSS after each step, so memory per connection is the RSS slope between steps;
//! - `publish`: subscribers over private channels, events published through the signed HTTP
//!   events API at a fixed rate; publish-to-receive latency and deliveries per second;
//! - `chat`: the chat widget's round trip: start chats, authorize their channels through the chat
//!   API, post visitor messages at a fixed rate and time the bot's reply event.
//!
//! Every scenario prints a human summary and one `RESULT {json}` line for scripts (`bench/run.sh`).
//! The generator runs on the same machine as the server, so its own CPU use competes with the
//! server's: the figures are an upper bound on what the server alone would show.

mod chat;
mod connections;
mod publish;
mod pusher;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "realtime-load",
    about = "Load generator for Confide's Pusher-protocol hub and chat round trip"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Subscribed connections in steps; server RSS per connection and connection rate.
    Connections(connections::Args),
    /// Publishes through the HTTP events API at a fixed rate; publish-to-receive latency.
    Publish(publish::Args),
    /// Chat round trip: POST a visitor message, time the bot's reply event.
    Chat(chat::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    pusher::init_clock();
    match cli.command {
        Command::Connections(args) => connections::run(args).await,
        Command::Publish(args) => publish::run(args).await,
        Command::Chat(args) => chat::run(args).await,
    }
}
