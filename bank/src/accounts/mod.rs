//! The accounts service: customers, GBP current accounts, balances, postings,
//! holds (reserve, capture, release) and credits. Every other service moves money
//! only through it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;
use wire::payloads::{AccountCredited, AccountOpened, Amount, CustomerCreated, HoldCaptured, HoldPlaced, HoldReleased};

use crate::domain::{AccountNumber, Currency, IdempotencyKey, Money, MoneyInput, SortCode, amount};
use crate::kit::error::{ApiError, ApiResult, to_json};
use crate::kit::events::{self, NewEvent};
use crate::kit::hal::{self, BaseUrl, Hal, rfc3339};
use crate::kit::http::{ApiJson, ApiQuery, MaybeIdempotencyKey, OptionalJson, TraceId, parse_id};
use crate::kit::idempotency::{Fingerprint, once, once_stored};
use crate::kit::openapi::{Document, Id, List, Resource, Routes, get_with, post_with};
use crate::kit::{Kit, ServiceSpec, listing};

/// This bank's sort code: every account it opens has it.
pub const SORT_CODE: &str = "040004";

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "accounts",
    migrations: &[(100, "accounts", include_str!("migrations/0100_accounts.sql"))],
    // A URI template (RFC 6570): a client fills in the bank details it looks for.
    links: &[("customers", "/customers"), ("find-account", "/accounts{?sort_code,account_number}")],
    actions: &[("create-customer", "/customers")],
    router,
    document: crate::kit::own_document,
    start: crate::kit::no_background_work,
};

fn router() -> Routes {
    let no_account = "No account with this id";
    Routes::new()
        .api_route(
            "/customers",
            get_with(list_customers, |op| {
                op.id("listCustomers")
                    .summary("The newest customers")
                    .answers::<List<Customer>>(200, "Customers, the newest first, under `customers`")
                    .refuses(400, "`limit` is not 1 to 500, or `account` was given (customers have none)")
                    .busy()
            })
            .post_with(create_customer, |op| {
                op.id("createCustomer")
                    .summary("Take on a customer")
                    .answers::<Resource<Customer>>(201, "The customer, with its `open-account` action")
                    .leads_to(201, "getCustomer", "id")
                    .leads_to(201, "openAccount", "id")
                    .leads_to(201, "listCustomerAccounts", "id")
                    .refuses(422, "`name` is blank or longer than 200 characters, or `email` has no `@`")
                    .busy()
            }),
        )
        .api_route(
            "/customers/{id}",
            get_with(get_customer, |op| {
                op.id("getCustomer")
                    .summary("A customer")
                    .answers::<Resource<Customer>>(200, "The customer")
                    .refuses(404, "No customer with this id")
                    .busy()
            }),
        )
        .api_route(
            "/customers/{id}/accounts",
            get_with(list_customer_accounts, |op| {
                op.id("listCustomerAccounts")
                    .summary("A customer's accounts, the oldest first")
                    .answers::<List<Account>>(200, "The accounts, under `accounts`")
                    .refuses(404, "No customer with this id")
                    .busy()
            })
            .post_with(open_account, |op| {
                op.id("openAccount")
                    .summary("Open a GBP current account for the customer (an empty body opens one in GBP)")
                    .answers::<Resource<Account>>(201, "The account, with its bank details and balances")
                    .leads_to(201, "getAccount", "id")
                    .leads_to(201, "creditAccount", "id")
                    .leads_to(201, "placeHold", "id")
                    .leads_to(201, "listHolds", "id")
                    .leads_to(201, "listTransactions", "id")
                    .refuses(404, "No customer with this id")
                    .refuses(422, "`currency` is not GBP")
                    .busy()
            }),
        )
        .api_route(
            "/accounts",
            get_with(find_accounts, |op| {
                op.id("findAccount")
                    .summary("Find an account by its UK bank details")
                    .answers::<List<Account>>(200, "The account with these details, or none, under `accounts`")
                    .refuses(400, "`sort_code` or `account_number` is missing or malformed")
                    .busy()
            }),
        )
        .api_route(
            "/accounts/{id}",
            get_with(get_account, |op| {
                op.id("getAccount")
                    .summary("An account: its bank details, balance, held and available funds")
                    .answers::<Resource<Account>>(200, "The account, with its `credit` and `place-hold` actions")
                    .refuses(404, no_account)
                    .busy()
            }),
        )
        .api_route(
            "/accounts/{id}/transactions",
            get_with(list_transactions, |op| {
                op.id("listTransactions")
                    .summary("The account's postings, the oldest first, a page at a time")
                    .answers::<List<Transaction>>(200, "A page of postings under `transactions`, with a `next` link")
                    .refuses(400, "`limit` is not 1 to 1000, or `after` is negative")
                    .refuses(404, no_account)
                    .busy()
            }),
        )
        .api_route(
            "/accounts/{id}/transactions/{transaction}",
            get_with(get_transaction, |op| {
                op.id("getTransaction")
                    .summary("One posting of the account")
                    .answers::<Resource<Transaction>>(200, "The posting")
                    .refuses(404, "No such posting on this account")
                    .busy()
            }),
        )
        .api_route(
            "/accounts/{id}/credits",
            post_with(credit, |op| {
                op.id("creditAccount")
                    .summary("Credit the account (money arriving from outside the bank)")
                    .answers::<Resource<Transaction>>(201, "The credit's posting")
                    .refuses(404, no_account)
                    .refuses(422, "The amount is not 1 to 10^12 minor units, not in the account's currency, or the reference is longer than 140 characters")
                    .busy()
            }),
        )
        .api_route(
            "/accounts/{id}/holds",
            get_with(list_holds, |op| {
                op.id("listHolds")
                    .summary("The account's holds, the oldest first")
                    .answers::<List<Hold>>(200, "The holds, under `holds`")
                    .refuses(404, no_account)
                    .busy()
            })
            .post_with(place_hold, |op| {
                op.id("placeHold")
                    .summary("Reserve funds on the account, to capture or release later")
                    .answers::<Resource<Hold>>(201, "The hold, with its `capture` and `release` actions")
                    .leads_to(201, "getHold", "id")
                    .leads_to(201, "captureHold", "id")
                    .leads_to(201, "releaseHold", "id")
                    .refuses(404, no_account)
                    .refuses(422, "Insufficient funds, or the amount is not 1 to 10^12 minor units in the account's currency, or the reference is longer than 140 characters")
                    .busy()
            }),
        )
        .api_route(
            "/holds/{id}",
            get_with(get_hold, |op| {
                op.id("getHold")
                    .summary("A hold")
                    .answers::<Resource<Hold>>(200, "The hold; while `held`, with its `capture` and `release` actions")
                    .refuses(404, "No hold with this id")
                    .busy()
            }),
        )
        .api_route(
            "/holds/{id}/capture",
            post_with(capture_hold, |op| {
                op.id("captureHold")
                    .summary("Capture a held hold: debit its account by its amount")
                    .answers::<Resource<Hold>>(200, "The hold, now `captured`")
                    .refuses(404, "No hold with this id")
                    .refuses(409, "The hold is already captured or released")
                    .busy()
            }),
        )
        .api_route(
            "/holds/{id}/release",
            post_with(release_hold, |op| {
                op.id("releaseHold")
                    .summary("Release a held hold: its funds are available again")
                    .answers::<Resource<Hold>>(200, "The hold, now `released`")
                    .refuses(404, "No hold with this id")
                    .refuses(409, "The hold is already captured or released")
                    .busy()
            }),
        )
}

