//! `sandbox images build`: every image the topology needs, made on this machine
//! from this workspace and Debian's packages, for an engine that cannot pull.
//!
//! - `base`: Debian (this machine's release) from `debootstrap --variant=minbase`
//!   against the mirror in this machine's own apt sources, imported into the engine;
//! - `postgres`: Debian's PostgreSQL 15 on the base, behind the official image's
//!   entrypoint contract (`harness/images/postgres/`);
//! - `bank` and `sandbox`: this workspace's two binaries on the base (the
//!   `sandbox` image also carries `fixtures/`: the providers and the broker).
//!
//! Every image carries a label with a hash of its inputs (the Dockerfile, the
//! sources its binary is built from, the base's own hash); an image whose label
//! matches is skipped without running cargo or the engine's builder, so a build
//! with nothing changed costs a few `docker image inspect` calls.
//!
//! The engine is driven through the `docker` CLI, as an engineer would: it
//! negotiates the API version with whatever engine is there.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::fresh::{self, BANK_SOURCES, SANDBOX_SOURCES, files_under};

/// The label holding the hash of an image's inputs.
pub const INPUTS_LABEL: &str = "io.bank-sandbox.inputs";
/// The label naming which of the sandbox's images this is (how they are found).
pub const KIND_LABEL: &str = "io.bank-sandbox.image";
/// The repository every image is tagged under.
pub const REPOSITORY: &str = "bank-sandbox";
/// The bank's and the harness's images are tagged with this workspace's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The Compose override that selects the images built here, relative to the workspace.
pub const LOCAL_IMAGES: &str = "compose/local-images.yaml";

/// What of the workspace the bank-in-a-box carries: the topology and the
/// providers' definitions it names.
const BOX_WORKSPACE: &[&str] = &["compose", "fixtures"];

/// Bumped when how an image is made changes in a way its inputs do not show.
const RECIPE: &str = "1";

/// The images, in build order (each may need those before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Base,
    Postgres,
    Bank,
    Sandbox,
    /// The whole bank in one container (harness/src/inabox.rs).
    BankInABox,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Base, Kind::Postgres, Kind::Bank, Kind::Sandbox, Kind::BankInABox];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Base => "base",
            Kind::Postgres => "postgres",
            Kind::Bank => "bank",
            Kind::Sandbox => "sandbox",
            Kind::BankInABox => "bank-in-a-box",
        }
    }

    fn dockerfile(self) -> &'static str {
        match self {
            Kind::Base => "",
            Kind::Postgres => include_str!("../images/postgres/Dockerfile"),
            Kind::Bank => include_str!("../images/bank/Dockerfile"),
            Kind::Sandbox => include_str!("../images/sandbox/Dockerfile"),
            Kind::BankInABox => include_str!("../images/bank-in-a-box/Dockerfile"),
        }
    }
}

/// What `build` needs to know; `Options::new` fills in this machine's defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// The bank-sandbox workspace the binaries are built from.
    pub workspace: PathBuf,
    /// Cargo's target directory (`$CARGO_TARGET_DIR` or `<workspace>/target`).
    pub target_dir: PathBuf,
    /// The repository images are tagged under (tests use their own).
    pub repository: String,
    /// The Debian release of the base (this machine's, from /etc/os-release).
    pub suite: String,
    pub docker: PathBuf,
    /// The engine to talk to, when not the CLI's default (`DOCKER_HOST`).
    pub docker_host: Option<String>,
    pub debootstrap: PathBuf,
    pub cargo: PathBuf,
    /// Where the build lock lives (one build per repository at a time).
    pub lock_dir: PathBuf,
}

