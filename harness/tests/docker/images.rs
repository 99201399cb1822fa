//! `sandbox images build`: from nothing, then nothing to do, then only what changed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use harness::images::{self, Kind, Options, Outcome};

use crate::{Scratch, progress, repository, workspace};

/// A repository with nothing in it, removed on drop.
struct Empty(Options);

impl Empty {
    fn new(lock_dir: &Path) -> Self {
        let mut opts = Options::new(&workspace(), lock_dir);
        opts.repository = format!("bank-sandbox-empty-{}", std::process::id());
        images::remove_all(&opts).unwrap();
        Self(opts)
    }
}

impl Drop for Empty {
    fn drop(&mut self) {
        let _ = images::remove_all(&self.0);
    }
}

fn label(tag: &str) -> String {
    let format = format!("{{{{index .Config.Labels \"{}\"}}}}", images::INPUTS_LABEL);
    let out = Command::new("docker").args(["image", "inspect", "--format", &format, tag]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A copy of the workspace's sources (not its target directory), to change freely.
fn copy_workspace(to: &Path) {
    let ws = workspace();
    for entry in ["Cargo.toml", "Cargo.lock", ".cargo", "bank", "harness", "fixtures", "compose", "scenarios"] {
        let status = Command::new("cp").arg("-a").arg(ws.join(entry)).arg(to).status().unwrap();
        assert!(status.success(), "cp {entry}");
    }
}

pub fn build_from_nothing_then_skip_then_only_the_bank() {
    let opts = repository();

    let first = images::build(opts, &mut progress).unwrap();
    assert_eq!(first.built(), ["base", "postgres", "bank", "sandbox", "bank-in-a-box"], "{}", first.table());
    for b in &first.images {
        assert!(b.size > 0, "{} has no size", b.tag);
        assert!(!b.tag.ends_with(":latest"), "{} is not pinned", b.tag);
        assert_eq!(
            label(&b.tag),
            images::inputs(opts, b.kind, &images::inputs(opts, Kind::Base, "").unwrap()).unwrap()
        );
    }
    // The images run: each binary answers in its image, PostgreSQL's tools are there.
    for (tag, args) in [
        (opts.tag(Kind::Bank), vec!["probe", "tcp://127.0.0.1:1"]),
        (opts.tag(Kind::Sandbox), vec!["probe", "tcp://127.0.0.1:1"]),
    ] {
        let out = Command::new("docker").args(["run", "--rm", &tag]).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("probe: 127.0.0.1:1"), "{tag}: {stderr}");
    }
    let out = Command::new("docker")
        .args(["run", "--rm", "--entrypoint", "postgres", &opts.tag(Kind::Postgres), "--version"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("(PostgreSQL) 15."), "{out:?}");

    let second = images::build(opts, &mut progress).unwrap();
    assert!(second.built().is_empty(), "nothing changed, yet:\n{}", second.table());
    assert!(second.images.iter().all(|b| b.outcome == Outcome::Skipped));

    // A bank source changes (in a copy: the workspace itself stays as it is).
    let copy = Scratch::new("workspace");
    copy_workspace(&copy.0);
    let main = copy.0.join("bank/src/main.rs");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{text}\n// changed by the images test\n")).unwrap();
    let mut changed = opts.clone();
    changed.workspace = copy.0.clone();
    let sandbox_before = label(&opts.tag(Kind::Sandbox));
    let third = images::build(&changed, &mut progress).unwrap();
    // The bank-in-a-box carries the bank binary too.
    assert_eq!(third.built(), ["bank", "bank-in-a-box"], "{}", third.table());
    assert_eq!(label(&opts.tag(Kind::Sandbox)), sandbox_before);

    // A build step that fails says why (its output) and leaves the image as it was.
    let bank_before = label(&opts.tag(Kind::Bank));
    std::fs::write(&main, format!("{text}\nfn broken( {{\n")).unwrap();
    let err = images::build(&changed, &mut progress).unwrap_err().to_string();
    assert!(err.contains("cargo build -p harness -p bank --bin bank failed"), "{err}");
    assert!(err.contains("error"), "the compiler's own words: {err}");
    assert_eq!(label(&opts.tag(Kind::Bank)), bank_before);
}

pub fn errors_say_what_to_do_and_change_nothing() {
    let scratch = Scratch::new("errors");

    let mut unreachable = Options::new(&workspace(), &scratch.0);
    unreachable.docker_host = Some(format!("unix://{}/no-engine.sock", scratch.0.display()));
    let err = images::build(&unreachable, &mut progress).unwrap_err().to_string();
    assert!(err.starts_with("the Docker engine is not reachable"), "{err}");
    assert!(err.contains("systemctl start docker") && err.contains("local backend"), "{err}");

    let mut no_cli = Options::new(&workspace(), &scratch.0);
    no_cli.docker = scratch.0.join("docker");
    let err = images::build(&no_cli, &mut progress).unwrap_err().to_string();
    assert!(err.contains("apt-get install -y docker.io"), "{err}");

    // A repository with nothing in it: the base is needed first, and debootstrap is missing.
    let empty = Empty::new(&scratch.0);
    let mut no_debootstrap = empty.0.clone();
    no_debootstrap.debootstrap = scratch.0.join("debootstrap");
    let err = images::build(&no_debootstrap, &mut progress).unwrap_err().to_string();
    assert!(err.contains("install it with `apt-get install -y debootstrap`"), "{err}");
    for kind in Kind::ALL {
        assert_eq!(label(&no_debootstrap.tag(kind)), "", "{} was made after all", no_debootstrap.tag(kind));
    }
}

/// The postgres image keeps the official image's contract whether its first
/// start unpacks the cluster made at build time (the settings the bank's file
/// asks for) or runs initdb (any others): POSTGRES_USER is the superuser and no
/// one else is, its password is asked over TCP, POSTGRES_DB exists and the init
/// scripts ran in it.
pub fn postgres_makes_its_cluster_as_the_official_image_does() {
    use testcontainers::core::{ContainerPort, Healthcheck, WaitFor};
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{GenericImage, ImageExt};
    let opts = repository();
    images::build(opts, &mut progress).unwrap();
    let (name, tag) = opts.tag(Kind::Postgres).rsplit_once(':').map(|(n, t)| (n.to_string(), t.to_string())).unwrap();
    let password = "it's \"secret\"";
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (case, initdb_args, checksums) in
        [("made at build time", "--no-sync --wal-segsize=1", "off"), ("initdb", "--no-sync --data-checksums", "on")]
    {
        rt.block_on(async {
            // Started with testcontainers, as a team's test would; removed when `pg` drops.
            let pg = GenericImage::new(&name, &tag)
                .with_exposed_port(ContainerPort::Tcp(5432))
                .with_wait_for(WaitFor::healthcheck())
                .with_env_var("POSTGRES_USER", "alice")
                .with_env_var("POSTGRES_DB", "shop")
                .with_env_var("POSTGRES_PASSWORD", password)
                .with_env_var("POSTGRES_INITDB_ARGS", initdb_args)
                .with_env_var("TZ", "UTC")
                .with_copy_to(
                    "/docker-entrypoint-initdb.d/seed.sql",
                    b"CREATE TABLE seeded (n int); INSERT INTO seeded VALUES (42);\n".to_vec(),
                )
                .with_health_check(
                    Healthcheck::cmd_shell("pg_isready -h 127.0.0.1 -U alice -d shop")
                        .with_interval(Duration::from_millis(250))
                        .with_retries(240),
                )
                .with_label(harness::backend::docker::LABEL_OWNER, harness::backend::docker::owner_of_this_process())
                .start()
                .await
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            // Over TCP from the host, as any client would, with the password.
            let port = pg.get_host_port_ipv4(5432).await.unwrap();
            let url = |password: &str| {
                let mut url = url::Url::parse(&format!("postgres://alice@127.0.0.1:{port}/shop")).unwrap();
                url.set_password(Some(password)).unwrap();
                url.to_string()
            };
            let db = sqlx::PgPool::connect(&url(password)).await.unwrap_or_else(|e| panic!("{case}: {e}"));
            let answer: (i32, String, String, String, String) = sqlx::query_as(
                "SELECT (SELECT n FROM seeded), current_user::text, \
                 (SELECT string_agg(rolname, ',') FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%' OR rolsuper), \
                 current_setting('data_checksums'), current_setting('TimeZone')",
            )
            .fetch_one(&db)
            .await
            .unwrap();
            let alice = || "alice".to_string();
            assert_eq!(answer, (42, alice(), alice(), checksums.to_string(), "UTC".to_string()), "{case}");
            db.close().await;
            let wrong = sqlx::PgPool::connect(&url("wrong")).await.map(drop).unwrap_err().to_string();
            assert!(wrong.contains("password authentication failed"), "{case}: {wrong}");
        });
    }
}
