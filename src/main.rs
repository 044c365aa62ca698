#![forbid(unsafe_code)]

use clap::Parser;
use releasectl::{cli::Cli, commands};

fn main() {
    std::process::exit(commands::main(Cli::parse()));
}
