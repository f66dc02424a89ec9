//! The throwaway PostgreSQL cluster scripts/test.sh starts (scripts/postgres.sh): a database of
//! its own for each test. A test that needs it fails when it is missing, never skips.

use tokio_postgres::{Client, NoTls};

/// The cluster's admin URL, or a failure that says how to get one.
pub fn admin_url() -> String {
    std::env::var("OPAMP_GITOPS_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "OPAMP_GITOPS_TEST_POSTGRES_URL is not set: run the tests through scripts/test.sh, \
             or start a cluster with `scripts/postgres.sh start` and export the URL it prints"
        )
    })
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to the test PostgreSQL: {e}"));
    tokio::spawn(connection);
    client
}

/// A new, empty database; its URL (with the password).
pub async fn database() -> String {
    let admin = admin_url();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    connect(&admin)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    with_database(&admin, &name)
}

/// `url` pointing at database `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{name}")
}

/// `url` without its password, and the password.
pub fn split_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, host) = rest.split_once('@').expect("a user in the URL");
    let (user, password) = userinfo.split_once(':').expect("a password in the URL");
    (format!("{scheme}://{user}@{host}"), password.to_owned())
}

/// A PostgreSQL cluster of one test's own (scripts/postgres.sh), for tests that stop and start
/// it; removed on drop.
pub struct PrivateCluster {
    pub dir: String,
    pub url: String,
}

fn script(args: &[&str]) -> String {
    let output = std::process::Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres.sh"),
    )
    .args(args)
    .output()
    .expect("run scripts/postgres.sh");
    assert!(
        output.status.success(),
        "scripts/postgres.sh {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl PrivateCluster {
    pub fn start() -> PrivateCluster {
        // The shared cluster's presence says PostgreSQL is meant to be here.
        admin_url();
        let out = script(&["start"]);
        let (dir, url) = out.split_once(' ').expect("DIR URL");
        PrivateCluster {
            dir: dir.to_owned(),
            url: url.to_owned(),
        }
    }

    /// Stops the server, keeping its data.
    pub fn pause(&self) {
        script(&["pause", &self.dir]);
    }

    pub fn resume(&self) {
        script(&["resume", &self.dir]);
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres.sh"),
        )
        .args(["stop", &self.dir])
        .output();
    }
}
