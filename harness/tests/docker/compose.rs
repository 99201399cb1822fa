//! `compose/bank.yaml` with `compose/local-images.yaml` under the machine's own
//! Compose: healthy, a payment through the gateway's links completes, and
//! `down -v` leaves nothing of the project.

use std::time::Duration;

use harness::compose::Project;

use crate::{Scratch, pay_through_the_gateway, this_runs_files};

pub fn the_bank_runs_and_pays_under_plain_compose() {
    let scratch = Scratch::new("compose");
    let files = this_runs_files(&scratch);
    let mut project = Project::new(&format!("sbxtest{}", std::process::id()), &files);
    project.up().unwrap();
    project.wait_healthy(Duration::from_secs(300)).unwrap();
    let gateway = format!("http://{}", project.port("gateway", 8080).unwrap());

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let paid = rt.block_on(pay_through_the_gateway(&gateway, "compose"));
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
