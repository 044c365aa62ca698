#![forbid(unsafe_code)]

use clap::Parser;
use releasectl::cli::{commands, Cli};

fn main() {
    // A shell asking for completions gets them, and nothing else runs.
    releasectl::cli::completion::complete_if_asked();
    let code = match Cli::try_parse() {
        Ok(cli) => commands::main(cli),
        Err(e) => commands::bad_command_line(e),
    };
    std::process::exit(code);
}
