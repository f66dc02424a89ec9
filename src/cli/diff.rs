//! `opamp-gitops diff`: compiles a config repository at two git revisions through the same
//! path as `check` and `serve`, and reports which agents (sample agents, or the live fleet with
//! `--fleet`) get a new config and what changes in it.

use super::check::{self, print_report};
use super::exit;
use crate::auth::parse_tokens;
use crate::diagnostics::Diagnostic;
use crate::preview::compare::Version;
use crate::preview::worktree::WorkingCopy;
use crate::preview::{compare, human, live, markdown, AgentSet, Side};
use crate::repo::{compile, CompileOptions, CompileOutput, Snapshot};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
    Markdown,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DiffArgs {
    /// A git working copy of the config repository (or a directory inside one).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The revision to compare against: a commit, branch or tag (e.g. origin/main).
    #[arg(long, value_name = "REF")]
    pub base: String,
    /// The revision to compare: a commit, branch or tag. Default: the working tree, uncommitted
    /// changes included.
    #[arg(long, value_name = "REF")]
    pub head: Option<String>,
    /// The config repository's sub-directory of DIR.
    #[arg(long, value_name = "SUBDIR")]
    pub path: Option<String>,
    /// Compare the live fleet of the server with this admin URL (its distinct attribute sets
    /// and their counts) instead of the sample agents.
    #[arg(long, value_name = "URL")]
    pub fleet: Option<String>,
    /// An admin token file (one token a line, optionally `name:token`; the first is sent), for
    /// a server that runs with --admin-read-auth.
    #[arg(long, value_name = "FILE", env = "OPAMP_GITOPS_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    /// Lines of context around each change in the diffs.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub context: usize,
}

/// A revision read from the working copy, as the report names it.
struct Read {
    side: Side,
    snapshot: Snapshot,
}

pub fn run(args: &DiffArgs) -> i32 {
    match prepare(args) {
        Ok((base, head, token)) => compare_and_report(args, base, head, token.as_deref()),
        Err(message) => {
            eprintln!("error: {message}");
            exit::USAGE
        }
    }
}

/// Everything that can be a usage error, checked before any work: the working copy, both
/// refs and the token file.
fn prepare(args: &DiffArgs) -> Result<(Read, Read, Option<String>), String> {
    let copy = WorkingCopy::open(&args.dir, args.path.as_deref()).map_err(|e| e.to_string())?;
    let at = |name: &str, flag: &str| -> Result<Read, String> {
        let commit = copy.resolve(name).map_err(|e| format!("--{flag}: {e}"))?;
        Ok(Read {
            side: Side {
                name: name.to_owned(),
                commit: Some(commit.to_string()),
                compiles: false,
            },
            snapshot: copy.at(commit).map_err(|e| e.to_string())?,
        })
    };
    let base = at(&args.base, "base")?;
    let head = match &args.head {
        Some(name) => at(name, "head")?,
        None => Read {
            side: Side {
                name: "working tree".to_owned(),
                commit: None,
                compiles: false,
            },
            snapshot: copy.working_tree().map_err(|e| e.to_string())?,
        },
    };
    let token = match (&args.fleet, &args.token_file) {
        (Some(_), Some(file)) => Some(read_token(file)?),
        _ => None,
    };
    Ok((base, head, token))
}

fn read_token(file: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the token file {}: {e}", file.display()))?;
    parse_tokens(&text)
        .first()
        .map(|t| t.secret().to_owned())
        .ok_or_else(|| format!("the token file {} holds no token", file.display()))
}

fn compiled(read: &Read) -> CompileOutput {
    let id = read
        .side
        .commit
        .clone()
        .unwrap_or_else(|| read.snapshot.digest());
    compile(&read.snapshot, id, &CompileOptions::default())
}

fn compare_and_report(args: &DiffArgs, mut base: Read, mut head: Read, token: Option<&str>) -> i32 {
    let root = config_root(args);
    let head_output = compiled(&head);
    let Some(head_revision) = head_output.revision.clone() else {
        report_head_errors(args.format, &root, &head.side, &head_output);
        return exit::FAILED;
    };
    let base_output = compiled(&base);
    base.side.compiles = base_output.revision.is_some();
    head.side.compiles = true;
    let sets = match &args.fleet {
        Some(url) => match live::fetch(url, token) {
            Ok(sets) => sets,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::FAILED;
            }
        },
        None => AgentSet::samples([&base.snapshot, &head.snapshot]),
    };
    let comparison = compare(
        &Version {
            side: base.side,
            revision: base_output.revision.as_deref(),
        },
        &Version {
            side: head.side,
            revision: Some(&head_revision),
        },
        &sets,
        args.context,
    );
    let text = match args.format {
        Format::Human => {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            human::render(&comparison, color)
        }
        Format::Json => serde_json::to_string_pretty(&comparison).unwrap_or_default() + "\n",
        Format::Markdown => markdown::render(&comparison),
    };
    print!("{text}");
    exit::OK
}

/// The config repository's directory as the user typed it: what diagnostics are relative to,
/// as `check DIR` prints them.
fn config_root(args: &DiffArgs) -> PathBuf {
    match args.path.as_deref().map(|p| p.trim_matches('/')) {
        Some(path) if !path.is_empty() => args.dir.join(path),
        _ => args.dir.clone(),
    }
}

/// `check`'s report of a head that does not compile, in the format asked for.
fn report_head_errors(format: Format, root: &std::path::Path, side: &Side, output: &CompileOutput) {
    let diagnostics: Vec<Diagnostic> = output
        .diagnostics
        .iter()
        .map(|d| d.relative_to(root))
        .collect();
    match format {
        Format::Human => print_report(check::Format::Human, &diagnostics, &output.summary, &[]),
        Format::Json => print_report(check::Format::Json, &diagnostics, &output.summary, &[]),
        Format::Markdown => {
            let lines: Vec<String> = diagnostics.iter().map(Diagnostic::human).collect();
            println!(
                "### opamp-gitops diff: the head ({}) does not compile\n\n```\n{}\n```",
                side.label(),
                lines.join("\n").replace("```", "'''")
            );
        }
    }
    eprintln!(
        "error: the head ({}) does not compile: {}",
        side.label(),
        crate::preview::human::plural(output.summary.errors, "error", "errors")
    );
}
