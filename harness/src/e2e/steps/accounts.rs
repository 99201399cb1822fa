//! Customers, accounts, deposits, balances and statements.

use cucumber::{given, then, when};

use super::Step;
use crate::api::{self, pounds};
use crate::e2e::params::{Money, Name};
use crate::e2e::world::{BankWorld, Person, SETTLE};

#[given(expr = "{person} is a customer")]
async fn is_a_customer(w: &mut BankWorld, who: Name) -> Step {
    let customer = w.api().new_customer(&who.0).await?;
    w.people.insert(who.0.clone(), Person::new(&who.0, customer, None));
    Ok(())
}

#[given(expr = "{person} has an account")]
async fn has_an_account(w: &mut BankWorld, who: Name) -> Step {
    w.open(&who.0).await.map(|_| ())
}

#[given(expr = "{person} has {money}")]
async fn has(w: &mut BankWorld, who: Name, money: Money) -> Step {
    w.open(&who.0).await?;
    if money.0 > 0 {
        w.deposit(&who.0, money.0).await?;
        w.reply()?.clone().ok()?;
    }
    Ok(())
}

#[when(expr = "{person} opens an account")]
async fn opens_an_account(w: &mut BankWorld, who: Name) -> Step {
    asks_for_an_account(w, who, "GBP".into()).await?;
    w.reply()?.clone().ok()?;
    Ok(())
}

#[when(expr = "{person} asks for an account in {word}")]
async fn asks_for_an_account(w: &mut BankWorld, who: Name, currency: String) -> Step {
    let customer = w.person(&who.0)?.customer.clone();
    let reply = w.api().open_account(&customer, Some(&currency)).await?;
    if reply.is_success()
        && let Some(p) = w.people.get_mut(&who.0)
    {
        p.account = Some(reply.body.clone());
    }
    w.last_reply = Some(reply);
    Ok(())
}

#[when(expr = "{money} is deposited into {person}'s account")]
async fn deposited(w: &mut BankWorld, money: Money, who: Name) -> Step {
    w.deposit(&who.0, money.0).await
}

/// The account's `field` (balance, available, held) reaches `pence`.
async fn reaches(w: &BankWorld, who: &str, field: &str, pence: i64) -> Step {
    let url = w.account_url(who)?;
    let what = format!("{who}'s {field} to be {}", pounds(pence));
    let r = w.api().wait_until(&url, &what, SETTLE, |a| a[field]["amount"].as_i64() == Some(pence)).await;
    w.or_trail(r).await.map(|_| ())
}

#[then(expr = "{person}'s balance is {money}")]
async fn balance_is(w: &mut BankWorld, who: Name, money: Money) -> Step {
    reaches(w, &who.0, "balance", money.0).await
}

#[then(expr = "{person}'s available balance is {money}")]
async fn available_is(w: &mut BankWorld, who: Name, money: Money) -> Step {
    reaches(w, &who.0, "available", money.0).await
}

#[then(expr = "{person} has {money} on hold")]
async fn on_hold(w: &mut BankWorld, who: Name, money: Money) -> Step {
    reaches(w, &who.0, "held", money.0).await
}

#[then(expr = "{person} has nothing on hold")]
async fn nothing_on_hold(w: &mut BankWorld, who: Name) -> Step {
    reaches(w, &who.0, "held", 0).await
}

#[then(expr = "{person}'s account has sort code {word} and an eight-digit account number")]
async fn bank_details(w: &mut BankWorld, who: Name, sort_code: String) -> Step {
    let a = w.account(&who.0).await?;
    anyhow::ensure!(a["sort_code"] == sort_code.as_str(), "sort code is {}, expected {sort_code}", a["sort_code"]);
    let number = a["account_number"].as_str().unwrap_or_default();
    anyhow::ensure!(number.len() == 8 && number.chars().all(|c| c.is_ascii_digit()), "account number `{number}`");
    Ok(())
}

#[then(expr = "{person}'s statement shows {int} credit(s) of {money}")]
async fn credits_of(w: &mut BankWorld, who: Name, n: usize, money: Money) -> Step {
    let a = w.account(&who.0).await?;
    let postings = w.api().transactions(&a).await?;
    let found = postings.iter().filter(|t| t["kind"] == "credit" && t["amount"]["amount"] == money.0).count();
    if found != n {
        return Err(w
            .failed(format!("{}'s statement shows {found} credits of {}, expected {n}", who.0, pounds(money.0)))
            .await);
    }
    Ok(())
}

#[then(expr = "{person} has no accounts")]
async fn no_accounts(w: &mut BankWorld, who: Name) -> Step {
    let customer = w.person(&who.0)?.customer.clone();
    let list = w.api().get(&api::link(&customer, "accounts")?).await?;
    anyhow::ensure!(list["count"] == 0, "{} has accounts: {list}", who.0);
    Ok(())
}

#[then(expr = "the request is refused with `{word}`")]
async fn refused_with(w: &mut BankWorld, problem: String) -> Step {
    let reply = w.reply()?;
    anyhow::ensure!(
        (400..500).contains(&reply.status) && reply.problem() == Some(problem.as_str()),
        "expected a refusal `{problem}`, got {} {}",
        reply.status,
        reply.body
    );
    Ok(())
}
