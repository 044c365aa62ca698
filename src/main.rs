#![forbid(unsafe_code)]

use clap::Parser;
use releasectl::{cli::Cli, commands, error::exit, log};

fn main() {
    let cli = Cli::parse();
    let json = cli.json;
    let code = match commands::run(cli) {
        Ok(()) => exit::OK,
        Err(e) => {
            log::error(&format!("error: {}", e.one_line()));
            if json && !e.reported() {
                println!(
                    "{}",
                    serde_json::json!({"error": e.one_line(), "exit_code": e.exit_code()})
                );
            }
            e.exit_code()
        }
    };
    std::process::exit(code);
}