/// A customer of the bank.
#[derive(Debug, Serialize, JsonSchema)]
struct Customer {
    id: Uuid,
    name: String,
    email: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    created_at: String,
}

/// A GBP current account: its UK bank details and its money.
#[derive(Debug, Serialize, JsonSchema)]
struct Account {
    id: Uuid,
    #[schemars(pattern(r"^[0-9]{2}-[0-9]{2}-[0-9]{2}$"))]
    sort_code: String,
    #[schemars(pattern(r"^[0-9]{8}$"))]
    account_number: String,
    #[schemars(pattern(r"^[A-Z]{3}$"))]
    currency: String,
    /// Posted money: credits less captured holds.
    balance: Amount,
    /// What can be spent: the balance less what is held.
    available: Amount,
    /// Reserved by holds not yet captured or released.
    held: Amount,
    #[schemars(extend("format" = "date-time"))]
    opened_at: String,
}

/// A posting: money in (`credit`) or out (`debit`, a captured hold).
#[derive(Debug, Serialize, JsonSchema)]
struct Transaction {
    id: Uuid,
    kind: PostingKind,
    amount: Amount,
    balance_after: Amount,
    reference: String,
    #[schemars(extend("format" = "date-time"))]
    created_at: String,
    /// Its place among the account's postings (the `after` of a page).
    seq: i64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum PostingKind {
    Credit,
    Debit,
}

/// Funds reserved on an account until captured or released.
#[derive(Debug, Serialize, JsonSchema)]
struct Hold {
    id: Uuid,
    status: HoldStatus,
    amount: Amount,
    reference: String,
    #[schemars(extend("format" = "date-time"))]
    created_at: String,
    #[schemars(extend("format" = "date-time"))]
    updated_at: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum HoldStatus {
    Held,
    Captured,
    Released,
}

/// The transaction path: the account's id and the posting's.
#[derive(Debug, Deserialize, JsonSchema)]
struct TransactionPath {
    /// The account's id.
    id: String,
    /// The posting's id.
    transaction: String,
}

// ---- customers ----

/// A customer to take on.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewCustomer {
    /// 1 to 200 characters, not blank.
    #[schemars(length(min = 1, max = 200), example = &"Erin Example")]
    name: String,
    /// An email address (it must hold an `@`).
    #[schemars(example = &"erin@example.com")]
    email: Option<String>,
}

fn customer_hal(base: &BaseUrl, row: &PgRow) -> ApiResult<Hal> {
    let id: Uuid = row.try_get("id")?;
    let created_at: OffsetDateTime = row.try_get("created_at")?;
    let state =
        Customer { id, name: row.try_get("name")?, email: row.try_get("email")?, created_at: rfc3339(created_at) };
    Ok(Hal::of(base, &format!("/customers/{id}"), &state)
        .link("accounts", &format!("/customers/{id}/accounts"))
        .action("open-account", "POST", &format!("/customers/{id}/accounts")))
}

async fn create_customer(
    State(kit): State<Kit>,
    base: BaseUrl,
    trace: TraceId,
    MaybeIdempotencyKey(key): MaybeIdempotencyKey,
    ApiJson(input): ApiJson<NewCustomer>,
) -> ApiResult<Response> {
    let name = input.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::unprocessable("invalid-name", "`name` must be 1 to 200 characters"));
    }
    if let Some(email) = &input.email
        && !email.contains('@')
    {
        return Err(ApiError::unprocessable("invalid-email", format!("`email` `{email}` is not an email address")));
    }
    let fp = Fingerprint::new("POST /customers", &input);
    once(&kit, key.as_ref(), fp, async |conn| {
        let row = sqlx::query("INSERT INTO customers (id, name, email) VALUES ($1, $2, $3) RETURNING *")
            .bind(Uuid::now_v7())
            .bind(name)
            .bind(&input.email)
            .fetch_one(&mut *conn)
            .await?;
        let hal = customer_hal(&base, &row)?.status(StatusCode::CREATED);
        let id: Uuid = row.try_get("id")?;
        let created = CustomerCreated { customer: base.url(&format!("/customers/{id}")), name: name.into() };
        events::append(&mut *conn, &trace, NewEvent::of(id.to_string(), &created)?).await?;
        Ok(hal)
    })
    .await
}

