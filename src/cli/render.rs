//! `opamp-gitops render`: the rule, hash and files an agent with the given attributes gets.

use super::{exit, read_repo_dir};
use crate::repo::{compile, AgentInfo, CompileOptions, Desired};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// The config repository directory.
    #[arg(default_value = super::DEFAULT_REPO_DIR)]
    pub dir: PathBuf,
    /// An identifying attribute of the agent (repeatable).
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attr)]
    pub attrs: Vec<(String, String)>,
    /// The agent's instance uid.
    #[arg(long, default_value_t = Uuid::nil())]
    pub uid: Uuid,
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
    let output = compile(&snapshot, snapshot.digest(), &CompileOptions::default());
    let Some(revision) = output.renderable else {
        for d in output.errors() {
            eprintln!("{}", d.relative_to(&args.dir).human());
        }
        eprintln!("error: the repository does not compile");
        return exit::FAILED;
    };
    let attrs: BTreeMap<String, String> = args.attrs.iter().cloned().collect();
    let agent = Arc::new(AgentInfo::new(args.uid.to_string(), attrs, BTreeMap::new()));
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
