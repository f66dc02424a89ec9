//! `opamp-gitops check`: compiles a config repository exactly as `serve` would and reports every
//! diagnostic, for humans, machines or GitHub annotations.

use super::{exit, read_repo_dir};
use crate::diagnostics::Diagnostic;
use crate::repo::components::ComponentSet;
use crate::repo::{compile, CompileOptions, SampleReport, Summary};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
    Github,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The config repository directory.
    #[arg(default_value = super::DEFAULT_REPO_DIR)]
    pub dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    /// Rewrite the golden files of sample agents with what they render now.
    #[arg(long)]
    pub update: bool,
    /// Also run this Collector's `validate` command on every distinct rendered config.
    #[arg(long, value_name = "PATH")]
    pub otelcol: Option<PathBuf>,
    /// The components of the Collector build the agents run (YAML: `receivers: [...]`,
    /// `exporters: [...]`..., or the output of `otelcol components`): a render using a
    /// component type it lacks is an error, for every sample agent without its own
    /// `available_components:`.
    #[arg(long, value_name = "FILE")]
    pub components: Option<PathBuf>,
}

pub fn run(args: &CheckArgs) -> i32 {
    let snapshot = match read_repo_dir(&args.dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Some(otelcol) = &args.otelcol {
        if !otelcol.is_file() {
            eprintln!("error: --otelcol `{}` is not a file", otelcol.display());
            return exit::USAGE;
        }
    }
    let components = match &args.components {
        None => None,
        Some(path) => match read_components(path) {
            Ok(set) => Some(std::sync::Arc::new(set)),
            Err(message) => {
                eprintln!("error: --components {message}");
                return exit::USAGE;
            }
        },
    };
    let options = CompileOptions {
        update_goldens: args.update,
        otelcol: args.otelcol.clone(),
        repo_dir: Some(args.dir.display().to_string()),
        resolve_telemetry: false,
        components,
    };
    let output = compile(&snapshot, snapshot.digest(), &options);
    if args.update {
        if let Err(code) = write_goldens(&args.dir, &output.golden_updates) {
            return code;
        }
    }
    let diagnostics: Vec<Diagnostic> = output
        .diagnostics
        .iter()
        .map(|d| d.relative_to(&args.dir))
        .collect();
    print_report(args.format, &diagnostics, &output.summary, &output.samples);
    if output.summary.errors > 0 {
        exit::FAILED
    } else {
        exit::OK
    }
}

fn read_components(path: &Path) -> Result<ComponentSet, String> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("`{name}`: {e}"))?;
    ComponentSet::parse_file(&name, &text).map_err(|found| {
        found
            .iter()
            .map(Diagnostic::human)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn write_goldens(
    dir: &Path,
    updates: &std::collections::BTreeMap<String, String>,
) -> Result<(), i32> {
    for (path, content) in updates {
        let target = dir.join(path);
        if std::fs::read(&target).is_ok_and(|old| old == content.as_bytes()) {
            eprintln!("unchanged {}", target.display());
            continue;
        }
        let result = target
            .parent()
            .map(std::fs::create_dir_all)
            .unwrap_or(Ok(()))
            .and_then(|()| std::fs::write(&target, content));
        if let Err(e) = result {
            eprintln!(
                "error: cannot write golden file `{}`: {e}",
                target.display()
            );
            return Err(exit::FAILED);
        }
        eprintln!("wrote {}", target.display());
    }
    Ok(())
}

pub fn print_report(
    format: Format,
    diagnostics: &[Diagnostic],
    summary: &Summary,
    samples: &[SampleReport],
) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = match format {
        Format::Human => {
            for d in diagnostics {
                let _ = writeln!(out, "{}", d.human());
            }
            for sample in samples {
                if let Some(r) = &sample.rollout {
                    let _ = writeln!(
                        out,
                        "agent {}: rollout {}, wave {} ({})",
                        sample.name, r.scope, r.wave, r.label
                    );
                }
            }
            writeln!(out, "{}", summary_line(summary))
        }
        Format::Github => {
            for d in diagnostics {
                let _ = writeln!(out, "{}", d.github());
            }
            writeln!(out, "{}", summary_line(summary))
        }
        Format::Json => {
            let report = serde_json::json!({
                "ok": summary.errors == 0,
                "summary": summary,
                "diagnostics": diagnostics,
                "agents": samples.iter().map(|s| serde_json::json!({
                    "name": s.name,
                    "file": s.file,
                    "rule": s.rule,
                    "rollout": s.rollout.as_ref().map(|r| serde_json::json!({"scope": r.scope, "wave": r.wave})),
                })).collect::<Vec<_>>(),
            });
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            )
        }
    };
}

fn summary_line(s: &Summary) -> String {
    format!(
        "checked {} rules, {} templates, {} sample agents: {} errors, {} warnings",
        s.rules, s.templates, s.agents, s.errors, s.warnings
    )
}
