//! The OpenAPI 3.1 document of the admin API, `GET /api/openapi.json`, generated from the
//! handlers' `#[utoipa::path]` annotations and the response types' schemas, and the JSON error
//! body every `/api/*` failure answers with.

use super::{api, history, rollout};
use axum::Json;
use serde::Serialize;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OneOfBuilder, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error of the API: `{"error": "..."}` with a fitting status.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in words meant for the operator.
    pub error: String,
}

/// A mutating request was taken; its effect follows asynchronously.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub accepted: bool,
}

impl Accepted {
    pub fn yes() -> Accepted {
        Accepted { accepted: true }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "opamp-gitops admin API",
        description = "The fleet, its revisions and rollouts, and the operator's actions. \
            Mutating endpoints need `Authorization: Bearer <admin token>`; with \
            `--admin-read-auth` the reading ones do too.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        api::agents, api::summary, api::attribute_sets, api::agent, api::forget, api::push,
        api::restart, api::rules, api::events, history::agent, history::revision_agents,
        rollout::list, rollout::pause, rollout::resume, rollout::promote,
        super::revision, super::refresh, super::healthz, super::readyz, openapi_json,
        super::version::get,
    ),
    components(schemas(crate::audit::AuditKind)),
    modifiers(&AdminToken),
    tags(
        (name = "agents", description = "The fleet's agents and the actions on one"),
        (name = "revisions", description = "The current revision, its rules, and who runs a revision"),
        (name = "rollout", description = "Staged rollouts of the current revision"),
        (name = "events", description = "The audit trail"),
        (name = "probes", description = "Liveness and readiness"),
    ),
)]
pub struct ApiDoc;

/// The `admin_token` security scheme the mutating operations name.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A token of --admin-token-file"))
                    .build(),
            ),
        );
    }
}

/// The schema of `FleetCounts::by_status`: `[status, count]` pairs, every status in a fixed order.
pub fn status_counts() -> impl Into<RefOr<Schema>> {
    let pair = ArrayBuilder::new()
        .items(
            OneOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)))
                .item(
                    ObjectBuilder::new()
                        .schema_type(SchemaType::Type(Type::Integer))
                        .minimum(Some(0)),
                ),
        )
        .min_items(Some(2))
        .max_items(Some(2));
    ArrayBuilder::new()
        .items(pair)
        .description(Some("`[status, count]` for every status, 0 included"))
}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(get, path = "/api/openapi.json", operation_id = "getOpenApi", tag = "revisions",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
