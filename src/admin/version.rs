//! What this binary is: its version, the commit it was built from and its build date, the same
//! for `--version`, `GET /api/version` and the `build_info` metric (build.rs computes them).

use axum::Json;
use serde::Serialize;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = crate::metrics::COMMIT;
/// RFC 3339 UTC; from `SOURCE_DATE_EPOCH` when the build set it.
pub const BUILD_DATE: &str = env!("OPAMP_GITOPS_BUILD_DATE");

/// `opamp-gitops --version` (after the program name).
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("OPAMP_GITOPS_COMMIT"),
    "\nbuild date: ",
    env!("OPAMP_GITOPS_BUILD_DATE"),
);

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BuildVersion {
    pub version: &'static str,
    pub commit: &'static str,
    pub build_date: &'static str,
}

pub const BUILD: BuildVersion = BuildVersion {
    version: VERSION,
    commit: COMMIT,
    build_date: BUILD_DATE,
};

/// `GET /api/version`.
#[utoipa::path(get, path = "/api/version", operation_id = "getVersion", tag = "revisions",
    responses((status = 200, description = "The server's version, commit and build date", body = BuildVersion)))]
pub async fn get() -> Json<BuildVersion> {
    Json(BUILD)
}
