use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = confide::cli::Cli::parse();
    // The extraction child stays one small single-threaded process: no runtime, no telemetry.
    if let confide::cli::Command::Extract(command) = &cli.command {
        return command.run();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(confide::cli::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
