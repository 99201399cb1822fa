//! The images `sandbox images build` makes, the bank under plain Compose on
//! them and under `sandbox up --backend docker`, against this machine's Docker
//! engine: real debootstrap, real builds, real containers.
//!
//! Its own small runner (`harness = false`): the tests share the engine and the
//! cargo target directory, so they run one after another, and without an engine
//! they are reported as ignored (skipped), never as passed. `.ci/run` sets
//! `SANDBOX_REQUIRE_DOCKER=1`, which turns a missing engine into a failure.

mod backend;
mod compose;
mod containers;
mod images;
mod in_a_box;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use harness::images::{Options, remove_all};

type Test = (&'static str, fn());

const TESTS: &[Test] = &[
    (
        "images::build_from_nothing_then_skip_then_only_the_bank",
        images::build_from_nothing_then_skip_then_only_the_bank,
    ),
    ("images::errors_say_what_to_do_and_change_nothing", images::errors_say_what_to_do_and_change_nothing),
    (
        "images::postgres_makes_its_cluster_as_the_official_image_does",
        images::postgres_makes_its_cluster_as_the_official_image_does,
    ),
    ("compose::the_bank_runs_and_pays_under_plain_compose", compose::the_bank_runs_and_pays_under_plain_compose),
    ("containers::a_team_starts_only_what_it_needs", containers::a_team_starts_only_what_it_needs),
    (
        "containers::prune_removes_what_a_killed_test_process_left",
        containers::prune_removes_what_a_killed_test_process_left,
    ),
    ("in_a_box::the_rust_example_pays_and_reads_kafka", in_a_box::the_rust_example_pays_and_reads_kafka),
    ("in_a_box::the_python_example_pays_and_reads_kafka", in_a_box::the_python_example_pays_and_reads_kafka),
    (
        "backend::errors_name_the_missing_image_and_change_nothing",
        backend::errors_name_the_missing_image_and_change_nothing,
    ),
    (
        "backend::up_status_logs_kill_restart_pay_and_down_leaves_nothing",
        backend::up_status_logs_kill_restart_pay_and_down_leaves_nothing,
    ),
    (
        "backend::docker_and_local_side_by_side_and_a_killed_supervisor_is_swept",
        backend::docker_and_local_side_by_side_and_a_killed_supervisor_is_swept,
    ),
    (
        "backend::any_compose_service_runs_and_one_that_exits_shows_why",
        backend::any_compose_service_runs_and_one_that_exits_shows_why,
    ),
    (
        "backend::the_dashboard_shows_a_docker_sandbox_and_quitting_leaves_nothing",
        backend::the_dashboard_shows_a_docker_sandbox_and_quitting_leaves_nothing,
    ),
];

/// The name this runner has as one test of cargo-nextest: its tests share one
/// repository of images built from nothing, so they run in one process.
const SUITE: &str = "suite";

fn main() -> std::process::ExitCode {
    // A test process of `containers`' prune test, killed by it.
    if let Some(image) = std::env::var_os("SANDBOX_CONTAINERS_CHILD") {
        containers::child(&image.to_string_lossy());
        return std::process::ExitCode::SUCCESS;
    }
    // The README's Rust example, in a process of its own.
    if std::env::var_os("SANDBOX_IN_A_BOX_CHILD").is_some() {
        in_a_box::child();
        return std::process::ExitCode::SUCCESS;
    }
    let started = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if harness::e2e::answered_listing(&args, SUITE) {
        return std::process::ExitCode::SUCCESS;
    }
    let exact = args.iter().any(|a| a == "--exact");
    let filters: Vec<String> =
        args.iter().filter(|a| !a.starts_with('-')).filter(|a| !(exact && a.as_str() == SUITE)).cloned().collect();
    let selected: Vec<&Test> = TESTS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    let filtered_out = TESTS.len() - selected.len();
    println!("\nrunning {} tests", selected.len());
    if let Err(why) = engine() {
        if std::env::var_os("SANDBOX_REQUIRE_DOCKER").is_some_and(|v| v == "1") {
            println!("no Docker engine ({why}), and SANDBOX_REQUIRE_DOCKER=1 requires one");
            println!(
                "\ntest result: FAILED. 0 passed; {} failed; 0 ignored; 0 measured; {filtered_out} filtered out",
                selected.len()
            );
            return std::process::ExitCode::FAILURE;
        }
        for (name, _) in &selected {
            println!("test {name} ... ignored, no Docker engine: {why}");
        }
        println!(
            "\ntest result: ok. 0 passed; 0 failed; {} ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s",
            selected.len(),
            started.elapsed().as_secs_f64()
        );
        return std::process::ExitCode::SUCCESS;
    }
    let mut failed = Vec::new();
    // Every image this run builds is removed at its end, whatever happened.
    let cleanup = RemoveImages;
    for (name, test) in &selected {
        println!("test {name} ...");
        let t = Instant::now();
        match std::panic::catch_unwind(test) {
            Ok(()) => println!("test {name} ... ok ({:.1}s)", t.elapsed().as_secs_f64()),
            Err(_) => {
                println!("test {name} ... FAILED ({:.1}s)", t.elapsed().as_secs_f64());
                failed.push(*name);
            }
        }
    }
    // Before the closing line, so that it stays the last thing printed.
    drop(cleanup);
    let passed = selected.len() - failed.len();
    let verdict = if failed.is_empty() { "ok" } else { "FAILED" };
    if !failed.is_empty() {
        println!("\nfailures:\n    {}", failed.join("\n    "));
    }
    println!(
        "\ntest result: {verdict}. {passed} passed; {} failed; 0 ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s",
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}

/// The engine answers, or why not.
fn engine() -> Result<(), String> {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map_err(|e| format!("no docker CLI: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("no answer").to_string())
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The images of this run: a repository of its own (`bank-sandbox-test-<pid>`),
/// so that the developer's `bank-sandbox/*` images are neither used nor touched.
/// The first test that asks starts it from nothing.
fn repository() -> &'static Options {
    static REPO: OnceLock<Options> = OnceLock::new();
    REPO.get_or_init(|| {
        std::fs::create_dir_all(locks()).unwrap();
        let opts = run_options();
        remove_all(&opts).unwrap();
        opts
    })
}

fn run_options() -> Options {
    Options { repository: format!("bank-sandbox-test-{}", std::process::id()), ..Options::new(&workspace(), &locks()) }
}

/// Where this run's build lock lives.
fn locks() -> PathBuf {
    std::env::temp_dir().join(format!("sbx-docker-locks-{}", std::process::id()))
}

/// At the end of the run: its images and its lock directory go.
struct RemoveImages;

impl Drop for RemoveImages {
    fn drop(&mut self) {
        match remove_all(&run_options()) {
            Ok(removed) if !removed.is_empty() => println!("removed this run's images: {}", removed.join(", ")),
            Ok(_) => {}
            Err(e) => println!("could not remove this run's images: {e}"),
        }
        let _ = std::fs::remove_dir_all(locks());
    }
}

/// The bank's Compose files as they are, and a third, a standard Compose
/// override written in `scratch`, that points their `bank-sandbox/*` images at
/// this run's own repository (built first).
fn this_runs_files(scratch: &Scratch) -> Vec<PathBuf> {
    let repo = repository();
    harness::images::build(repo, &mut progress).unwrap();
    let ws = workspace();
    let files = vec![ws.join(harness::TOPOLOGY), ws.join(harness::images::LOCAL_IMAGES)];
    let topology = harness::topology::Topology::load_all(&files).unwrap();
    let mut retag = String::from("services:\n");
    for s in &topology.services {
        let image = s.image.as_deref().unwrap();
        let ours = image.strip_prefix("bank-sandbox/").expect("every image is one `sandbox images build` makes");
        retag.push_str(&format!("  {}:\n    image: {}/{ours}\n", s.name, repo.repository));
    }
    let retagged = scratch.0.join("this-run.yaml");
    std::fs::write(&retagged, retag).unwrap();
    [files, vec![retagged]].concat()
}

/// Alice opens an account, has £100.00 deposited and pays Carol £25.00 through
/// the gateway at `gateway`, following its links; returns her account once the
/// payment has completed. `keys` tells this run's idempotency keys apart.
async fn pay_through_the_gateway(gateway: &str, keys: &str) -> harness::Result<serde_json::Value> {
    use harness::api::{Api, Payee, link};
    let api = Api::new(gateway)?;
    let alice = api.new_customer("Alice").await?;
    let account = api.open_account(&alice, None).await?.ok()?;
    api.deposit(&account, 10_000, "salary", &format!("{keys}-deposit-1")).await?.ok()?;
    let payee = Payee { name: "Carol".into(), sort_code: "20-00-00".into(), account_number: "55555555".into() };
    let payment = api.pay(&account, &payee, 2_500, "rent", &format!("{keys}-payment-1")).await?.ok()?;
    let url = link(&payment, "self")?;
    let wait = std::time::Duration::from_secs(60);
    api.wait_until(&url, "the payment completes", wait, |p| p["status"] == "completed").await?;
    api.get(&link(&account, "self")?).await
}

/// A directory of this test run's own, removed on drop (also when a test panics).
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sbx-docker-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The builder's progress lines, shown with SANDBOX_TEST_VERBOSE=1 (a failure's
/// error carries the last lines of the step that failed either way).
fn progress(line: &str) {
    if std::env::var_os("SANDBOX_TEST_VERBOSE").is_some() {
        eprintln!("{line}");
    }
}