const CUSTOMERS: listing::Collection = listing::Collection {
    noun: "customer",
    path: "/customers",
    rel: "customers",
    table: "customers",
    account_column: None,
    item: customer_hal,
};

/// The newest customers: what an engineer exploring the sandbox looks at first.
async fn list_customers(
    State(kit): State<Kit>,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<listing::Recent>,
) -> ApiResult<Hal> {
    listing::recent(&kit, &base, &CUSTOMERS, q).await
}

async fn get_customer(State(kit): State<Kit>, base: BaseUrl, Path(Id { id }): Path<Id>) -> ApiResult<Hal> {
    listing::one(&kit, &base, &CUSTOMERS, &id).await
}

async fn customer_exists(conn: &mut PgConnection, id: Uuid) -> ApiResult<()> {
    let found: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM customers WHERE id = $1").bind(id).fetch_optional(conn).await?;
    found.map(|_| ()).ok_or_else(|| ApiError::not_found(format!("customer `{id}`")))
}

// ---- accounts ----

fn account_hal(base: &BaseUrl, row: &PgRow) -> ApiResult<Hal> {
    let id: Uuid = row.try_get("id")?;
    let customer: Uuid = row.try_get("customer_id")?;
    let currency =
        Currency::parse(row.try_get::<String, _>("currency")?.as_str()).map_err(|e| ApiError::Internal(e.into()))?;
    let balance: i64 = row.try_get("balance")?;
    let held: i64 = row.try_get("held")?;
    let sort_code =
        SortCode::parse(row.try_get::<String, _>("sort_code")?.as_str()).map_err(|e| ApiError::Internal(e.into()))?;
    let state = Account {
        id,
        sort_code: sort_code.display(),
        account_number: row.try_get("account_number")?,
        currency: currency.code().into(),
        balance: amount(balance, currency),
        available: amount(balance - held, currency),
        held: amount(held, currency),
        opened_at: rfc3339(row.try_get("opened_at")?),
    };
    Ok(Hal::of(base, &format!("/accounts/{id}"), &state)
        .link("customer", &format!("/customers/{customer}"))
        .link("transactions", &format!("/accounts/{id}/transactions"))
        .link("holds", &format!("/accounts/{id}/holds"))
        .action("credit", "POST", &format!("/accounts/{id}/credits"))
        .action("place-hold", "POST", &format!("/accounts/{id}/holds")))
}

/// The account to open (the body may be left out).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    /// ISO 4217; GBP (the default) is the only one this bank opens.
    #[schemars(extend("enum" = ["GBP", "EUR", "USD"]), example = &"GBP")]
    currency: Option<String>,
}

