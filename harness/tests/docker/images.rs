//! `sandbox images build`: from nothing, then nothing to do, then only what changed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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

/// A container of this test's, removed on drop (also when the test panics).
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", "-v", &self.0]).output();
    }
}

/// The postgres image keeps the official image's contract whether its first
/// start unpacks the cluster made at build time (the settings the bank's file
/// asks for) or runs initdb (any others): POSTGRES_USER is the superuser and no
/// one else is, its password is asked over TCP, POSTGRES_DB exists and the init
/// scripts ran in it.
pub fn postgres_makes_its_cluster_as_the_official_image_does() {
    let opts = repository();
    images::build(opts, &mut progress).unwrap();
    let init = Scratch::new("pg-init");
    std::fs::write(init.0.join("seed.sql"), "CREATE TABLE seeded (n int); INSERT INTO seeded VALUES (42);\n").unwrap();
    let password = "it's \"secret\"";
    for (case, settings, checksums) in [
        ("made at build time", ["POSTGRES_INITDB_ARGS=--no-sync --wal-segsize=1", "TZ=UTC"], "off"),
        ("initdb", ["POSTGRES_INITDB_ARGS=--no-sync --data-checksums", "TZ=UTC"], "on"),
    ] {
        let c = Container(format!("bank-sandbox-test-pg-{}-{}", std::process::id(), checksums));
        let mut run = Command::new("docker");
        run.args(["run", "-d", "--name", &c.0, "-e", "POSTGRES_USER=alice", "-e", "POSTGRES_DB=shop"])
            .args(["-e", &format!("POSTGRES_PASSWORD={password}")])
            .args(["-v", &format!("{}:/docker-entrypoint-initdb.d:ro", init.0.display())]);
        for s in settings {
            run.args(["-e", s]);
        }
        let out = run.arg(opts.tag(Kind::Postgres)).output().unwrap();
        assert!(out.status.success(), "{case}: {out:?}");
        // Over TCP, as a client on the network would, with the password.
        let query = |password: &str| {
            Command::new("docker")
                .args(["exec", "-e", &format!("PGPASSWORD={password}"), &c.0])
                .args(["psql", "-h", "127.0.0.1", "-U", "alice", "-d", "shop", "-Atc"])
                .arg(
                    "SELECT (SELECT n FROM seeded), current_user, \
                     (SELECT string_agg(rolname, ',') FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%' OR rolsuper), \
                     current_setting('data_checksums'), current_setting('TimeZone')",
                )
                .output()
                .unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let answer = loop {
            let out = query(password);
            if out.status.success() {
                break String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            let logs = Command::new("docker").args(["logs", &c.0]).output().unwrap();
            assert!(
                Instant::now() < deadline,
                "{case}: not ready in 60 s: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&logs.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(answer, format!("42|alice|alice|{checksums}|UTC"), "{case}");
        let wrong = query("wrong");
        assert!(!wrong.status.success(), "{case}: a wrong password was let in");
        assert!(String::from_utf8_lossy(&wrong.stderr).contains("password authentication failed"), "{wrong:?}");
    }
}