impl Options {
    pub fn new(workspace: &Path, lock_dir: &Path) -> Self {
        Self {
            workspace: workspace.to_path_buf(),
            target_dir: std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from),
            repository: REPOSITORY.into(),
            suite: debian_suite().unwrap_or_else(|| "bookworm".into()),
            docker: "docker".into(),
            docker_host: None,
            debootstrap: "debootstrap".into(),
            cargo: std::env::var_os("CARGO").map_or_else(|| "cargo".into(), PathBuf::from),
            lock_dir: lock_dir.to_path_buf(),
        }
    }

    pub fn tag(&self, kind: Kind) -> String {
        let repo = &self.repository;
        match kind {
            Kind::Base => format!("{repo}/base:{}-minbase", self.suite),
            Kind::Postgres => format!("{repo}/postgres:15"),
            Kind::Bank => format!("{repo}/bank:{VERSION}"),
            Kind::Sandbox => format!("{repo}/sandbox:{VERSION}"),
            Kind::BankInABox => format!("{repo}/bank-in-a-box:{VERSION}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The image's label matched its inputs: nothing was done.
    Skipped,
    Built {
        took: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct Built {
    pub kind: Kind,
    pub tag: String,
    pub outcome: Outcome,
    /// The image's size as the engine reports it (its layers, the base's included).
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub images: Vec<Built>,
    pub took: Duration,
}

impl Report {
    pub fn outcome(&self, kind: Kind) -> Option<&Outcome> {
        self.images.iter().find(|b| b.kind == kind).map(|b| &b.outcome)
    }

    /// The images that were (re)built, by name.
    pub fn built(&self) -> Vec<&'static str> {
        self.images.iter().filter(|b| b.outcome != Outcome::Skipped).map(|b| b.kind.name()).collect()
    }

    pub fn table(&self) -> String {
        let mut out = format!("{:<34} {:<8} {:>9} {:>9}\n", "IMAGE", "BUILD", "SECONDS", "SIZE MB");
        for b in &self.images {
            let (what, secs) = match &b.outcome {
                Outcome::Skipped => ("skipped", "-".to_string()),
                Outcome::Built { took } => ("built", format!("{:.1}", took.as_secs_f64())),
            };
            out.push_str(&format!("{:<34} {:<8} {:>9} {:>9.1}\n", b.tag, what, secs, b.size as f64 / 1e6));
        }
        out
    }
}

/// Build what is missing or stale, in order, saying what it does through `progress`.
pub fn build(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    let started = Instant::now();
    let docker = Docker::of(opts);
    docker.check()?;
    std::fs::create_dir_all(&opts.lock_dir).map_err(Error::io(format!("cannot create {}", opts.lock_dir.display())))?;
    let _lock = lock(&opts.lock_dir.join(format!(".images-{}.lock", opts.repository.replace('/', "_"))))?;
    let base = inputs(opts, Kind::Base, "")?;
    let mut stale = Vec::new();
    for kind in Kind::ALL {
        let hash = inputs(opts, kind, &base)?;
        let fresh = docker.label(&opts.tag(kind), INPUTS_LABEL).as_deref() == Some(hash.as_str());
        stale.push((kind, (!fresh).then_some(hash)));
    }
    // What a build of the base needs is checked before anything is built.
    let base_mirror =
        if stale.iter().any(|(k, h)| *k == Kind::Base && h.is_some()) { Some(base_preconditions(opts)?) } else { None };
    // The binaries the stale images carry, built with cargo unless already fresh
    // (in one invocation).
    let mut bins = Vec::new();
    let mut why = Vec::new();
    for (kind, hash) in &stale {
        let carried: &[(&str, &[&str])] = match kind {
            Kind::Bank => &[("bank", BANK_SOURCES)],
            Kind::Sandbox => &[("sandbox", SANDBOX_SOURCES)],
            Kind::BankInABox => &[("bank", BANK_SOURCES), ("sandbox", SANDBOX_SOURCES)],
            _ => continue,
        };
        for (bin, sources) in carried {
            if let (Some(_), Some(reason)) =
                (hash, fresh::stale(&opts.target_dir.join("debug").join(bin), &opts.workspace, sources))
                && !bins.contains(bin)
            {
                bins.push(*bin);
                why.push(reason);
            }
        }
    }
    if !bins.is_empty() {
        cargo_build(opts, &bins, &why.join("; "), progress)?;
    }
    let mut images = Vec::new();
    for (kind, hash) in stale {
        let tag = opts.tag(kind);
        let outcome = match hash {
            None => {
                progress(&format!("{tag}: up to date"));
                Outcome::Skipped
            }
            Some(hash) => {
                let t = Instant::now();
                progress(&format!("{tag}: building"));
                let previous = docker.id(&tag);
                match (kind, &base_mirror) {
                    (Kind::Base, Some(mirror)) => build_base(opts, &docker, &tag, &hash, mirror, progress)?,
                    _ => build_on_base(opts, &docker, kind, &tag, &hash, progress)?,
                }
                // The image this one replaces, unless something still uses it.
                if let Some(old) = previous.filter(|old| docker.id(&tag).as_ref() != Some(old)) {
                    let _ = docker.output(&["rmi", &old]);
                }
                let took = t.elapsed();
                progress(&format!("{tag}: built in {:.1}s", took.as_secs_f64()));
                Outcome::Built { took }
            }
        };
        let size = docker.size(&tag);
        images.push(Built { kind, tag, outcome, size });
    }
    Ok(Report { images, took: started.elapsed() })
}

/// Remove every image of `repository` (what `sandbox images rm` and tests use).
pub fn remove_all(opts: &Options) -> Result<Vec<String>> {
    let docker = Docker::of(opts);
    docker.check()?;
    let mut removed = Vec::new();
    for kind in Kind::ALL.into_iter().rev() {
        let tag = opts.tag(kind);
        if docker.label(&tag, KIND_LABEL).is_some() {
            docker.output(&["rmi", "--force", &tag])?;
            removed.push(tag);
        }
    }
    Ok(removed)
}

/// The hash of what an image is made from. Files are hashed by path and content,
/// in sorted order, so the hash is the same in any clone of the same commit.
pub fn inputs(opts: &Options, kind: Kind, base: &str) -> Result<String> {
    let mut h = Sha256::new();
    h.update(format!("recipe {RECIPE}\nkind {}\nbase {base}\n", kind.name()));
    h.update(kind.dockerfile());
    let ws = &opts.workspace;
    let files: Vec<PathBuf> = match kind {
        Kind::Base => {
            h.update(format!("debootstrap minbase {}\n", opts.suite));
            Vec::new()
        }
        Kind::Postgres => {
            h.update(include_str!("../images/postgres/docker-entrypoint.sh"));
            Vec::new()
        }
        Kind::Bank => files_under(ws, BANK_SOURCES).map_err(|e| Error::Image(e.to_string()))?,
        Kind::Sandbox => {
            files_under(ws, &[SANDBOX_SOURCES, &["fixtures"]].concat()).map_err(|e| Error::Image(e.to_string()))?
        }
        Kind::BankInABox => {
            // It is built on the postgres image and carries both binaries, the
            // topology and the fixtures.
            h.update(inputs(opts, Kind::Postgres, base)?);
            let mut roots = [BANK_SOURCES, SANDBOX_SOURCES, BOX_WORKSPACE].concat();
            roots.sort_unstable();
            roots.dedup();
            files_under(ws, &roots).map_err(|e| Error::Image(e.to_string()))?
        }
    };
    for f in files {
        let rel = f.strip_prefix(ws).unwrap_or(&f);
        let bytes = std::fs::read(&f).map_err(|cause| Error::Read { path: f.clone(), cause })?;
        h.update(format!("{}\n{}\n", rel.display(), bytes.len()));
        h.update(&bytes);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// This machine's Debian release (`VERSION_CODENAME`), which the base follows so
/// that binaries built here run there unchanged (same glibc).
pub fn debian_suite() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines().find_map(|l| l.strip_prefix("VERSION_CODENAME=")).map(|v| v.trim_matches('"').to_string())
}

/// The Debian mirror this machine's apt uses, from its own sources (one-line
/// `sources.list` or deb822 `.sources`): the base is made from the same place.
pub fn debian_mirror() -> Option<String> {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.extension().is_some_and(|e| e == "list" || e == "sources")
                && let Ok(t) = std::fs::read_to_string(&p)
            {
                texts.push(t);
            }
        }
    }
    texts.iter().find_map(|t| mirror_in(t))
}

/// The first mirror in an apt sources text that serves the distribution's main
/// archive (Debian's, or Ubuntu's on a CI runner; not a security archive, which
/// has no base system).
fn mirror_in(text: &str) -> Option<String> {
    let is_main = |uri: &str| {
        let uri = uri.trim_end_matches('/');
        uri.starts_with("http") && (uri.ends_with("/debian") || uri.ends_with("/ubuntu"))
    };
    // One-line format: `deb [opts] URI suite components`.
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("deb ") {
            let uri = rest.split_whitespace().find(|w| !w.starts_with('['));
            if let Some(uri) = uri.filter(|u| is_main(u)) {
                return Some(uri.to_string());
            }
        }
    }
    // deb822: stanzas of `Key: value`.
    for stanza in text.split("\n\n") {
        let field = |key: &str| {
            stanza.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')).map(str::trim))
        };
        if field("Types").is_some_and(|t| t.split_whitespace().any(|w| w == "deb"))
            && let Some(uris) = field("URIs")
            && let Some(uri) = uris.split_whitespace().find(|u| is_main(u))
        {
            return Some(uri.to_string());
        }
    }
    None
}

/// `cargo build` of the binaries named, with the selection of packages
/// `cargo sandbox` builds, so that all share what cargo has already compiled.
fn cargo_build(opts: &Options, bins: &[&str], why: &str, progress: &mut dyn FnMut(&str)) -> Result<()> {
    let args = fresh::build_args(bins);
    let what = format!("cargo {}", args.join(" "));
    let mut cmd = Command::new(&opts.cargo);
    fresh::as_from_a_shell(&mut cmd)
        .current_dir(&opts.workspace)
        .env("CARGO_TARGET_DIR", &opts.target_dir)
        .args(&args)
        .arg("--locked");
    progress(&format!("{what}: {why}"));
    run_streamed(&mut cmd, None, &what, progress).map(drop)
}

/// What making the base needs: debootstrap, root, and a mirror (returned).
fn base_preconditions(opts: &Options) -> Result<String> {
    if which(&opts.debootstrap).is_none() {
        return Err(Error::Image(format!(
            "`{}` not found: the base image is made with debootstrap; install it with `apt-get install -y debootstrap`",
            opts.debootstrap.display()
        )));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Image(
            "debootstrap needs root to make the base image's file system; run `sudo sandbox images build`".into(),
        ));
    }
    debian_mirror().ok_or_else(|| {
        Error::Image(
            "no Debian or Ubuntu mirror in /etc/apt/sources.list or /etc/apt/sources.list.d; the base image is made from the one apt uses"
                .into(),
        )
    })
}