async fn open_account(
    State(kit): State<Kit>,
    base: BaseUrl,
    trace: TraceId,
    Path(Id { id: customer }): Path<Id>,
    MaybeIdempotencyKey(key): MaybeIdempotencyKey,
    OptionalJson(body): OptionalJson<NewAccount>,
) -> ApiResult<Response> {
    let customer = parse_id(&customer, "customer")?;
    let input = body.unwrap_or(NewAccount { currency: None });
    let currency = Currency::parse(input.currency.as_deref().unwrap_or("GBP"))
        .map_err(|e| ApiError::unprocessable("invalid-currency", e.to_string()))?;
    if currency != Currency::Gbp {
        return Err(ApiError::unprocessable(
            "unsupported-currency",
            format!("this bank opens GBP current accounts only, not {currency}"),
        ));
    }
    let fp = Fingerprint::new(format!("POST /customers/{customer}/accounts"), &input);
    once(&kit, key.as_ref(), fp, async |conn| {
        customer_exists(conn, customer).await?;
        let id = Uuid::now_v7();
        let row = sqlx::query(
            "INSERT INTO accounts (id, customer_id, sort_code, account_number, currency)
             VALUES ($1, $2, $3, nextval('account_numbers')::text, $4) RETURNING *",
        )
        .bind(id)
        .bind(customer)
        .bind(SORT_CODE)
        .bind(currency.code())
        .fetch_one(&mut *conn)
        .await?;
        let hal = account_hal(&base, &row)?.status(StatusCode::CREATED);
        let opened = AccountOpened {
            account: base.url(&format!("/accounts/{id}")),
            customer: base.url(&format!("/customers/{customer}")),
            sort_code: SortCode::parse(SORT_CODE).map(|s| s.display()).unwrap_or_default(),
            account_number: row.try_get("account_number")?,
            currency: currency.code().into(),
        };
        events::append(&mut *conn, &trace, NewEvent::of(id.to_string(), &opened)?).await?;
        Ok(hal)
    })
    .await
}

