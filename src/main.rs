//! The `wsedge` command line: parse arguments, set up logging, call the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use wsedge::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "wsedge",
    version,
    about = "TLS-terminating edge proxy specialised for WebSockets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with the given config.
    Run {
        /// Config file.
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Load and validate the config exactly as `run` does; exit non-zero listing every problem.
    Check {
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Write a development CA (DIR/ca.pem) and certificates in certbot's layout under DIR.
    DevCerts {
        dir: PathBuf,
        /// One certificate per --name; "a.test,b.test" gives one certificate with both SANs.
        #[arg(long = "name", required = true)]
        names: Vec<String>,
    },
}

/// Logs go to stderr. Under systemd (`JOURNAL_STREAM` set) without colours or timestamps
/// (journald adds its own); `log_format = "json"` writes one JSON object per line. Access lines
/// have target `access`, everything else the module path.
fn init_logging(level: &str, format: config::LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!journald && std::io::stderr().is_terminal());
    match (format, journald) {
        (config::LogFormat::Json, true) => builder.json().without_time().init(),
        (config::LogFormat::Json, false) => builder.json().init(),
        (config::LogFormat::Text, true) => builder.without_time().init(),
        (config::LogFormat::Text, false) => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: OK ({} route(s), http {}, https {})",
                    config.display(),
                    c.routes.len(),
                    c.server.http,
                    c.server.https
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(&cfg.server.log_level, cfg.server.log_format);
            match run(config, cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::DevCerts { dir, names } => match dev_certs(&dir, &names) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

#[tokio::main]
async fn run(path: PathBuf, cfg: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let running = wsedge::server::start(cfg).await.context("cannot start")?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    wsedge::systemd::ready("serving");
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM received");
                break;
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("SIGINT received");
                break;
            }
            Some(()) = hup.recv() => {
                wsedge::systemd::reloading();
                reload(&path, &running);
                wsedge::systemd::ready("serving");
            }
        }
    }
    wsedge::systemd::stopping();
    running.shutdown().await;
    Ok(())
}

/// SIGHUP: the same load and validation as `wsedge check`; a config that does not pass is
/// refused and the running one keeps serving.
fn reload(path: &std::path::Path, running: &wsedge::server::Running) {
    let result = Config::load(path)
        .map_err(|e| {
            // One line, so journald keeps the reasons with the message.
            let reasons = e.to_string().replace("\n ", "").replace('\n', " ");
            format!("config reload refused, the running config stays: {reasons}")
        })
        .and_then(|c| {
            running
                .reload(&c)
                .map(|restart| (c.routes.len(), restart))
                .map_err(|e| format!("config reload failed, the running config stays: {e}"))
        });
    wsedge::metrics::count_reload("config", result.is_ok());
    match result {
        Err(e) => tracing::error!("{e}"),
        Ok((routes, restart)) => {
            for field in restart {
                tracing::warn!(
                    field,
                    "changed in the config file, but needs a restart to apply"
                );
            }
            tracing::info!(routes, "config reloaded");
        }
    }
}

fn dev_certs(dir: &std::path::Path, names: &[String]) -> anyhow::Result<()> {
    wsedge::tls::install_crypto_provider();
    std::fs::create_dir_all(dir)?;
    let ca = wsedge::tls::devcerts::DevCa::new()?;
    std::fs::write(dir.join("ca.pem"), &ca.cert_pem)?;
    for name in names {
        let sans: Vec<&str> = name.split(',').collect();
        let folder = sans[0].trim_start_matches("*.");
        ca.write_certbot(dir, folder, &sans, 1)?;
        println!("{}/live/{folder}/ ({})", dir.display(), sans.join(", "));
    }
    println!(
        "trust {}/ca.pem in your clients (e.g. curl --cacert)",
        dir.display()
    );
    Ok(())
}
