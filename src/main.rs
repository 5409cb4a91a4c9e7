//! The `wsedge` command line: parse arguments, set up logging, call the library (`wsedge::run`).

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
    /// Hosted rooms: `import` copies a redb store's rooms into a `cluster = "replicate"` route.
    Rooms {
        #[command(subcommand)]
        command: RoomsCommand,
    },
    /// Write a development CA (DIR/ca.pem) and certificates in certbot's layout under DIR.
    DevCerts {
        dir: PathBuf,
        /// One certificate per --name; "a.test,b.test" gives one certificate with both SANs.
        #[arg(long = "name", required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum RoomsCommand {
    /// Copy every room of a redb store (closed: no server using it) into a replicate route's
    /// Redis streams, so that a single node can grow into a cluster without losing documents.
    Import {
        /// The config naming [redis] and the route.
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// The redb file (a rooms route's `store`).
        #[arg(long)]
        store: PathBuf,
        /// The replicate route's `path`, e.g. /collab.
        #[arg(long)]
        route: String,
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
                for w in c.warnings() {
                    eprintln!("warning: {w}");
                }
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
            for w in cfg.warnings() {
                tracing::warn!("{w}");
            }
            match run(config, cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{:#}", anyhow::Error::from(e));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Rooms {
            command:
                RoomsCommand::Import {
                    config,
                    store,
                    route,
                },
        } => rooms_import(&config, &store, &route),
        Command::DevCerts { dir, names } => match dev_certs(&dir, &names) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{:#}", anyhow::Error::from(e));
                ExitCode::FAILURE
            }
        },
    }
}

#[tokio::main]
async fn run(path: PathBuf, cfg: Config) -> Result<(), wsedge::run::RunError> {
    wsedge::run::serve(path, cfg).await
}

fn dev_certs(dir: &std::path::Path, names: &[String]) -> Result<(), wsedge::run::RunError> {
    for cert in wsedge::run::write_dev_certs(dir, names)? {
        println!("{}/ ({})", cert.live.display(), cert.names.join(", "));
    }
    println!(
        "trust {}/ca.pem in your clients (e.g. curl --cacert)",
        dir.display()
    );
    Ok(())
}

/// `wsedge rooms import`: copy a redb store's rooms into a replicate route.
fn rooms_import(config: &std::path::Path, store: &std::path::Path, route: &str) -> ExitCode {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(wsedge::rooms::cluster::import(&config, store, route)) {
        Ok(n) => {
            println!("imported {n} rooms from {} into {route}", store.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("import failed: {e}");
            ExitCode::from(1)
        }
    }
}
