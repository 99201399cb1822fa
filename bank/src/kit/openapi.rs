//! A service's contract as an OpenAPI 3.1 document, made from its code: aide
//! records every route as it is added ([`ApiRouter::api_route`]), reads what
//! each handler takes from its extractors (path and query parameters, the JSON
//! body's type, the `Idempotency-Key` header, and the refusals each of those
//! can answer), and schemars turns the types into JSON Schemas. A route's own
//! answers and business refusals are declared beside it with [`Document`].
//!
//! aide over utoipa: aide builds the document from the router itself, so a
//! route cannot be served without being described, and it uses schemars, the
//! same crate behind the events' contracts (`wire::payloads`); utoipa has its
//! own schema derive and a path macro per handler kept by hand beside the route.
//!
//! Served at `/openapi.json`; the gateway's is the whole bank's.

use std::collections::BTreeMap;

use aide::generate::GenContext;
use aide::openapi::{
    HeaderStyle, MediaType, Operation, Parameter, ParameterData, ParameterSchemaOrContent, ReferenceOr, RequestBody,
    Response, SchemaObject, StatusCode,
};
use aide::operation::{OperationInput, OperationOutput, add_parameters, set_body};
use aide::transform::TransformOperation;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Serialize;

use super::Kit;
use super::error::{ApiError, PROBLEM_JSON};
use super::hal::{HAL_JSON, Hal};
use super::http::{ApiJson, ApiQuery, IDEMPOTENCY_HEADER, MaybeIdempotencyKey, OptionalJson, TraceId};
use crate::domain::IdempotencyKey;

pub use aide::axum::routing::{get_with, post_with};

use aide::axum::ApiRouter;
use aide::axum::routing::ApiMethodRouter;

/// A service's routes. The only way to add one is with its description
/// ([`Routes::api_route`]), so no route is served that the service's
/// document does not describe; the paths are kept, for the test that checks
/// the document has each. (Its one exception, the gateway's proxy, is
/// described by the services it reaches: [`Routes::described_by_the_services`].)
#[must_use]
pub struct Routes {
    router: ApiRouter<Kit>,
    paths: Vec<String>,
    proxied: Vec<String>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes").field("paths", &self.paths).field("proxied", &self.proxied).finish()
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

impl Routes {
    pub fn new() -> Self {
        Self { router: ApiRouter::new(), paths: Vec::new(), proxied: Vec::new() }
    }

    /// Serve `path` with `methods`, each described (`get_with`, `post_with`).
    pub fn api_route(mut self, path: &str, methods: ApiMethodRouter<Kit>) -> Self {
        self.router = self.router.api_route(path, methods);
        self.paths.push(path.to_string());
        self
    }

    /// The gateway's proxy routes: whatever they reach is described by the
    /// documents of the services behind them, which the gateway's document joins.
    pub fn described_by_the_services(mut self, path: &str, methods: axum::routing::MethodRouter<Kit>) -> Self {
        self.router = self.router.route(path, methods);
        self.proxied.push(path.to_string());
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.paths.extend(other.paths);
        self.proxied.extend(other.proxied);
        self
    }

    /// Every path served with its own description.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// The router, and the document of its routes.
    pub(crate) fn finish(self, api: &mut aide::openapi::OpenApi, title: &str) -> axum::Router<Kit> {
        self.router.finish_api_with(api, |doc| {
            doc.title(title).version(env!("CARGO_PKG_VERSION")).description(super::DOCUMENT_DESCRIPTION)
        })
    }
}

/// A link of a HAL resource.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Link {
    /// An absolute URL; a URI template (RFC 6570) when `templated` is true.
    pub href: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub templated: Option<bool>,
    /// The HTTP method of an action (a link that changes something).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The media type of a resource that is not HAL (`application/json`, Prometheus' text).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// A resource's links by relation: always `self` and `discovery` (the
/// service's front page); the others are listed in the resource's description.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Links {
    #[serde(rename = "self")]
    pub this: Link,
    pub discovery: Link,
    #[serde(flatten)]
    pub others: BTreeMap<String, Link>,
}

/// A HAL resource: its state `T` and its links.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "{T}")]
pub struct Resource<T> {
    #[serde(flatten)]
    pub state: T,
    #[serde(rename = "_links")]
    pub links: Links,
}

/// A HAL collection: how many items it holds, its links (`next` where it
/// pages), and the items under `_embedded` (absent when there are none).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "{T}List")]
pub struct List<T> {
    pub count: u64,
    #[serde(rename = "_links")]
    pub links: Links,
    /// The items, under their relation's name (`customers`, `payments`, ...).
    #[serde(rename = "_embedded", skip_serializing_if = "Option::is_none")]
    pub embedded: Option<BTreeMap<String, Vec<Resource<T>>>>,
}