async fn get_account(State(kit): State<Kit>, base: BaseUrl, Path(Id { id }): Path<Id>) -> ApiResult<Hal> {
    let id = parse_id(&id, "account")?;
    let row = sqlx::query("SELECT * FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(&kit.pool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("account `{id}`")))?;
    account_hal(&base, &row)
}

async fn list_customer_accounts(State(kit): State<Kit>, base: BaseUrl, Path(Id { id }): Path<Id>) -> ApiResult<Hal> {
    let id = parse_id(&id, "customer")?;
    customer_exists(&mut *kit.pool.acquire().await?, id).await?;
    let rows = sqlx::query("SELECT * FROM accounts WHERE customer_id = $1 ORDER BY opened_at")
        .bind(id)
        .fetch_all(&kit.pool)
        .await?;
    collection(&base, &format!("/customers/{id}/accounts"), "accounts", &rows, account_hal)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FindAccounts {
    /// Six digits, with or without dashes (`04-00-04`, `040004`); required with `account_number`.
    #[schemars(pattern(r"^[0-9]{2}-?[0-9]{2}-?[0-9]{2}$"))]
    sort_code: Option<String>,
    /// Eight digits; required with `sort_code`.
    #[schemars(pattern(r"^[0-9]{8}$"))]
    account_number: Option<String>,
}

/// Look an account up by its UK bank details (how inbound payments find theirs).
async fn find_accounts(State(kit): State<Kit>, base: BaseUrl, ApiQuery(q): ApiQuery<FindAccounts>) -> ApiResult<Hal> {
    let (Some(sort_code), Some(account_number)) = (q.sort_code, q.account_number) else {
        return Err(ApiError::bad_request(
            "missing-query",
            "find an account with `?sort_code=04-00-04&account_number=12345678`; to list a customer's accounts follow the customer's `accounts` link",
        ));
    };
    let sort_code = SortCode::parse(&sort_code).map_err(|e| ApiError::bad_request("bad-sort-code", e.to_string()))?;
    let account_number = AccountNumber::parse(&account_number)
        .map_err(|e| ApiError::bad_request("bad-account-number", e.to_string()))?;
    let rows = sqlx::query("SELECT * FROM accounts WHERE sort_code = $1 AND account_number = $2")
        .bind(sort_code.digits())
        .bind(account_number.as_str())
        .fetch_all(&kit.pool)
        .await?;
    let path = format!("/accounts?sort_code={}&account_number={}", sort_code.digits(), account_number.as_str());
    collection(&base, &path, "accounts", &rows, account_hal)
}

fn collection(
    base: &BaseUrl,
    path: &str,
    rel: &str,
    rows: &[PgRow],
    item: fn(&BaseUrl, &PgRow) -> ApiResult<Hal>,
) -> ApiResult<Hal> {
    let items = rows.iter().map(|r| item(base, r).map(Hal::into_value)).collect::<ApiResult<Vec<Value>>>()?;
    Ok(Hal::new(base, path, json!({ "count": items.len() })).embed(rel, items))
}

/// Lock the account row for the rest of the transaction: every balance change
/// locks it first (here, or with the hold it settles in `settle`), so
/// concurrent postings to one account serialise.
async fn lock_account(conn: &mut PgConnection, id: Uuid) -> ApiResult<(Currency, i64, i64)> {
    let row = sqlx::query("SELECT currency, balance, held FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("account `{id}`")))?;
    let currency =
        Currency::parse(row.try_get::<String, _>("currency")?.as_str()).map_err(|e| ApiError::Internal(e.into()))?;
    Ok((currency, row.try_get("balance")?, row.try_get("held")?))
}

/// Money to credit or hold.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MoneyMovement {
    /// Whole minor units (pence), 1 to 10^12.
    #[schemars(range(min = 1, max = crate::domain::MAX_AMOUNT), example = 1000)]
    amount: i64,
    /// ISO 4217: the account's currency (GBP).
    #[schemars(extend("enum" = ["GBP", "EUR", "USD"]), example = &"GBP")]
    currency: String,
    /// Shown on the account's postings; at most 140 characters.
    #[schemars(length(max = 140), example = &"explorer")]
    reference: Option<String>,
}

impl MoneyMovement {
    fn parse(&self, account_currency: Currency) -> ApiResult<(Money, String)> {
        let money = Money::try_from(MoneyInput { amount: self.amount, currency: self.currency.clone() })
            .map_err(|e| ApiError::unprocessable("invalid-amount", e.to_string()))?;
        if money.currency != account_currency {
            return Err(ApiError::unprocessable(
                "currency-mismatch",
                format!("the account holds {account_currency}, the request is in {}", money.currency),
            ));
        }
        let reference = self.reference.clone().unwrap_or_default();
        if reference.len() > 140 {
            return Err(ApiError::unprocessable("invalid-reference", "`reference` must be at most 140 characters"));
        }
        Ok((money, reference))
    }
}

fn transaction_hal(base: &BaseUrl, row: &PgRow, currency: Currency) -> ApiResult<Hal> {
    let id: Uuid = row.try_get("id")?;
    let account: Uuid = row.try_get("account_id")?;
    let hold: Option<Uuid> = row.try_get("hold_id")?;
    let kind = match row.try_get::<String, _>("kind")?.as_str() {
        "credit" => PostingKind::Credit,
        _ => PostingKind::Debit,
    };
    let state = Transaction {
        id,
        kind,
        amount: amount(row.try_get("amount")?, currency),
        balance_after: amount(row.try_get("balance_after")?, currency),
        reference: row.try_get("reference")?,
        created_at: rfc3339(row.try_get("created_at")?),
        seq: row.try_get("seq")?,
    };
    let mut hal = Hal::of(base, &format!("/accounts/{account}/transactions/{id}"), &state)
        .link("account", &format!("/accounts/{account}"));
    if let Some(hold) = hold {
        hal = hal.link("hold", &format!("/holds/{hold}"));
    }
    Ok(hal)
}

async fn credit(
    State(kit): State<Kit>,
    base: BaseUrl,
    trace: TraceId,
    Path(Id { id: account }): Path<Id>,
    key: IdempotencyKey,
    ApiJson(input): ApiJson<MoneyMovement>,
) -> ApiResult<Response> {
    let account = parse_id(&account, "account")?;
    let fp = Fingerprint::new(format!("POST /accounts/{account}/credits"), &input);
    once(&kit, Some(&key), fp, async |conn| {
        let (currency, balance, _) = lock_account(conn, account).await?;
        let (money, reference) = input.parse(currency)?;
        let balance_after = balance.checked_add(money.amount).ok_or_else(|| {
            ApiError::unprocessable("balance-overflow", "the credit would overflow the account balance")
        })?;
        sqlx::query("UPDATE accounts SET balance = $2 WHERE id = $1")
            .bind(account)
            .bind(balance_after)
            .execute(&mut *conn)
            .await?;
        let row = sqlx::query(
            "INSERT INTO transactions (id, account_id, kind, amount, balance_after, reference)
             VALUES ($1, $2, 'credit', $3, $4, $5) RETURNING *",
        )
        .bind(Uuid::now_v7())
        .bind(account)
        .bind(money.amount)
        .bind(balance_after)
        .bind(&reference)
        .fetch_one(&mut *conn)
        .await?;
        let hal = transaction_hal(&base, &row, currency)?.status(StatusCode::CREATED);
        let credited = AccountCredited {
            account: base.url(&format!("/accounts/{account}")),
            transaction: row.try_get("id")?,
            amount: amount(money.amount, currency),
            balance_after: amount(balance_after, currency),
            reference,
        };
        events::append(&mut *conn, &trace, NewEvent::of(account.to_string(), &credited)?).await?;
        Ok(hal)
    })
    .await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Page {
    /// The `seq` of the last posting already read (default 0: from the first).
    #[schemars(range(min = 0))]
    after: Option<i64>,
    /// Postings at most in the page (default 100).
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<i64>,
}

async fn list_transactions(
    State(kit): State<Kit>,
    base: BaseUrl,
    Path(Id { id: account }): Path<Id>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<Hal> {
    let account = parse_id(&account, "account")?;
    let limit = page.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("bad-limit", "`limit` must be between 1 and 1000"));
    }
    let after = page.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::bad_request(
            "bad-cursor",
            "`after` must be the `seq` of a posting already read (0 or more)",
        ));
    }
    let mut conn = kit.pool.acquire().await?;
    let currency: String = sqlx::query_scalar("SELECT currency FROM accounts WHERE id = $1")
        .bind(account)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("account `{account}`")))?;
    let currency = Currency::parse(&currency).map_err(|e| ApiError::Internal(e.into()))?;
    let rows = sqlx::query("SELECT * FROM transactions WHERE account_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
        .bind(account)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    let last = rows.last().map(|r| r.try_get::<i64, _>("seq")).transpose()?.unwrap_or(after);
    let items =
        rows.iter().map(|r| transaction_hal(&base, r, currency).map(Hal::into_value)).collect::<ApiResult<Vec<_>>>()?;
    let path = format!("/accounts/{account}/transactions");
    Ok(Hal::new(&base, &format!("{path}?after={after}&limit={limit}"), json!({ "count": items.len() }))
        .link("account", &format!("/accounts/{account}"))
        .link("next", &format!("{path}?after={last}&limit={limit}"))
        .embed("transactions", items))
}

