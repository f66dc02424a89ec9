//! The option structs of `serve` are the library's configuration too: each default is written
//! once, in its clap attribute, and [`defaults`] reads them back for code that builds options
//! without a command line (tests, `ServeOptions::local`).

use std::time::Duration;

/// The config repository `serve`, `check` and `render` use when none is given.
pub const DEFAULT_REPO_DIR: &str = "./example-config-repo";

/// A clap `Args` struct filled with its defaults alone: no command line, no environment.
pub fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults"))
        .mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command
        .try_get_matches_from(["defaults"])
        .expect("every option has a default");
    T::from_arg_matches(&matches).expect("the defaults fill the options")
}

/// A duration flag's value: `30s`, `5m`, `24h`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 30s or 5m: {e}"))
}