/// A refusal or failure (RFC 9457): every non-2xx answer of the bank.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Problem {
    /// `urn:problem:bank:<kind>`, e.g. `urn:problem:bank:insufficient-funds`.
    #[serde(rename = "type")]
    #[schemars(pattern(r"^urn:problem:bank:[a-z0-9-]+$"))]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    #[schemars(range(min = 400, max = 599))]
    pub status: u16,
    /// What was wrong and what to do.
    pub detail: String,
}

/// How a route describes its own answers and refusals, beside what its
/// extractors already said.
pub trait Document: Sized {
    /// Answers `status` with the HAL resource `T` (its `_links` included).
    fn answers<T: JsonSchema>(self, status: u16, description: &str) -> Self;
    /// Answers `status` with a body of `media_type` that is not HAL.
    fn answers_as<T: JsonSchema>(self, status: u16, media_type: &str, description: &str) -> Self;
    /// May refuse with `status` (problem+json), for `why`.
    fn refuses(self, status: u16, why: &str) -> Self;
    /// After a `status` answer, the operation `operation_id` of this service
    /// can follow, its `parameter` the answer's `id`: an OpenAPI link, which
    /// a client (or a stateful fuzzer) follows from what it created to it.
    fn leads_to(self, status: u16, operation_id: &str, parameter: &str) -> Self;
    /// A provider's webhook, behind the kit's signature guard
    /// (`kit::webhooks`): says how it is signed (then `more`), and the 401
    /// and 413 the guard answers before any handler.
    fn signed_webhook(self, more: &str) -> Self;
    /// May answer 503 when every database connection stays busy (Retry-After: 1).
    fn busy(self) -> Self {
        self.refuses(503, "Every database connection of the service stayed busy; retry after a second")
    }
}

impl Document for TransformOperation<'_> {
    fn answers<T: JsonSchema>(self, status: u16, description: &str) -> Self {
        self.answers_as::<T>(status, HAL_JSON, description)
    }

    fn answers_as<T: JsonSchema>(mut self, status: u16, media_type: &str, description: &str) -> Self {
        let response = aide::generate::in_context(|ctx| body_response::<T>(ctx, media_type, description));
        respond(self.inner_mut(), status, response);
        self
    }

    fn leads_to(mut self, status: u16, operation_id: &str, parameter: &str) -> Self {
        let responses = self.inner_mut().responses.get_or_insert_with(Default::default);
        if let Some(ReferenceOr::Item(response)) = responses.responses.get_mut(&StatusCode::Code(status)) {
            let link = aide::openapi::Link {
                description: None,
                operation: aide::openapi::LinkOperation::OperationId(operation_id.into()),
                request_body: None,
                parameters: IndexMap::from_iter([(parameter.to_string(), "$response.body#/id".into())]),
                server: None,
                extensions: IndexMap::default(),
            };
            response.links.insert(operation_id.to_string(), ReferenceOr::Item(link));
        }
        self
    }

    fn signed_webhook(self, more: &str) -> Self {
        let signed = format!(
            "Believed only when signed: `{}: t=<unix>,v1=<HMAC-SHA256 of \"<t>.<body>\">`.{}{more}",
            wire::SIGNATURE_HEADER,
            if more.is_empty() { "" } else { " " }
        );
        self.description(&signed)
            .refuses(401, "The signature is missing, malformed, stale or does not match the body")
            .refuses(413, &format!("The body is larger than {} KiB", super::webhooks::MAX_BODY / 1024))
    }

    fn refuses(mut self, status: u16, why: &str) -> Self {
        let responses = self.inner_mut().responses.get_or_insert_with(Default::default);
        // A status refused for several reasons lists each.
        if let Some(ReferenceOr::Item(known)) = responses.responses.get_mut(&StatusCode::Code(status)) {
            if !known.description.contains(why) {
                known.description = format!("{}; {why}", known.description);
            }
            return self;
        }
        let response = aide::generate::in_context(|ctx| problem(ctx, why));
        respond(self.inner_mut(), status, response);
        self
    }
}

fn respond(operation: &mut Operation, status: u16, response: Response) {
    let responses = operation.responses.get_or_insert_with(Default::default);
    responses.responses.insert(StatusCode::Code(status), ReferenceOr::Item(response));
}

fn body_response<T: JsonSchema>(ctx: &mut GenContext, media_type: &str, description: &str) -> Response {
    let schema = ctx.schema.subschema_for::<T>();
    Response {
        description: description.into(),
        content: IndexMap::from_iter([(
            media_type.into(),
            MediaType {
                schema: Some(SchemaObject { json_schema: schema, example: None, external_docs: None }),
                ..Default::default()
            },
        )]),
        ..Default::default()
    }
}

fn problem(ctx: &mut GenContext, why: &str) -> Response {
    body_response::<Problem>(ctx, PROBLEM_JSON, why)
}

