//! `opamp-gitops render`: the rule, hash and files an agent with the given attributes gets. The
//! agent is a sample agent file (`--agent`, the format of `agents/*.yaml`), attributes given on
//! the command line, or both (the command line wins).

use super::{exit, read_repo_dir};
use crate::diagnostics::Diagnostic;
use crate::repo::{compile, samples, AgentInfo, CompileOptions, Desired};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// The config repository directory.
    #[arg(default_value = super::DEFAULT_REPO_DIR)]
    pub dir: PathBuf,
    /// A sample agent file (the format of `agents/*.yaml`) to take the agent from.
    #[arg(long, value_name = "FILE")]
    pub agent: Option<PathBuf>,
    /// An identifying attribute of the agent (repeatable).
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attr)]
    pub attrs: Vec<(String, String)>,
    /// A non-identifying attribute of the agent (repeatable).
    #[arg(long = "non-identifying", value_name = "KEY=VALUE", value_parser = parse_attr)]
    pub non_identifying: Vec<(String, String)>,
    /// The agent's instance uid [default: the sample agent's, or the nil uuid].
    #[arg(long)]
    pub uid: Option<Uuid>,
}

/// The agent to render for: the sample file's, with the command line's attributes and uid
/// over it.
fn agent(args: &RenderArgs) -> Result<AgentInfo, i32> {
    let (mut identifying, mut non_identifying, mut uid) =
        (BTreeMap::new(), BTreeMap::new(), Uuid::nil().to_string());
    if let Some(file) = &args.agent {
        let body = std::fs::read(file).map_err(|e| {
            eprintln!("error: cannot read `{}`: {e}", file.display());
            exit::USAGE
        })?;
        let sample = samples::parse(&repo_relative(&args.dir, file), &body).map_err(|found| {
            for d in found {
                let shown = Diagnostic {
                    file: Some(file.display().to_string()),
                    ..d
                };
                eprintln!("{}", shown.human());
            }
            exit::USAGE
        })?;
        identifying = sample.agent.identifying;
        non_identifying = sample.agent.non_identifying;
        uid = sample.agent.instance_uid;
    }
    identifying.extend(args.attrs.iter().cloned());
    non_identifying.extend(args.non_identifying.iter().cloned());
    if let Some(given) = args.uid {
        uid = given.to_string();
    }
    Ok(AgentInfo::new(uid, identifying, non_identifying))
}

/// `file` relative to the repository when it lies inside it: a sample agent without an
/// `instance_uid` gets the uid `check` gives it, which derives from that path.
fn repo_relative(dir: &Path, file: &Path) -> String {
    let inside = dir
        .canonicalize()
        .ok()
        .zip(file.canonicalize().ok())
        .and_then(|(dir, file)| file.strip_prefix(dir).ok().map(Path::to_path_buf));
    inside
        .unwrap_or_else(|| file.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

fn parse_attr(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

pub fn run(args: &RenderArgs) -> i32 {
    let snapshot = match read_repo_dir(&args.dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let agent = match agent(args) {
        Ok(agent) => Arc::new(agent),
        Err(code) => return code,
    };
    let output = compile(&snapshot, snapshot.digest(), &CompileOptions::default());
    let Some(revision) = output.renderable else {
        for d in output.errors() {
            eprintln!("{}", d.relative_to(&args.dir).human());
        }
        eprintln!("error: the repository does not compile");
        return exit::FAILED;
    };
    match revision.desired(&agent) {
        Desired::Unmanaged => {
            eprintln!("error: no rule matches these attributes: the agent would be unmanaged");
            exit::FAILED
        }
        Desired::Invalid { rule, diagnostics } => {
            println!("rule: {rule}");
            for d in diagnostics.iter() {
                eprintln!("{}", d.relative_to(&args.dir).human());
            }
            eprintln!("error: the config of rule `{rule}` does not render or validate for these attributes");
            exit::FAILED
        }
        Desired::Config(config) => {
            println!("rule: {}", config.rule);
            println!("hash: {}", config.hash_hex());
            for (name, body) in &config.files {
                println!("--- {name}");
                print!("{}", String::from_utf8_lossy(body));
                if !body.ends_with(b"\n") {
                    println!();
                }
            }
            exit::OK
        }
    }
}
