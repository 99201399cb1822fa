//! `GET` on a service's own records (customers, payments, top-ups): one by id,
//! or the collection, the newest first, optionally those of one account, so
//! that a client following the discovery resource's links finds something to
//! read at every link.

use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::postgres::PgRow;

use super::Kit;
use super::error::{ApiError, ApiResult};
use super::hal::{BaseUrl, Hal};
use super::http::parse_id;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recent {
    /// An account's URL (as the accounts service gives it): only its records.
    account: Option<String>,
    /// Records at most (default 50).
    #[schemars(range(min = 1, max = 500))]
    limit: Option<i64>,
}

/// Where the records live: `table`, whose `account_column` (if any) holds the
/// account URL that `?account=` filters on.
pub struct Collection {
    /// What one record is called in errors (`payment`, `top-up`).
    pub noun: &'static str,
    pub path: &'static str,
    pub rel: &'static str,
    pub table: &'static str,
    pub account_column: Option<&'static str>,
    pub item: fn(&BaseUrl, &PgRow) -> ApiResult<Hal>,
}

/// The record with `id`, or a 404 naming it.
pub async fn one(kit: &Kit, base: &BaseUrl, c: &Collection, id: &str) -> ApiResult<Hal> {
    let id = parse_id(id, c.noun)?;
    // `table` is a compile-time name, never input.
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {} WHERE id = $1", c.table)))
        .bind(id)
        .fetch_optional(&kit.pool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{} `{id}`", c.noun)))?;
    (c.item)(base, &row)
}

pub async fn recent(kit: &Kit, base: &BaseUrl, c: &Collection, q: Recent) -> ApiResult<Hal> {
    let limit = q.limit.unwrap_or(50);
    let account_column = match (c.account_column, &q.account) {
        (Some(column), _) => column,
        (None, None) => "NULL",
        (None, Some(_)) => {
            return Err(ApiError::bad_request("bad-query", format!("{} cannot be filtered by account", c.path)));
        }
    };
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("bad-limit", "`limit` must be between 1 and 500"));
    }
    // `table` and `account_column` are compile-time names, never input.
    let sql = format!(
        "SELECT * FROM {} WHERE ($1::text IS NULL OR {} = $1) ORDER BY created_at DESC LIMIT $2",
        c.table, account_column
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&q.account).bind(limit).fetch_all(&kit.pool).await?;
    let items = rows.iter().map(|r| (c.item)(base, r).map(Hal::into_value)).collect::<ApiResult<Vec<Value>>>()?;
    Ok(Hal::new(base, c.path, json!({ "count": items.len() })).embed(c.rel, items))
}