async fn get_transaction(
    State(kit): State<Kit>,
    base: BaseUrl,
    Path(TransactionPath { id, transaction }): Path<TransactionPath>,
) -> ApiResult<Hal> {
    let account = parse_id(&id, "account")?;
    let transaction = parse_id(&transaction, "transaction")?;
    let row = sqlx::query(
        "SELECT t.*, a.currency FROM transactions t JOIN accounts a ON a.id = t.account_id
         WHERE t.id = $1 AND t.account_id = $2",
    )
    .bind(transaction)
    .bind(account)
    .fetch_optional(&kit.pool)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("transaction `{transaction}` of account `{account}`")))?;
    let currency =
        Currency::parse(row.try_get::<String, _>("currency")?.as_str()).map_err(|e| ApiError::Internal(e.into()))?;
    transaction_hal(&base, &row, currency)
}

// ---- holds ----

/// A hold as its resource shows it.
struct HoldView {
    id: Uuid,
    account: Uuid,
    status: String,
    amount: i64,
    reference: String,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl HoldView {
    fn of(row: &PgRow) -> ApiResult<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            account: row.try_get("account_id")?,
            status: row.try_get("status")?,
            amount: row.try_get("amount")?,
            reference: row.try_get("reference")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

fn hold_hal(base: &BaseUrl, hold: &HoldView, currency: Currency) -> Hal {
    let id = hold.id;
    let status = match hold.status.as_str() {
        "held" => HoldStatus::Held,
        "captured" => HoldStatus::Captured,
        _ => HoldStatus::Released,
    };
    let state = Hold {
        id,
        status,
        amount: amount(hold.amount, currency),
        reference: hold.reference.clone(),
        created_at: rfc3339(hold.created_at),
        updated_at: rfc3339(hold.updated_at),
    };
    let mut hal =
        Hal::of(base, &format!("/holds/{id}"), &state).link("account", &format!("/accounts/{}", hold.account));
    if hold.status == "held" {
        hal = hal.action("capture", "POST", &format!("/holds/{id}/capture")).action(
            "release",
            "POST",
            &format!("/holds/{id}/release"),
        );
    }
    hal
}

/// The reservation (if the account holds the currency and the funds), the
/// hold and its event: one statement.
const PLACE_HOLD: &str = "reserve AS (
         UPDATE accounts SET held = held + $13
         WHERE id = $12 AND currency = $15 AND balance - held >= $13 RETURNING id
     ),
     change AS (
         INSERT INTO holds (id, account_id, amount, status, reference, created_at, updated_at)
         SELECT $11, id, $13, 'held', $14, $16, $16 FROM reserve RETURNING id
     )";

fn bind_hold<'q>(q: events::PgQuery<'q>, hold: &'q HoldView, currency: Currency) -> events::PgQuery<'q> {
    q.bind(hold.id)
        .bind(hold.account)
        .bind(hold.amount)
        .bind(&hold.reference)
        .bind(currency.code())
        .bind(hold.created_at)
}

/// Place a hold: one statement with its answer when the account has the
/// currency and the funds; otherwise the reasons are read with the account
/// locked, and the hold placed after all if the account changed in between.
async fn place_hold(
    State(kit): State<Kit>,
    base: BaseUrl,
    trace: TraceId,
    Path(Id { id: account }): Path<Id>,
    key: IdempotencyKey,
    ApiJson(input): ApiJson<MoneyMovement>,
) -> ApiResult<Response> {
    let account = parse_id(&account, "account")?;
    let fp = Fingerprint::new(format!("POST /accounts/{account}/holds"), &input);
    once_stored(&kit, &key, fp, async |remember| {
        // In the request's currency: the account must hold it, which the
        // reservation checks with the funds.
        let currency =
            Currency::parse(&input.currency).map_err(|e| ApiError::unprocessable("invalid-amount", e.to_string()))?;
        let (money, reference) = input.parse(currency)?;
        let now = hal::now();
        let hold = HoldView {
            id: Uuid::now_v7(),
            account,
            status: "held".into(),
            amount: money.amount,
            reference,
            created_at: now,
            updated_at: now,
        };
        let placed = HoldPlaced {
            account: base.url(&format!("/accounts/{account}")),
            hold: base.url(&format!("/holds/{}", hold.id)),
            amount: amount(money.amount, currency),
            reference: hold.reference.clone(),
        };
        let placed = NewEvent::of(account.to_string(), &placed)?;
        let answer = remember.answer(hold_hal(&base, &hold, currency).status(StatusCode::CREATED));
        let bind = |q| bind_hold(q, &hold, currency);
        if events::append_with(&kit.pool, &trace, &[&placed], Some(&answer), PLACE_HOLD, bind).await?.is_some() {
            return Ok(answer);
        }
        // Refused, or the key answered already (replayed then): why, read
        // with the account locked, so that the hold is placed after all if
        // the account changed in between.
        let mut tx = kit.begin().await?;
        let (held_currency, balance, held) = lock_account(&mut tx, account).await?;
        input.parse(held_currency)?;
        let available = balance - held;
        if money.amount > available {
            return Err(ApiError::unprocessable(
                "insufficient-funds",
                format!(
                    "insufficient funds: {} {} requested, {} {} available",
                    pence(money.amount),
                    currency,
                    pence(available),
                    currency
                ),
            ));
        }
        let bind = |q| bind_hold(q, &hold, currency);
        events::append_with(&mut *tx, &trace, &[&placed], Some(&answer), PLACE_HOLD, bind)
            .await?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("hold {} was not placed", hold.id)))?;
        tx.commit().await?;
        Ok(answer)
    })
    .await
}

