//! The whole bank in one container, from a team's own tests: the README's
//! Rust example (the part between the markers, which the README carries
//! word for word) and its Python one, each run against this run's image.

use std::process::Command;

use super::{progress, repository, workspace};

// README example: Rust (begin)
use harness::containers::BankInABox;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use serde_json::{Value, json};

/// A payment through the bank-in-a-box's gateway, and its `payment.completed`
/// read from the box's Kafka by a client on this host.
async fn a_payment_reaches_kafka() -> Result<(), Box<dyn std::error::Error>> {
    let bank = BankInABox::default().start().await?; // removed when `bank` drops
    let http = reqwest::Client::new();
    let call = async |method: reqwest::Method, url: &str, body: Value| -> reqwest::Result<Value> {
        let request = http.request(method, url).header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
        let request = if body.is_null() { request } else { request.json(&body) };
        request.send().await?.error_for_status()?.json().await
    };
    let link = |v: &Value, rel: &str| v["_links"][rel]["href"].as_str().unwrap_or_default().to_string();
    let (get, post) = (reqwest::Method::GET, reqwest::Method::POST);

    // Follow the gateway's links: a customer, an account with £100, a payment of £12.34.
    let root = call(get.clone(), &format!("{}/", bank.gateway().await?), Value::Null).await?;
    let accounts = call(get.clone(), &link(&root, "accounts"), Value::Null).await?;
    let customer = call(post.clone(), &link(&accounts, "customers"), json!({ "name": "Ada" })).await?;
    let account = call(post.clone(), &link(&customer, "open-account"), json!({})).await?;
    call(post.clone(), &link(&account, "credit"), json!({ "amount": 10_000, "currency": "GBP" })).await?;
    let payments = call(get, &link(&root, "payments"), Value::Null).await?;
    let payment = json!({
        "from": link(&account, "self"),
        "to": { "name": "Grace", "sort_code": "20-00-00", "account_number": "12345678" },
        "amount": { "amount": 1_234, "currency": "GBP" },
        "reference": "lunch",
    });
    let payment = call(post, &link(&payments, "payments"), payment).await?;

    // The scheme settles it; the bank says so on payments.events.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bank.kafka_bootstrap().await?)
        .set("broker.address.family", "v4")
        .set("group.id", uuid::Uuid::new_v4().to_string())
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    consumer.subscribe(&["payments.events"])?;
    let completed = async {
        loop {
            let message = consumer.recv().await?;
            let event: Value = serde_json::from_slice(message.payload().unwrap_or_default())?;
            if event["type"] == "payment.completed" && event["aggregate_id"] == payment["id"] {
                return Ok::<_, Box<dyn std::error::Error>>(event);
            }
        }
    };
    let event = tokio::time::timeout(std::time::Duration::from_secs(60), completed).await??;
    assert_eq!(event["data"]["amount"]["amount"], 1_234, "{event}");

    // Its database, from the host: the payment is there.
    let db = sqlx::PgPool::connect(&bank.postgres_url("payments").await?).await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM payments").fetch_one(&db).await?;
    assert_eq!(rows, 1);
    Ok(())
}
// README example: Rust (end)

/// The image this run built (or `$SANDBOX_TEST_IMAGES`' when developing).
fn images() -> String {
    if let Ok(repository) = std::env::var("SANDBOX_TEST_IMAGES") {
        return repository;
    }
    let repo = repository();
    harness::images::build(repo, &mut progress).unwrap();
    repo.repository.clone()
}

/// This test's process, run again to run the example with the image of this
/// run (`$SANDBOX_IMAGES`, which `BankInABox::default()` reads).
pub fn child() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    if let Err(e) = rt.block_on(a_payment_reaches_kafka()) {
        panic!("the Rust example failed: {e}");
    }
}

/// The Rust example, in a process of its own with the image of this run;
/// nothing of it is left after.
pub fn the_rust_example_pays_and_reads_kafka() {
    let repository = images();
    let out = Command::new(std::env::current_exe().unwrap())
        .env("SANDBOX_IN_A_BOX_CHILD", "1")
        .env(harness::containers::IMAGES_ENV, &repository)
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Rust example failed:\n{said}");
    assert_eq!(left_running(&repository), "", "the example's container outlived it");
}

/// What the README's Python example imports, as its reader would install it.
const PYTHON_PACKAGES: &[&str] = &["testcontainers==4.15.0", "confluent-kafka==2.16.2", "requests==2.34.2"];

/// The Python example from the README, with Python's `testcontainers` and
/// `confluent-kafka` from PyPI in a virtual environment of their own.
pub fn the_python_example_pays_and_reads_kafka() {
    let repository = images();
    let venv = harness::python::environment("testcontainers-4.15.0", PYTHON_PACKAGES).unwrap();
    let python = venv.join("bin").join("python");
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let section = readme.split("### Use the bank from your own tests").nth(1).expect("the README's section");
    let example =
        section.split("```python\n").nth(1).and_then(|b| b.split("\n```").next()).expect("the README's Python example");
    let dir = tempdir("python");
    let file = dir.join("test_bank_in_a_box.py");
    std::fs::write(&file, example).unwrap();
    let image = format!("{repository}/bank-in-a-box:{}", harness::images::VERSION);
    let out = Command::new(&python)
        .arg(&file)
        .env("BANK_IN_A_BOX_IMAGE", &image)
        // Ryuk, the Python module's reaper, is an image from a registry this
        // machine cannot reach; the example's `with` removes its container.
        .env("TESTCONTAINERS_RYUK_DISABLED", "true")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python example failed:\n{said}");
    assert!(said.contains("payment.completed"), "{said}");
    assert_eq!(left_running(&repository), "", "the example's container outlived it");
}

/// The containers of `repository`'s bank-in-a-box still there.
fn left_running(repository: &str) -> String {
    let image = format!("ancestor={repository}/bank-in-a-box:{}", harness::images::VERSION);
    let out = Command::new("docker").args(["ps", "-aq", "--filter", &image]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn tempdir(what: &str) -> std::path::PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!("sbx-in-a-box-{what}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    dir
}
