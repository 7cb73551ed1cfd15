//! The `gatekeeper` binary: parses the command line and calls the library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

// See Cargo.toml for why.
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const EXAMPLES: &str = "\
Examples:
  gatekeeper check -c /etc/gatekeeper/gatekeeper.toml   validate a config, bind nothing
  gatekeeper run -c gatekeeper.toml                      run the proxy
  gatekeeper                                             run with ./gatekeeper.toml
  gatekeeper sim --listen 127.0.0.1:9000                 an offline GeeTest for development
  gatekeeper demo                                        the whole thing, offline, on https://localhost:8443";

/// `gatekeeper 0.1.0 (commit 1a2b3c4d5e6f)`: the commit is set by build.rs.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("GATEKEEPER_COMMIT"),
    ")"
);

/// A TLS-terminating reverse proxy that puts GeeTest CAPTCHA v4 in front of
/// an application that cannot be changed.
#[derive(Parser)]
#[command(version = VERSION, about, after_help = EXAMPLES, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run(RunArgs),
    /// Validate a configuration without binding anything; exit 2 on errors.
    Check(CheckArgs),
    /// Check a configuration, then have the running process load it and
    /// report its verdict: exit 2 if the file is wrong, 1 if the process
    /// refused it (systemd's ExecReload).
    Reload(ReloadArgs),
    /// Ask the admin listener whether gatekeeper is alive (or ready): exit 0
    /// if so, 1 if not. For a container's HEALTHCHECK (the image has no curl).
    Health(HealthArgs),
    /// Run the offline GeeTest v4 simulator.
    Sim(gatekeeper::sim::SimArgs),
    /// Run the offline demo: simulator, a legacy app, and gatekeeper in front.
    Demo(gatekeeper::demo::DemoArgs),
}

#[derive(Args)]
struct ConfigArg {
    /// Configuration file.
    #[arg(
        short,
        long = "config",
        value_name = "FILE",
        default_value = "gatekeeper.toml"
    )]
    config: PathBuf,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Check every key and value but read no secret, key file, certificate
    /// or template: for CI and templated configs (a Kubernetes ConfigMap).
    #[arg(long)]
    offline: bool,
}

#[derive(Args)]
struct ReloadArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The running gatekeeper's process id (systemd: $MAINPID).
    #[arg(long)]
    pid: i32,
    /// How long to wait for the running process's verdict.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    wait: std::time::Duration,
}

#[derive(Args)]
struct HealthArgs {
    /// The admin listener (`[server] admin`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    admin: std::net::SocketAddr,
    /// Ask /readyz (503 while draining) instead of /healthz.
    #[arg(long)]
    ready: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

/// `RUST_LOG` wins over the configured level.
/// Logs go to stdout from a thread of their own, in batches: at `info` a
/// line per request written by the workers themselves cost about a fifth of
/// their CPU time (see README, Performance). Lines are never dropped: when
/// the writer falls behind, the workers wait. Keep the guard alive until
/// exit; dropping it writes out what is queued.
fn init_logging(format: LogFormat, level: &str) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("gatekeeper-log")
        .finish(std::io::BufWriter::new(std::io::stdout()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Colour codes only for a person at a terminal, not in journald or files.
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check(args)) => check(&args.config.config, args.offline),
        Some(Command::Reload(args)) => reload(&args),
        Some(Command::Health(args)) => health(&args),
        Some(Command::Run(args)) => run(args),
        Some(Command::Sim(args)) => run_tool("sim", gatekeeper::sim::run(args)),
        Some(Command::Demo(args)) => run_tool("demo", gatekeeper::demo::run(args)),
        None => run(cli.run),
    }
}

/// Runs a subcommand that is a program of its own (sim, demo).
fn run_tool<E: std::fmt::Display>(
    name: &str,
    fut: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode {
    let _log = init_logging(LogFormat::Pretty, "info");
    match block_on(tokio::runtime::Builder::new_multi_thread(), fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatekeeper {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn reload(args: &ReloadArgs) -> ExitCode {
    let path = &args.config.config;
    let asked = gatekeeper::control::reload(path, args.pid, args.wait);
    match block_on(tokio::runtime::Builder::new_current_thread(), asked) {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(gatekeeper::control::ReloadError::Invalid(e)) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("gatekeeper reload: {e}");
            ExitCode::FAILURE
        }
    }
}

fn health(args: &HealthArgs) -> ExitCode {
    use gatekeeper::control::Probe;
    let probe = if args.ready {
        Probe::Ready
    } else {
        Probe::Alive
    };
    let asked = gatekeeper::control::health(args.admin, probe);
    match block_on(tokio::runtime::Builder::new_current_thread(), asked) {
        Ok(said) => {
            println!("{said}");
            ExitCode::SUCCESS
        }
        Err(said) => {
            eprintln!("gatekeeper health: {said}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path, offline: bool) -> ExitCode {
    use gatekeeper::config::Externals;
    let externals = if offline {
        Externals::Skip
    } else {
        Externals::Read
    };
    match gatekeeper::config::load_file_with(path, externals) {
        Ok(config) => {
            // A closed pipe (`check | head`) is not an error worth a panic.
            let mut out = std::io::stdout().lock();
            let mode = if offline {
                " (offline: secrets, key files, certificates and templates not read)"
            } else {
                ""
            };
            let _ = writeln!(out, "{}: ok{mode}\n{}", path.display(), config.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    let config = match gatekeeper::config::load_file(&args.config.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let _log = init_logging(args.log_format, &config.server.log_level);
    // Connections are served by the worker threads `server::start` makes;
    // this thread keeps the control plane (accepting, signals, reloads).
    block_on(tokio::runtime::Builder::new_current_thread(), async move {
        match gatekeeper::server::start(config).await {
            Ok(server) => {
                server.run_until_signal().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn block_on<F: std::future::Future>(mut runtime: tokio::runtime::Builder, fut: F) -> F::Output {
    match runtime.enable_all().build() {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}
