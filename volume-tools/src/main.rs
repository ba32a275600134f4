//! `cellfs-vos`: vos-style volume administration for a cellfs cell.
#![deny(clippy::undocumented_unsafe_blocks)]

mod cli;
mod commands;
mod docs;
mod output;
mod principals;
mod size;
mod transfer;
mod walk;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // Needs no cell config.
    if let cli::Command::Generate { what } = cli.command {
        print!("{}", docs::text(what));
        return ExitCode::SUCCESS;
    }
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cellfs-vos: {}", commands::render_error(&err));
            ExitCode::FAILURE
        }
    }
}
