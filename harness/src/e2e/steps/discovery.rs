//! Exploring the bank by following its hypermedia links from the gateway.

use cucumber::{then, when};
use serde_json::Value;

use super::Step;
use crate::api;
use crate::e2e::params::Name;
use crate::e2e::world::{BankWorld, Flow};

fn here(w: &BankWorld) -> anyhow::Result<&Value> {
    w.here
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no resource is open; start with `When I open the bank's front door`"))
}

/// Every resource carries `self` and `discovery` links.
fn check_links(r: &Value, whence: &str) -> anyhow::Result<()> {
    for rel in ["self", "discovery"] {
        api::link(r, rel).map_err(|e| anyhow::anyhow!("{whence}: {e}"))?;
    }
    Ok(())
}

#[when("I open the bank's front door")]
async fn front_door(w: &mut BankWorld) -> Step {
    w.here = Some(w.api().front_door().await?);
    Ok(())
}

#[when(expr = "I open {person}'s account")]
async fn open_account(w: &mut BankWorld, who: Name) -> Step {
    w.here = Some(w.account(&who.0).await?);
    Ok(())
}

#[when("I open the payment")]
async fn open_payment(w: &mut BankWorld) -> Step {
    let url = w.last(Flow::Payment)?.url.clone();
    w.here = Some(w.api().get(&url).await?);
    Ok(())
}

#[when(expr = "I follow the `{word}` link")]
async fn follow(w: &mut BankWorld, rel: String) -> Step {
    let href = api::link(here(w)?, &rel)?;
    w.here = Some(w.api().get(&href).await?);
    Ok(())
}

#[then(regex = r"^it links to the (.+) services$")]
async fn links_to_services(w: &mut BankWorld, list: String) -> Step {
    let r = here(w)?;
    for name in list.split([',', ' ']).map(|s| s.trim_matches('`')).filter(|s| !s.is_empty() && *s != "and") {
        api::link(r, name)?;
    }
    Ok(())
}

#[then("every link from it leads to a resource that links back to discovery")]
async fn crawl(w: &mut BankWorld) -> Step {
    // Two levels: the front door's links (each service's discovery resource,
    // the gateway's own health and metrics), then each of theirs. Every link
    // answers with what it says it leads to (HAL, or the media type of its
    // `type` hint: health is plain JSON, metrics Prometheus text); every HAL
    // resource links back.
    let start = here(w)?.clone();
    check_links(&start, "the front door")?;
    let mut frontier = vec![("the front door".to_string(), start)];
    let mut visited = 0;
    for _level in 0..2 {
        let mut next = Vec::new();
        for (whence, resource) in &frontier {
            for (rel, href) in
                api::readable_links(resource).into_iter().filter(|(r, _)| r != "self" && r != "discovery")
            {
                let r = w.api().send("GET", &href, None, None).await?;
                anyhow::ensure!(r.is_success(), "{whence} -> `{rel}` ({href}) answered {} {}", r.status, r.body);
                visited += 1;
                // A link says what it leads to: its `type` hint, or HAL when it has none.
                let hinted = resource["_links"][rel.as_str()]["type"].as_str().unwrap_or("application/hal+json");
                let essence = |t: &str| t.split(';').next().unwrap_or_default().trim().to_string();
                anyhow::ensure!(
                    essence(&r.content_type) == essence(hinted),
                    "{whence} -> `{rel}` ({href}) is {}, but its link says {hinted}",
                    r.content_type
                );
                if r.content_type.starts_with("application/hal+json") {
                    check_links(&r.body, &href)?;
                    next.push((format!("{whence} -> `{rel}`"), r.body));
                }
            }
        }
        frontier = next;
    }
    anyhow::ensure!(visited > 4, "the front door leads to only {visited} resources");
    Ok(())
}

#[then(regex = r"^the resource has `(\w+)` and `(\w+)` links$")]
async fn has_links(w: &mut BankWorld, a: String, b: String) -> Step {
    let r = here(w)?;
    api::link(r, &a)?;
    api::link(r, &b)?;
    Ok(())
}

#[then(expr = "the resource is {person}'s account")]
async fn is_account(w: &mut BankWorld, who: Name) -> Step {
    let url = w.account_url(&who.0)?;
    let at = api::link(here(w)?, "self")?;
    anyhow::ensure!(at == url, "the resource is {at}, not {}'s account {url}", who.0);
    Ok(())
}

#[then(expr = "the resource lists {person}'s account")]
async fn lists_account(w: &mut BankWorld, who: Name) -> Step {
    let url = w.account_url(&who.0)?;
    let r = here(w)?;
    let listed = r["_embedded"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(Value::as_array)
        .flatten()
        .any(|item| api::link(item, "self").is_ok_and(|s| s == url));
    anyhow::ensure!(listed, "{url} is not listed in {r}");
    Ok(())
}
