//! deploy/kubernetes and deploy/collector as a cluster gets them: every kustomization rendered
//! with the real kustomize, every built-in object valid for Kubernetes 1.37 (kubernetes-validate,
//! strict, offline), cert-manager's resources valid for the schemas in tests/fixtures; the base
//! is one replica recreated on a claim, `ha` several with a PodDisruptionBudget; the Deployment's
//! probes, ports, flags and variables are the ones the binary serves, and a server started with
//! them answers the probes; the collector DaemonSet runs the shipped supervisor.yaml; the
//! README's overlay of your own renders.

mod common;

use common::deploy::*;
use common::git::GitRemote;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const SERVER_OVERLAYS: [&str; 3] = [
    "deploy/kubernetes/base",
    "deploy/kubernetes/overlays/ha",
    "deploy/kubernetes/overlays/tls",
];

/// deploy/kubernetes/secrets rendered as its README says: with the four files beside it.
fn render_secrets() -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("deploy/kubernetes/secrets/kustomization.yaml"),
        dir.path().join("kustomization.yaml"),
    )
    .unwrap();
    for file in [
        "agent-tokens",
        "admin-tokens",
        "webhook-secret",
        "git-token",
    ] {
        std::fs::write(dir.path().join(file), format!("{file}-value\n")).unwrap();
    }
    kustomize(dir.path())
}

fn assert_valid(name: &str, objects: &[Value]) {
    assert!(!objects.is_empty(), "{name} renders objects");
    let (built_in, custom): (Vec<Value>, Vec<Value>) =
        objects.iter().cloned().partition(is_built_in);
    let (clean, report) = kubernetes_validate(&built_in);
    assert!(clean, "{name}: kubernetes-validate:\n{report}");
    for object in &custom {
        assert_eq!(
            object["apiVersion"], "cert-manager.io/v1",
            "{name}: a custom resource without a committed schema: {object}"
        );
        let errors = custom_resource_errors(object);
        assert!(errors.is_empty(), "{name}: {object}: {errors:#?}");
    }
}

#[test]
fn every_kustomization_renders_and_every_object_is_valid() {
    for dir in SERVER_OVERLAYS
        .iter()
        .chain(&["deploy/collector", "deploy/collector/extension-only"])
    {
        assert_valid(dir, &render(dir));
    }
    assert_valid("deploy/kubernetes/secrets", &render_secrets());
    let tls = render("deploy/kubernetes/overlays/tls");
    assert_eq!(
        kinds(&tls)
            .iter()
            .filter(|k| *k == "Certificate" || *k == "Issuer")
            .count(),
        4,
        "the tls overlay has its Issuers and Certificates"
    );
}

#[test]
fn the_validators_refuse_what_a_cluster_would_refuse() {
    let base = render("deploy/kubernetes/base");
    let mut typo = object(&base, "Deployment", None).clone();
    typo["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = serde_json::json!({});
    let (clean, report) = kubernetes_validate(&[typo]);
    assert!(!clean, "an unknown field fails strict validation: {report}");

    let tls = render("deploy/kubernetes/overlays/tls");
    let mut certificate = object(&tls, "Certificate", Some("opamp-gitops")).clone();
    certificate["spec"]
        .as_object_mut()
        .unwrap()
        .remove("issuerRef");
    assert!(!custom_resource_errors(&certificate).is_empty());
    let mut issuer = object(&tls, "Issuer", Some("opamp-gitops-ca")).clone();
    issuer["spec"]["selfSigned"] = serde_json::json!({});
    assert!(
        !custom_resource_errors(&issuer).is_empty(),
        "an Issuer has one type"
    );
}

#[test]
fn the_base_is_one_replica_recreated_on_a_claim_and_only_ha_has_a_disruption_budget() {
    let base = render("deploy/kubernetes/base");
    let deployment = object(&base, "Deployment", None);
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let claim = object(&base, "PersistentVolumeClaim", None);
    assert_eq!(claim["spec"]["accessModes"][0], "ReadWriteOnce");
    let cache = cache_volume(deployment);
    assert_eq!(
        cache["persistentVolumeClaim"]["claimName"],
        claim["metadata"]["name"]
    );
    assert!(!kinds(&base).contains(&"PodDisruptionBudget".to_owned()));
    let tls = render("deploy/kubernetes/overlays/tls");
    assert!(!kinds(&tls).contains(&"PodDisruptionBudget".to_owned()));
    assert_eq!(
        object(&tls, "Deployment", None)["spec"]["strategy"]["type"],
        "Recreate"
    );

    let ha = render("deploy/kubernetes/overlays/ha");
    let deployment = object(&ha, "Deployment", None);
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    assert!(
        !kinds(&ha).contains(&"PersistentVolumeClaim".to_owned()),
        "no claim in ha"
    );
    let cache = cache_volume(deployment);
    assert!(
        cache["emptyDir"].is_object(),
        "the mirror on an emptyDir: {cache}"
    );
    assert!(cache.get("persistentVolumeClaim").is_none(), "{cache}");
    let pdb = object(&ha, "PodDisruptionBudget", None);
    let pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v), "the budget selects the pods");
    }
    let store = container(deployment)["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "OPAMP_GITOPS_STORE")
        .expect("--store in ha");
    assert_eq!(
        store["valueFrom"]["secretKeyRef"]["name"],
        "opamp-gitops-store"
    );
}

