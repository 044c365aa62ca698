#![forbid(unsafe_code)]

use clap::Parser;
use releasectl::{cli::Cli, commands};

fn main() {
    let code = match Cli::try_parse() {
        Ok(cli) => commands::main(cli),
        Err(e) => commands::bad_command_line(e),
    };
    std::process::exit(code);
}