async fn list_holds(State(kit): State<Kit>, base: BaseUrl, Path(Id { id: account }): Path<Id>) -> ApiResult<Hal> {
    let account = parse_id(&account, "account")?;
    let mut conn = kit.pool.acquire().await?;
    let (currency, _, _) = {
        let row = sqlx::query("SELECT currency FROM accounts WHERE id = $1")
            .bind(account)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("account `{account}`")))?;
        let c = Currency::parse(row.try_get::<String, _>("currency")?.as_str())
            .map_err(|e| ApiError::Internal(e.into()))?;
        (c, 0, 0)
    };
    let rows = sqlx::query("SELECT * FROM holds WHERE account_id = $1 ORDER BY created_at")
        .bind(account)
        .fetch_all(&mut *conn)
        .await?;
    let items = rows
        .iter()
        .map(|r| Ok(hold_hal(&base, &HoldView::of(r)?, currency).into_value()))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Hal::new(&base, &format!("/accounts/{account}/holds"), json!({ "count": items.len() }))
        .link("account", &format!("/accounts/{account}"))
        .embed("holds", items))
}

async fn get_hold(State(kit): State<Kit>, base: BaseUrl, Path(Id { id }): Path<Id>) -> ApiResult<Hal> {
    let id = parse_id(&id, "hold")?;
    let (hold, currency) = read_hold(&kit, id).await?;
    Ok(hold_hal(&base, &hold, currency))
}

/// The hold `id` as it is, in its account's currency; a 404 naming it when
/// there is none.
async fn read_hold(kit: &Kit, id: Uuid) -> ApiResult<(HoldView, Currency)> {
    let row = sqlx::query("SELECT h.*, a.currency FROM holds h JOIN accounts a ON a.id = h.account_id WHERE h.id = $1")
        .bind(id)
        .fetch_optional(&kit.pool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("hold `{id}`")))?;
    let currency =
        Currency::parse(row.try_get::<String, _>("currency")?.as_str()).map_err(|e| ApiError::Internal(e.into()))?;
    Ok((HoldView::of(&row)?, currency))
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    Capture,
    Release,
}