/// debootstrap a minimal Debian into a temporary directory and import it.
fn build_base(
    opts: &Options,
    docker: &Docker,
    tag: &str,
    hash: &str,
    mirror: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let scratch = Scratch::new("rootfs")?;
    let rootfs = scratch.path.join("rootfs");
    progress(&format!("{tag}: debootstrap --variant=minbase {} from {mirror}", opts.suite));
    let mut cmd = Command::new(&opts.debootstrap);
    cmd.args(["--variant=minbase", "--components=main", &opts.suite]).arg(&rootfs).arg(mirror);
    run_streamed(&mut cmd, None, "debootstrap", progress)?;
    slim(&rootfs)?;
    progress(&format!("{tag}: importing the file system into the engine"));
    let mut tar = Command::new("tar");
    tar.arg("-C").arg(&rootfs).args([
        "--numeric-owner",
        "--exclude=./proc/*",
        "--exclude=./sys/*",
        "--exclude=./dev/*",
        "-c",
        ".",
    ]);
    tar.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut tar = tar.spawn().map_err(Error::io("cannot run tar"))?;
    let stdout = tar.stdout.take().map(Stdio::from);
    let label_kind = format!("LABEL {KIND_LABEL}={}", Kind::Base.name());
    let label_inputs = format!("LABEL {INPUTS_LABEL}={hash}");
    docker.run(
        &["import", "--change", &label_kind, "--change", &label_inputs, "--change", "CMD [\"bash\"]", "-", tag],
        stdout,
        progress,
    )?;
    let out = tar.wait_with_output().map_err(Error::io("tar"))?;
    if !out.status.success() {
        return Err(Error::Image(format!(
            "tar of the base file system failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// What a sandbox's containers never read: apt's downloads, documentation,
/// manuals and translations (a third of a minimal Debian); and a dpkg setting
/// so that what later images install on the base leaves them out too, as
/// Debian's own slim images do.
fn slim(rootfs: &Path) -> Result<()> {
    let emptied = [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
    ];
    for dir in emptied {
        if let Ok(entries) = std::fs::read_dir(rootfs.join(dir)) {
            for e in entries.flatten() {
                let p = e.path();
                let _ =
                    if p.is_dir() && !p.is_symlink() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            }
        }
    }
    let nodoc = "# bank-sandbox: no documentation, manuals or translations in the images\n\
                 path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\n\
                 path-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\n";
    let cfg = rootfs.join("etc/dpkg/dpkg.cfg.d/bank-sandbox-slim");
    std::fs::write(&cfg, nodoc).map_err(Error::io(format!("cannot write {}", cfg.display())))
}

/// `docker build` of one image on the base, from a context made of its files.
fn build_on_base(
    opts: &Options,
    docker: &Docker,
    kind: Kind,
    tag: &str,
    hash: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let ctx = Scratch::new(kind.name())?;
    let write = |name: &str, text: &str| {
        std::fs::write(ctx.path.join(name), text).map_err(Error::io(format!("cannot write the {name} of {tag}")))
    };
    write("Dockerfile", kind.dockerfile())?;
    let bin = opts.target_dir.join("debug");
    match kind {
        Kind::Postgres => {
            let entry = ctx.path.join("docker-entrypoint.sh");
            write("docker-entrypoint.sh", include_str!("../images/postgres/docker-entrypoint.sh"))?;
            set_executable(&entry)?;
        }
        Kind::Bank => copy_binary(&bin.join("bank"), &ctx.path.join("bank"))?,
        Kind::Sandbox => {
            copy_binary(&bin.join("sandbox"), &ctx.path.join("sandbox"))?;
            copy_tree(&opts.workspace.join("fixtures"), &ctx.path.join("fixtures"))?;
        }
        Kind::BankInABox => {
            copy_binary(&bin.join("bank"), &ctx.path.join("bank"))?;
            copy_binary(&bin.join("sandbox"), &ctx.path.join("sandbox"))?;
            for dir in BOX_WORKSPACE {
                copy_tree(&opts.workspace.join(dir), &ctx.path.join("workspace").join(dir))?;
            }
        }
        Kind::Base => unreachable!("the base is imported, not built"),
    }
    let base_arg = match kind {
        Kind::BankInABox => format!("POSTGRES={}", opts.tag(Kind::Postgres)),
        _ => format!("BASE={}", opts.tag(Kind::Base)),
    };
    let label_kind = format!("{KIND_LABEL}={}", kind.name());
    let label_inputs = format!("{INPUTS_LABEL}={hash}");
    let ctx_path = ctx.path.to_string_lossy().to_string();
    // The host's network: the postgres image installs from the mirror apt uses here.
    let args = [
        "build",
        "--network",
        "host",
        "--build-arg",
        &base_arg,
        "--label",
        &label_kind,
        "--label",
        &label_inputs,
        "-t",
        tag,
        &ctx_path,
    ];
    docker.run(&args, None, progress).map(drop)
}

/// The binary without its debug sections (the image does not need them; it is a
/// third of the size), falling back to a plain copy where `objcopy` is missing.
fn copy_binary(from: &Path, to: &Path) -> Result<()> {
    if !from.is_file() {
        return Err(Error::Build(format!("{} was not built; run `cargo build` in the workspace", from.display())));
    }
    let stripped = Command::new("objcopy").arg("--strip-debug").arg(from).arg(to).status();
    if !stripped.is_ok_and(|s| s.success()) {
        std::fs::copy(from, to).map_err(Error::io(format!("cannot copy {}", from.display())))?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(Error::io(format!("cannot create {}", to.display())))?;
    let entries = std::fs::read_dir(from).map_err(|cause| Error::Read { path: from.to_path_buf(), cause })?;
    for e in entries.flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(Error::io(format!("cannot copy {}", src.display())))?;
        }
    }
    Ok(())
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(Error::io(format!("cannot make {} executable", path.display())))
}

fn which(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Runs a command, passing each line it prints to `progress`; on failure the
/// error carries the last lines, which say what went wrong.
fn run_streamed(cmd: &mut Command, stdin: Option<Stdio>, what: &str, progress: &mut dyn FnMut(&str)) -> Result<String> {
    cmd.stdin(stdin.unwrap_or(Stdio::null())).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(Error::io(format!("cannot run {what}")))?;
    // stderr on its own thread, so that neither pipe fills while the other is read.
    let stderr = child.stderr.take().map(|e| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(e).read_to_string(&mut s);
            s
        })
    });
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(std::result::Result::ok) {
            progress(&format!("  {line}"));
            out.push_str(&line);
            out.push('\n');
        }
    }
    let err = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    for line in err.lines() {
        progress(&format!("  {line}"));
    }
    let status = child.wait().map_err(Error::io(format!("{what} did not finish")))?;
    if status.success() {
        return Ok(out);
    }
    let all: Vec<&str> = out.lines().chain(err.lines()).collect();
    let tail = all[all.len().saturating_sub(30)..].join("\n");
    Err(Error::Image(format!("{what} failed ({status}); its last lines:\n{tail}")))
}

/// The `docker` CLI, talking to the engine `host` names (as DOCKER_HOST) or to
/// the CLI's default; it negotiates the API version with whatever engine is there.
pub(crate) struct Docker {
    bin: PathBuf,
    host: Option<String>,
}

impl Docker {
    /// The CLI on PATH and its default engine.
    pub(crate) fn cli() -> Self {
        Self { bin: "docker".into(), host: None }
    }

    fn of(opts: &Options) -> Self {
        Self { bin: opts.docker.clone(), host: opts.docker_host.clone() }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        if let Some(h) = &self.host {
            cmd.env("DOCKER_HOST", h);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// The engine answers, or an error that says how to make it.
    fn check(&self) -> Result<()> {
        let out = self
            .command()
            .args(["version", "--format", "{{.Server.APIVersion}}"])
            .output()
            .map_err(|e| {
                Error::Image(format!(
                    "the docker CLI (`{}`) cannot be run ({e}); install Docker Engine (`apt-get install -y docker.io`), or use the local backend, which needs no Docker",
                    self.bin.display()
                ))
            })?;
        if out.status.success() {
            return Ok(());
        }
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why.lines().find(|l| !l.trim().is_empty()).unwrap_or("no answer");
        Err(Error::Image(format!(
            "the Docker engine is not reachable ({why}); start it (`systemctl start docker`) or point DOCKER_HOST at a running one, or use the local backend, which needs no Docker"
        )))
    }

    /// A long-running command, its lines passed to `progress` as they come.
    fn run(&self, args: &[&str], stdin: Option<Stdio>, progress: &mut dyn FnMut(&str)) -> Result<String> {
        let what = format!("docker {}", args.first().copied().unwrap_or_default());
        run_streamed(self.command().args(args), stdin, &what, progress)
    }

    /// A short command's output; what it printed on stderr when it fails.
    pub(crate) fn output(&self, args: &[&str]) -> Result<String> {
        let what = format!("docker {}", args.first().copied().unwrap_or_default());
        let out = self.command().args(args).output().map_err(Error::io(format!("cannot run {what}")))?;
        if !out.status.success() {
            return Err(Error::Image(format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A field of a local image (`format` is a Go template); `None` when there is
    /// no such image or the field is empty.
    fn inspect(&self, tag: &str, format: &str) -> Option<String> {
        let value = self.output(&["image", "inspect", "--format", format, tag]).ok()?;
        let value = value.trim();
        (!value.is_empty() && value != "<no value>").then(|| value.to_string())
    }

    fn label(&self, tag: &str, label: &str) -> Option<String> {
        self.inspect(tag, &format!("{{{{index .Config.Labels \"{label}\"}}}}"))
    }

    /// The image id a tag names now, if any.
    fn id(&self, tag: &str) -> Option<String> {
        self.inspect(tag, "{{.Id}}")
    }

    fn size(&self, tag: &str) -> u64 {
        self.inspect(tag, "{{.Size}}").and_then(|s| s.parse().ok()).unwrap_or(0)
    }
}

/// A temporary directory removed on drop, whatever happened. debootstrap mounts
/// /proc (and more) inside the tree it makes: anything still mounted under it is
/// unmounted first, so a failed build never leaves a mount or a directory.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(what: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("bank-sandbox-image-{what}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).map_err(Error::io(format!("cannot create {}", path.display())))?;
        Ok(Self { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let prefix = self.path.to_string_lossy().to_string();
        let mut under: Vec<&str> =
            mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|m| m.starts_with(&prefix)).collect();
        // Deepest first.
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One build of a repository's images at a time on this machine.
fn lock(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(Error::io(format!("cannot open {}", path.display())))?;
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => return Ok(l),
        Err((file, _)) => file,
    };
    eprintln!("another `sandbox images build` is running; waiting for it");
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::Image(format!("cannot lock {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_comes_from_either_apt_format_and_skips_security() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\nTypes: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n";
        assert_eq!(mirror_in(deb822).as_deref(), Some("http://mirror.example/debian"));
        let one_line = "# comment\ndeb [arch=amd64] http://mirror.example/debian/ bookworm main\n";
        assert_eq!(mirror_in(one_line).as_deref(), Some("http://mirror.example/debian/"));
        assert_eq!(mirror_in("deb https://other.example/apt stable main\n"), None);
    }

    fn workspace() -> PathBuf {
        crate::find_workspace(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn inputs_follow_what_each_image_is_made_of() {
        let opts = Options::new(&workspace(), &std::env::temp_dir());
        let base = inputs(&opts, Kind::Base, "").unwrap();
        let bank = inputs(&opts, Kind::Bank, &base).unwrap();
        assert_eq!(bank, inputs(&opts, Kind::Bank, &base).unwrap(), "the same inputs hash the same");
        assert_ne!(bank, inputs(&opts, Kind::Bank, "another base").unwrap(), "a new base rebuilds what is on it");
        let mut other = opts.clone();
        other.suite = "trixie".into();
        assert_ne!(base, inputs(&other, Kind::Base, "").unwrap());
    }

    /// compose/bank.yaml and compose/local-images.yaml name the images this module tags.
    #[test]
    fn the_compose_files_name_the_images_built_here() {
        let ws = workspace();
        let opts = Options::new(&ws, &std::env::temp_dir());
        let both = crate::topology::Topology::load_all(&[ws.join(crate::TOPOLOGY), ws.join(LOCAL_IMAGES)]).unwrap();
        for s in &both.services {
            let image = s.image.as_deref().unwrap_or_default();
            assert!(
                [Kind::Postgres, Kind::Bank, Kind::Sandbox].iter().any(|k| opts.tag(*k) == image),
                "service {} runs {image}, which `sandbox images build` does not make",
                s.name
            );
        }
    }
}
