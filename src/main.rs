//! The `opamp-gitops` command line: parses arguments and hands them to the library.

use clap::{Parser, Subcommand};
use opamp_gitops::cli;

#[derive(Parser)]
#[command(
    name = "opamp-gitops",
    version,
    long_version = opamp_gitops::admin::version::LONG_VERSION,
    about = "Keeps a fleet of OpenTelemetry Collectors configured from a git repository, over OpAMP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile a config repository as the server would, and report every problem.
    Check(cli::check::CheckArgs),
    /// Print the rule, hash and config files an agent with these attributes gets.
    Render(cli::render::RenderArgs),
    /// Show what a change to the config repository does to the fleet: who moves, and how.
    Diff(cli::diff::DiffArgs),
    /// Serve OpAMP to the fleet from a config repository.
    Serve(Box<cli::serve::ServeArgs>),
    /// Simulate a fleet of OpAMP-supervised Collectors against servers on loopback.
    Loadgen(Box<cli::loadgen::LoadgenArgs>),
}

fn main() {
    let cli = Cli::parse();
    let code = match &cli.command {
        Command::Check(args) => cli::check::run(args),
        Command::Render(args) => cli::render::run(args),
        Command::Diff(args) => cli::diff::run(args),
        Command::Serve(args) => cli::serve::run(args),
        Command::Loadgen(args) => cli::loadgen::run(args),
    };
    std::process::exit(code);
}