/// The volume behind `--cache-dir`.
fn cache_volume(deployment: &Value) -> Value {
    let args = strings(&container(deployment)["args"]);
    let dir = flag(&args, "cache-dir").expect("--cache-dir");
    let mount = container(deployment)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir.as_str())
        .unwrap_or_else(|| panic!("--cache-dir {dir} is a volume mount"))
        .clone();
    deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume")
        .clone()
}

#[test]
fn the_deployments_probes_ports_flags_and_variables_are_what_the_binary_serves() {
    let known_flags = serve_flags();
    let known_env = serve_env_vars();
    let secrets = render_secrets();
    for dir in SERVER_OVERLAYS {
        let objects = render(dir);
        let deployment = object(&objects, "Deployment", None);
        let c = container(deployment);
        let args = strings(&c["args"]);
        assert_eq!(args[0], "serve", "{dir}");
        for (name, _) in flags(&args[1..]) {
            assert!(
                known_flags.contains(&name),
                "{dir}: --{name} is not a serve flag"
            );
        }
        let launch = Launch::of(&objects, deployment, |_, _| String::new());
        for (name, _) in &launch.env {
            if name.starts_with("OPAMP_GITOPS_") {
                assert!(known_env.contains(name), "{dir}: serve reads no {name}");
            }
        }
        assert!(
            launch.env_value("OPAMP_GITOPS_REPO").is_some(),
            "{dir} says where the configs come from"
        );

        // Ports: the container's are the listeners', the Service's target them.
        let port = |name: &str| -> u64 {
            c["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{dir}: a container port named {name}"))["containerPort"]
                .as_u64()
                .unwrap()
        };
        let listen = flag(&args, "listen").expect("--listen");
        let admin_listen = flag(&args, "admin-listen").expect("--admin-listen");
        assert_eq!(port("opamp"), u64::from(port_of(&listen)), "{dir}");
        assert_eq!(port("admin"), u64::from(port_of(&admin_listen)), "{dir}");
        let service = object(&objects, "Service", None);
        for p in service["spec"]["ports"].as_array().unwrap() {
            let target = p["targetPort"].as_str().expect("a named target port");
            assert_eq!(p["port"].as_u64(), Some(port(target)), "{dir}: {p}");
        }
        let selector = service["spec"]["selector"].as_object().unwrap();
        let pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .unwrap();
        for (k, v) in selector {
            assert_eq!(
                pod_labels.get(k),
                Some(v),
                "{dir}: the Service selects the pods"
            );
        }

        // Probes on the admin port, at the paths the server answers.
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{dir}: {probe}");
            assert_eq!(c[probe]["httpGet"]["port"], "admin", "{dir}: {probe}");
        }

        // Hardening.
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{dir}");
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"], true,
            "{dir}"
        );
        assert_eq!(
            c["securityContext"]["allowPrivilegeEscalation"], false,
            "{dir}"
        );
        for kind in ["requests", "limits"] {
            assert!(c["resources"][kind]["memory"].is_string(), "{dir}: {kind}");
        }

        // The Secrets the base names are those the example creates, with those keys.
        for volume in pod["volumes"].as_array().unwrap() {
            let Some(name) = volume["secret"]["secretName"].as_str() else {
                continue;
            };
            if matches!(name, "opamp-gitops-tls") {
                // cert-manager writes it: the Certificate's secretName.
                let certificate = object(&objects, "Certificate", Some("opamp-gitops"));
                assert_eq!(certificate["spec"]["secretName"], name);
                continue;
            }
            let secret = object(&secrets, "Secret", Some(name));
            let mount = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == volume["name"])
                .expect("the Secret is mounted");
            let at = mount["mountPath"].as_str().unwrap();
            let used: BTreeSet<String> = args
                .iter()
                .filter_map(|a| a.split_once('=').map(|(_, v)| v))
                .filter_map(|v| v.strip_prefix(&format!("{at}/")))
                .map(str::to_owned)
                .collect();
            let keys: BTreeSet<String> = secret["data"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            assert_eq!(used, keys, "{dir}: the files read from Secret {name}");
        }
    }
}