async fn capture_hold(
    State(kit): State<Kit>,
    base: BaseUrl,
    trace: TraceId,
    Path(Id { id }): Path<Id>,
    key: IdempotencyKey,
) -> ApiResult<Response> {
    settle(kit, base, trace, id, key, Settle::Capture).await
}

async fn release_hold(
    State(kit): State<Kit>,
    base: BaseUrl,
    trace: TraceId,
    Path(Id { id }): Path<Id>,
    key: IdempotencyKey,
) -> ApiResult<Response> {
    settle(kit, base, trace, id, key, Settle::Release).await
}

/// Capture (debit the account) or release (free the reservation) a hold: only a
/// hold still `held` can be settled, and only once.
async fn settle(
    kit: Kit,
    base: BaseUrl,
    trace: TraceId,
    id: String,
    key: IdempotencyKey,
    how: Settle,
) -> ApiResult<Response> {
    let id = parse_id(&id, "hold")?;
    let verb = match how {
        Settle::Capture => "capture",
        Settle::Release => "release",
    };
    let fp = Fingerprint::new(format!("POST /holds/{id}/{verb}"), &Value::Null);
    once_stored(&kit, &key, fp, async |remember| {
        // The hold as it is: what it settles (its amount, account and
        // reference never change) and whether it still can be.
        let read = async || -> ApiResult<(HoldView, Currency)> {
            let (hold, currency) = read_hold(&kit, id).await?;
            if hold.status != "held" {
                return Err(ApiError::conflict(
                    "hold-settled",
                    format!("hold `{id}` is already {}; only a held hold can be captured or released", hold.status),
                ));
            }
            Ok((hold, currency))
        };
        let (hold, currency) = read().await?;
        let account = hold.account;
        let status = match how {
            Settle::Capture => "captured",
            Settle::Release => "released",
        };
        let released = HoldReleased {
            account: base.url(&format!("/accounts/{account}")),
            hold: base.url(&format!("/holds/{id}")),
            amount: amount(hold.amount, currency),
            reference: hold.reference.clone(),
        };
        // The hold settled if it is still held, the account, the posting
        // (with the balance after it, which only the statement knows, as the
        // event's is), the event and the answer: one statement.
        let tx_id = Uuid::now_v7();
        let change = match how {
            Settle::Capture => {
                "settled AS (
                     UPDATE holds SET status = 'captured', updated_at = $12 WHERE id = $11 AND status = 'held'
                     RETURNING id, account_id, amount, reference
                 ),
                 debit AS (
                     UPDATE accounts a SET balance = a.balance - s.amount, held = a.held - s.amount
                     FROM settled s WHERE a.id = s.account_id RETURNING a.balance, a.currency
                 ),
                 posting AS (
                     INSERT INTO transactions (id, account_id, kind, amount, balance_after, reference, hold_id)
                     SELECT $13, s.account_id, 'debit', s.amount, d.balance, s.reference, s.id FROM settled s, debit d
                 ),
                 change AS (
                     SELECT s.id, jsonb_build_object('balance_after',
                                  jsonb_build_object('amount', d.balance, 'currency', d.currency)) AS event_data
                     FROM settled s, debit d
                 )"
            }
            Settle::Release => {
                "settled AS (
                     UPDATE holds SET status = 'released', updated_at = $12 WHERE id = $11 AND status = 'held'
                     RETURNING id, account_id, amount
                 ),
                 freed AS (
                     UPDATE accounts a SET held = a.held - s.amount FROM settled s WHERE a.id = s.account_id
                 ),
                 change AS (SELECT id FROM settled)"
            }
        };
        let settled = match how {
            Settle::Capture => {
                // The balance after the debit is the statement's to add.
                let mut known = to_json(&released)?;
                known["transaction"] = json!(tx_id);
                NewEvent::completed_by_statement::<HoldCaptured>(account.to_string(), known)
            }
            Settle::Release => NewEvent::of(account.to_string(), &released)?,
        };
        let after = HoldView { status: status.into(), updated_at: hal::now(), ..hold };
        let answer = remember.answer(hold_hal(&base, &after, currency));
        let events = [&settled];
        let settle = events::append_with(&kit.pool, &trace, &events, Some(&answer), change, |q| match how {
            Settle::Capture => q.bind(id).bind(after.updated_at).bind(tx_id),
            Settle::Release => q.bind(id).bind(after.updated_at),
        });
        if settle.await?.is_none() {
            // Settled meanwhile, by a repeat of this request (then replayed)
            // or another: the hold as it is now says.
            read().await?;
            return Err(ApiError::Internal(anyhow::anyhow!("hold {id} is held but was not settled")));
        }
        Ok(answer)
    })
    .await
}

fn pence(amount: i64) -> String {
    format!("{}.{:02}", amount / 100, amount % 100)
}