fn early(ctx: &mut GenContext, refusals: &[(u16, &str)]) -> Vec<(Option<StatusCode>, Response)> {
    refusals.iter().map(|(status, why)| (Some(StatusCode::Code(*status)), problem(ctx, why))).collect()
}

// What each extractor contributes: its parameters or body, and the refusals
// it answers before the handler runs.

impl<T: JsonSchema> OperationInput for ApiJson<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        json_body::<T>(ctx, operation, true);
    }

    fn inferred_early_responses(ctx: &mut GenContext, _: &mut Operation) -> Vec<(Option<StatusCode>, Response)> {
        early(
            ctx,
            &[
                (400, "The body is not JSON, or larger than the service reads"),
                (415, "The body is not sent as `Content-Type: application/json`"),
                (422, "The JSON does not have the request's shape (the detail names the field)"),
            ],
        )
    }
}

impl<T: JsonSchema> OperationInput for OptionalJson<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        json_body::<T>(ctx, operation, false);
    }

    fn inferred_early_responses(ctx: &mut GenContext, _: &mut Operation) -> Vec<(Option<StatusCode>, Response)> {
        early(
            ctx,
            &[
                (400, "The body is not JSON, or larger than the service reads"),
                (422, "The JSON does not have the request's shape (the detail names the field)"),
            ],
        )
    }
}

fn json_body<T: JsonSchema>(ctx: &mut GenContext, operation: &mut Operation, required: bool) {
    let schema = ctx.schema.subschema_for::<T>();
    let description = ctx.resolve_schema(&schema).get("description").and_then(|d| d.as_str()).map(String::from);
    let body = RequestBody {
        description,
        content: IndexMap::from_iter([(
            "application/json".into(),
            MediaType {
                schema: Some(SchemaObject { json_schema: schema, example: None, external_docs: None }),
                ..Default::default()
            },
        )]),
        required,
        extensions: IndexMap::default(),
    };
    set_body(ctx, operation, body);
}

impl<T: JsonSchema> OperationInput for ApiQuery<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        let schema = ctx.schema.subschema_for::<T>();
        let params = aide::operation::parameters_from_schema(ctx, schema, aide::operation::ParamLocation::Query);
        add_parameters(ctx, operation, params);
    }

    fn inferred_early_responses(ctx: &mut GenContext, _: &mut Operation) -> Vec<(Option<StatusCode>, Response)> {
        early(ctx, &[(400, "A query parameter is unknown, not of its type, or holds a control character")])
    }
}

impl OperationInput for IdempotencyKey {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        idempotency_header(ctx, operation, true);
    }

    fn inferred_early_responses(ctx: &mut GenContext, _: &mut Operation) -> Vec<(Option<StatusCode>, Response)> {
        early(
            ctx,
            &[
                (400, "The `Idempotency-Key` header is missing or not 1 to 255 printable ASCII characters"),
                (
                    409,
                    "The `Idempotency-Key` was used before with a different request, or that request is still running",
                ),
            ],
        )
    }
}

impl OperationInput for MaybeIdempotencyKey {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        idempotency_header(ctx, operation, false);
    }

    fn inferred_early_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<StatusCode>, Response)> {
        IdempotencyKey::inferred_early_responses(ctx, operation)
    }
}

fn idempotency_header(ctx: &mut GenContext, operation: &mut Operation, required: bool) {
    // 1 to 255 printable ASCII characters (`domain::IdempotencyKey`).
    let schema = schemars::json_schema!({ "type": "string", "pattern": "^[\\x20-\\x7E]{1,255}$" });
    let header = Parameter::Header {
        parameter_data: ParameterData {
            name: "Idempotency-Key".into(),
            description: Some(format!(
                "Any unique string (1 to 255 printable ASCII characters). A request sent again with the same `{IDEMPOTENCY_HEADER}` is answered as the first was and changes nothing more{}",
                if required { "" } else { "; without one, every request creates anew" }
            )),
            required,
            format: ParameterSchemaOrContent::Schema(SchemaObject {
                json_schema: schema,
                example: None,
                external_docs: None,
            }),
            extensions: IndexMap::default(),
            deprecated: None,
            example: None,
            examples: IndexMap::default(),
            explode: None,
        },
        style: HeaderStyle::Simple,
    };
    add_parameters(ctx, operation, [header]);
}

impl OperationInput for super::hal::BaseUrl {}
impl OperationInput for TraceId {}

// Answers are declared per route ([`Document`]); these types only say that
// they are answers.
impl OperationOutput for Hal {
    type Inner = ();
}
impl OperationOutput for ApiError {
    type Inner = ();
}

/// The id in a resource's path (`/payments/{id}`).
#[derive(Debug, serde::Deserialize, JsonSchema)]
pub struct Id {
    /// The resource's id (a UUID, as its links give it).
    pub id: String,
}