/// What a cluster fills in, for a test on loopback.
fn secret_content(tls: &common::tls::Issued) -> impl Fn(&str, &str) -> String + '_ {
    move |secret, key| match (secret, key) {
        ("opamp-gitops-agent-tokens", _) => "collector:agent-secret\n".into(),
        ("opamp-gitops-admin-tokens", _) => "ops:admin-secret\n".into(),
        ("opamp-gitops-webhook", _) => "webhook-secret\n".into(),
        ("opamp-gitops-git", _) => "git-token\n".into(),
        ("opamp-gitops-tls", "tls.crt") => tls.cert_pem.clone(),
        ("opamp-gitops-tls", "tls.key") => tls.key_pem.clone(),
        other => panic!("no test content for {other:?}"),
    }
}

#[test]
fn a_server_started_as_the_base_and_tls_deployments_start_it_answers_their_probes() {
    let remote = GitRemote::new();
    let ca = common::tls::TestCa::new("test CA");
    let issued = ca.server();
    for dir in ["deploy/kubernetes/base", "deploy/kubernetes/overlays/tls"] {
        let objects = render(dir);
        let deployment = object(&objects, "Deployment", None);
        let mut launch = Launch::of(&objects, deployment, |name, from| {
            panic!("{dir}: no test value for {name} ({from})")
        });
        let volumes = tempfile::tempdir().unwrap();
        launch.materialize(deployment, volumes.path(), secret_content(&issued));
        launch.on_loopback();
        launch.set_env("OPAMP_GITOPS_REPO", &remote.file_url());
        let server = launch.start();
        // The probes as the kubelet sends them: HTTPS in the tls overlay (the kubelet does not
        // verify the certificate; this client does, against the test CA).
        let tls = dir.ends_with("tls").then(|| ca.pem());
        let c = container(deployment);
        for probe in ["readinessProbe", "livenessProbe"] {
            let path = c[probe]["httpGet"]["path"].as_str().unwrap();
            let https = c[probe]["httpGet"]["scheme"] == "HTTPS";
            assert_eq!(https, tls.is_some(), "{dir}: {probe} scheme");
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                let status = match &tls {
                    None => common::admin::get(server.admin, path).status,
                    Some(ca) => https_status(ca, server.admin, path),
                };
                if status == 200 {
                    break;
                }
                assert!(Instant::now() < until, "{dir}: {path} answered {status}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if tls.is_some() {
            continue;
        }
        // The OpAMP port is the agents' (and, with the agent tokens mounted, refuses strangers).
        let refused = common::agent::http_client()
            .post(format!("http://{}/v1/opamp", server.opamp))
            .send(&b""[..])
            .unwrap();
        assert_eq!(refused.status().as_u16(), 401, "{dir}");
    }
}

/// The status of `GET path` over TLS, trusting `ca` (0 when the exchange fails).
fn https_status(ca: &str, addr: std::net::SocketAddr, path: &str) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let connector = common::tls::connector(ca, None);
        let Ok(mut stream) = common::tls::connect(&connector, addr).await else {
            return 0;
        };
        let response = common::tls::http_get(&mut stream, path)
            .await
            .unwrap_or_default();
        response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    })
}

/// The supervisor.yaml the collector DaemonSet mounts.
fn supervisor_yaml() -> (String, Value) {
    let text = std::fs::read_to_string(root().join("deploy/collector/supervisor.yaml")).unwrap();
    let value: Value = serde_saphyr::from_str(&text).unwrap();
    (text, value)
}

/// The file a container's `--config` names, as the ConfigMap mounted there holds it.
fn mounted_config(objects: &[Value], workload: &Value) -> (String, String) {
    let c = container(workload);
    let args = strings(&c["args"]);
    let config = flag(&args, "config").expect("--config");
    let (dir, file) = config.rsplit_once('/').unwrap();
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("{dir} is mounted"));
    let volume = workload["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let map = object(objects, "ConfigMap", volume["configMap"]["name"].as_str());
    (
        file.to_owned(),
        map["data"][file]
            .as_str()
            .expect("the file in the ConfigMap")
            .to_owned(),
    )
}

/// The Service the collectors reach, as `ws://NAME.NAMESPACE.svc:PORT/v1/opamp`.
fn server_endpoint() -> String {
    let base = render("deploy/kubernetes/base");
    let service = object(&base, "Service", None);
    let port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "opamp")
        .unwrap()["port"]
        .clone();
    format!(
        "ws://{}.{}.svc:{port}/v1/opamp",
        service["metadata"]["name"].as_str().unwrap(),
        service["metadata"]["namespace"].as_str().unwrap()
    )
}

