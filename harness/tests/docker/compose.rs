//! `compose/bank.yaml` with `compose/local-images.yaml` under the machine's own
//! Compose: healthy, a payment through the gateway's links completes, and
//! `down -v` leaves nothing of the project.

use std::time::Duration;

use harness::api::{Api, Payee, link};
use harness::compose::Project;
use harness::images;
use harness::topology::Topology;

use crate::{Scratch, progress, repository, workspace};

pub fn the_bank_runs_and_pays_under_plain_compose() {
    let scratch = Scratch::new("compose");
    let ws = workspace();
    let repo = repository();
    images::build(repo, &mut progress).unwrap();
    // The two files as they are, and a third that points their `bank-sandbox/*`
    // images at this run's own repository (a standard Compose override too).
    let files = vec![ws.join(harness::TOPOLOGY), ws.join(images::LOCAL_IMAGES)];
    let topology = Topology::load_all(&files).unwrap();
    let mut retag = String::from("services:\n");
    for s in &topology.services {
        let image = s.image.as_deref().unwrap();
        let ours = image.strip_prefix("bank-sandbox/").expect("every image is one `sandbox images build` makes");
        retag.push_str(&format!("  {}:\n    image: {}/{ours}\n", s.name, repo.repository));
    }
    let retagged = scratch.0.join("this-run.yaml");
    std::fs::write(&retagged, retag).unwrap();
    let files = [files, vec![retagged]].concat();
    let mut project = Project::new(&format!("sbxtest{}", std::process::id()), &files);
    project.up().unwrap();
    project.wait_healthy(Duration::from_secs(300)).unwrap();
    let gateway = format!("http://{}", project.port("gateway", 8080).unwrap());

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let paid: harness::Result<serde_json::Value> = rt.block_on(async {
        let api = Api::new(&gateway)?;
        let alice = api.new_customer("Alice").await?;
        let account = api.open_account(&alice, None).await?.ok()?;
        api.deposit(&account, 10_000, "salary", "compose-deposit-1").await?.ok()?;
        let payee = Payee { name: "Carol".into(), sort_code: "20-00-00".into(), account_number: "55555555".into() };
        let payment = api.pay(&account, &payee, 2_500, "rent", "compose-payment-1").await?.ok()?;
        let url = link(&payment, "self")?;
        api.wait_until(&url, "the payment completes", Duration::from_secs(60), |p| p["status"] == "completed").await?;
        let account = api.get(&link(&account, "self")?).await?;
        Ok(account)
    });
    let account = match paid {
        Ok(a) => a,
        Err(e) => panic!(
            "{e}\npayments' log:\n{}\naccounts' log:\n{}",
            project.logs("payments", 30),
            project.logs("accounts", 30)
        ),
    };
    assert_eq!(account["balance"]["amount"], 7_500, "{account}");

    project.down().unwrap();
    assert_eq!(project.leftovers().unwrap(), Vec::<String>::new());
}
