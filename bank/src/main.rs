//! `bank <service>`: runs one of the bank's services, configured from the
//! environment (HTTP_ADDR, DATABASE_URL, ...).

use std::process::ExitCode;

use bank::kit::{self, Application, Config};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("probe") {
        return match args.get(1).map(|url| wire::probe::probe(url)) {
            Some(Ok(())) => ExitCode::SUCCESS,
            Some(Err(e)) => {
                eprintln!("probe: {e}");
                ExitCode::FAILURE
            }
            None => {
                eprintln!("usage: bank probe <http-url | tcp-url>");
                ExitCode::from(2)
            }
        };
    }
    let Some(spec) = args.first().and_then(|name| bank::service(name)) else {
        eprintln!(
            "usage: bank <service> | bank probe <url>\n  services: {}\n  configured by HTTP_ADDR (default 0.0.0.0:8080), DATABASE_URL, SHUTDOWN_TIMEOUT_SECS, RUST_LOG",
            bank::SERVICES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        );
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bank: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let _logging = kit::init_logging();
        let run = async {
            let config = Config::from_env()?;
            let app = Application::build(spec, config, kit::shutdown_on_signal()).await?;
            app.run().await
        };
        match run.await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "{} failed", spec.name);
                eprintln!("bank {}: {e:#}", spec.name);
                ExitCode::FAILURE
            }
        }
    })
}