#[test]
fn the_collector_daemonset_runs_the_supervisor_with_the_shipped_supervisor_yaml() {
    let (text, supervisor) = supervisor_yaml();
    let objects = render("deploy/collector");
    let daemonset = object(&objects, "DaemonSet", None);
    let (file, mounted) = mounted_config(&objects, daemonset);
    assert_eq!(file, "supervisor.yaml");
    assert_eq!(
        mounted, text,
        "the ConfigMap is generated from the one file"
    );

    // It accepts remote config and reports what it applied, at the server's Service.
    let caps = &supervisor["capabilities"];
    assert_eq!(caps["accepts_remote_config"], true);
    assert_eq!(caps["reports_remote_config"], true);
    assert_eq!(supervisor["server"]["endpoint"], server_endpoint().as_str());

    // The instance uid survives restarts: the storage directory is on the node.
    let storage = supervisor["storage"]["directory"].as_str().unwrap();
    let c = container(daemonset);
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == storage)
        .expect("the storage directory is a volume");
    let volume = daemonset["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["hostPath"]["path"], storage, "{volume}");

    // The token header's variable comes from a Secret.
    let header = supervisor["server"]["headers"]["Authorization"][0]
        .as_str()
        .unwrap();
    assert_eq!(header, "Bearer ${env:OPAMP_GITOPS_AGENT_TOKEN}");
    let token = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "OPAMP_GITOPS_AGENT_TOKEN")
        .expect("the token variable");
    assert!(token["valueFrom"]["secretKeyRef"]["name"].is_string());

    // The image is the Supervisor over the contrib Collector at the path supervisor.yaml runs,
    // at the release the end-to-end test pins.
    let dockerfile = std::fs::read_to_string(root().join("deploy/collector/Dockerfile")).unwrap();
    assert_eq!(supervisor["agent"]["executable"], "/otelcol-contrib");
    assert!(dockerfile.contains("\nFROM otel/opentelemetry-collector-contrib:${OTELCOL_VERSION}\n"));
    let version = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ARG OTELCOL_VERSION="))
        .unwrap();
    let go_mod = std::fs::read_to_string(root().join("tests/reference/collector/go.mod")).unwrap();
    assert!(
        go_mod.contains(&format!("extension/opampextension v{version}\n")),
        "the image is the release tests/reference pins"
    );
    let (_, tag) = container(daemonset)["image"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap();
    assert_eq!(tag, version);
}

#[test]
fn the_extension_only_collector_reports_to_the_same_server_and_accepts_no_config() {
    let objects = render("deploy/collector/extension-only");
    let daemonset = object(&objects, "DaemonSet", None);
    let (file, mounted) = mounted_config(&objects, daemonset);
    let shipped =
        std::fs::read_to_string(root().join("deploy/collector/extension-only").join(&file))
            .unwrap();
    assert_eq!(mounted, shipped);
    let config: Value = serde_saphyr::from_str(&shipped).unwrap();
    let opamp = &config["extensions"]["opamp"];
    assert_eq!(
        opamp["server"]["ws"]["endpoint"],
        server_endpoint().as_str()
    );
    assert_eq!(
        opamp["server"]["ws"]["headers"]["Authorization"],
        "Bearer ${env:OPAMP_GITOPS_AGENT_TOKEN}"
    );
    assert!(
        opamp["capabilities"].get("accepts_remote_config").is_none(),
        "the extension only reports"
    );
    let extensions = strings(&config["service"]["extensions"]);
    assert!(extensions.contains(&"opamp".to_owned()), "{extensions:?}");
}

#[test]
fn the_readme_overlay_of_your_own_renders_with_your_image_and_repository() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = "cat > my-opamp/kustomization.yaml <<'YAML'\n";
    let body = &readme[readme.find(start).expect("the README's own overlay") + start.len()..];
    let body = &body[..body.find("\nYAML\n").expect("the heredoc's end") + 1];
    // Beside a `deploy` directory, as in a clone.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root().join("deploy"), dir.path().join("deploy")).unwrap();
    std::fs::create_dir(dir.path().join("my-opamp")).unwrap();
    std::fs::write(dir.path().join("my-opamp/kustomization.yaml"), body).unwrap();
    let objects = kustomize(&dir.path().join("my-opamp"));
    assert_valid("the README's overlay", &objects);
    let deployment = object(&objects, "Deployment", None);
    assert_eq!(
        container(deployment)["image"],
        format!(
            "registry.example.com/opamp-gitops:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    let launch = Launch::of(&objects, deployment, |_, _| String::new());
    assert_eq!(
        launch.env_value("OPAMP_GITOPS_REPO"),
        Some("https://github.com/acme/collector-configs.git")
    );
}
