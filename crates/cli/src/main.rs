//! The `crawler` binary: parse arguments, set up logging, load config, run a command.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use crawler::cli::{Cli, Command, CrawlArgs, CtlArgs, MasterArgs, WorkerArgs};
use crawler::commands::{crawl, ctl, master, version};
use crawler::config::{Config, ConfigError};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for bad flags or config.
const EXIT_USAGE: u8 = 2;
/// Exit code when not one seed of any task could be fetched.
const EXIT_NOTHING_FETCHED: u8 = 3;
/// Exit code after an interrupt (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap lists what is missing on the lines after its first (and ends
            // with a usage hint, left out).
            let msg = e.to_string();
            let lines: Vec<&str> = msg
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            let line = lines.join(" ");
            let line = line.trim_start_matches("error: ");
            eprintln!("crawler: {}", if line.is_empty() { "bad arguments" } else { line });
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let tty = std::io::stderr().is_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(move || {
            // On a terminal, clear the progress line before a log line; it is redrawn later.
            let mut err = std::io::stderr();
            if tty {
                let _ = err.write_all(b"\r\x1b[2K");
            }
            err
        })
        .with_ansi(tty)
        .init();
    match cli.command {
        Command::Version => {
            println!("{}", version::line());
            ExitCode::SUCCESS
        }
        Command::Crawl(args) => standalone(args),
        Command::Worker(w) if !w.cluster => {
            // Cluster flags on a standalone worker would be silently ignored.
            let cluster_only = [
                ("--id", w.id.is_some()),
                ("--etcd", w.etcd.is_some()),
                ("--http", w.http.is_some()),
                ("--advertise", w.advertise.is_some()),
            ];
            match cluster_only.iter().find(|(_, given)| *given) {
                Some((flag, _)) => usage_error(&ConfigError::Key {
                    key: (*flag).into(),
                    problem: "only with --cluster (--cluster=false crawls standalone)".into(),
                }),
                None => standalone(w.common),
            }
        }
        Command::Worker(args) => worker(args),
        Command::Master(args) => master(args),
        Command::Ctl(args) => run_ctl(args),
    }
}

fn run_ctl(args: CtlArgs) -> ExitCode {
    let Some(runtime) = runtime() else { return ExitCode::FAILURE };
    let mut out = std::io::stdout();
    let result = runtime.block_on(async move {
        tokio::select! {
            r = ctl::run(args, &mut out) => r.map(|()| true),
            // Interrupted: an add or delete may or may not have happened (130, as `crawl`).
            _ = tokio::signal::ctrl_c() => Ok(false),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_INTERRUPTED),
        Err(e) => {
            eprintln!("crawler: ctl: {}", e.message.replace('\n', " "));
            ExitCode::from(e.code)
        }
    }
}

fn master(args: MasterArgs) -> ExitCode {
    let prepared = Config::load(args.config.as_deref()).and_then(|config| {
        config.validate()?;
        let http = master::parse_listen("--http", &args.http)?;
        let grpc = master::parse_listen("--grpc", &args.grpc)?;
        let cfg = master::master_config(&args, &config, http, grpc)?;
        let pprof = pprof_addr(args.pprof.as_deref())?;
        Ok((cfg, http, grpc, pprof))
    });
    let (cfg, http, grpc, pprof) = match prepared {
        Ok(p) => p,
        Err(e) => return usage_error(&e),
    };
    let Some(runtime) = runtime() else { return ExitCode::FAILURE };
    runtime.block_on(async move {
        if let Err(code) = start_pprof(pprof).await {
            return code;
        }
        let (http_listener, grpc_listener) =
            match (tokio::net::TcpListener::bind(http).await, tokio::net::TcpListener::bind(grpc).await) {
                (Ok(h), Ok(g)) => (h, g),
                (Err(e), _) => return bind_error("--http", http, e),
                (_, Err(e)) => return bind_error("--grpc", grpc, e),
            };
        serve_until_signal("master", |shutdown| {
            crawler_master::run(cfg, http_listener, grpc_listener, shutdown)
        })
        .await
    })
}

fn worker(args: WorkerArgs) -> ExitCode {
    let prepared = Config::load(args.common.config.as_deref()).and_then(|config| {
        config.validate()?;
        // Standalone flags: in a cluster the masters say what runs, and items and state go
        // to `[storage]`.
        let standalone_only = [
            ("--task", !args.common.tasks.is_empty()),
            ("--output", args.common.output.is_some()),
            ("--fresh", args.common.fresh),
        ];
        if let Some((flag, _)) = standalone_only.iter().find(|(_, given)| *given) {
            return Err(ConfigError::Key {
                key: (*flag).into(),
                problem: "only with --cluster=false (in a cluster the masters assign the tasks)".into(),
            });
        }
        let id = args.id.clone().filter(|i| !i.trim().is_empty() && !i.contains('/')).ok_or_else(|| {
            ConfigError::Key {
                key: "--id".into(),
                problem: "a worker id without '/' is required in cluster mode".into(),
            }
        })?;
        let http = master::parse_listen("--http", args.http.as_deref().unwrap_or("127.0.0.1:0"))?;
        let etcd = master::etcd_endpoints(args.etcd.as_deref(), &config)?;
        let pprof = pprof_addr(args.common.pprof.as_deref())?;
        if let Some(a) = &args.advertise {
            master::check_advertise(a)?;
        }
        Ok((config, id, http, etcd, pprof))
    });
    let (config, id, http, etcd, pprof) = match prepared {
        Ok(p) => p,
        Err(e) => return usage_error(&e),
    };
    let Some(runtime) = runtime() else { return ExitCode::FAILURE };
    runtime.block_on(async move {
        if let Err(code) = start_pprof(pprof).await {
            return code;
        }
        let (sinks, state) = match storage_or_exit(&config) {
            Ok(s) => s,
            Err(code) => return code,
        };
        let listener = match tokio::net::TcpListener::bind(http).await {
            Ok(l) => l,
            Err(e) => return bind_error("--http", http, e),
        };
        let bound = listener.local_addr().unwrap_or(http);
        let cfg = crawler_worker::WorkerConfig {
            id,
            advertise: args.advertise.clone().unwrap_or_else(|| master::advertise(bound, &etcd)),
            etcd,
            lease_ttl: config.cluster.lease_ttl.0,
            engine: config.engine.clone(),
            tasks: config.tasks.clone(),
            batch: config.storage.batch,
            outage: config.storage.outage.0,
        };
        let reopen: crawler_worker::Reopen = {
            let config = config.clone();
            std::sync::Arc::new(move || {
                crawl::open_sinks(&config, None, false)
                    .map_err(|e| crawler_engine::SinkError { sink: "writer", message: e.to_string() })
            })
        };
        serve_until_signal("worker", |shutdown| {
            crawler_worker::run(cfg, listener, sinks, reopen, state, shutdown)
        })
        .await
    })
}

type Storage = (Vec<Box<dyn crawler_engine::Sink>>, std::sync::Arc<dyn crawler_engine::StateStore>);

/// Opens the configured storage; a config problem exits 2, a storage failure 1.
fn storage_or_exit(config: &Config) -> Result<Storage, ExitCode> {
    let opened = crawl::open_sinks(config, None, false).and_then(|s| Ok((s, crawl::open_state(config)?)));
    opened.map_err(|e| match e {
        crawl::RunError::Config(e) => usage_error(&e),
        e => {
            eprintln!("crawler: {e}");
            ExitCode::FAILURE
        }
    })
}

/// Runs a server until SIGINT or SIGTERM, then lets it shut down in order.
async fn serve_until_signal<E, F>(what: &str, serve: impl FnOnce(CancellationToken) -> F) -> ExitCode
where
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<(), E>>,
{
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    match serve(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crawler: {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The multi-threaded runtime every long-running command uses.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("crawler: runtime: {e}");
            None
        }
    }
}

/// The `--pprof` address, if given.
fn pprof_addr(flag: Option<&str>) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    flag.map(|a| master::parse_listen("--pprof", a)).transpose()
}

/// Starts the profiling server (for the life of the process), saying where on stderr.
async fn start_pprof(addr: Option<std::net::SocketAddr>) -> Result<(), ExitCode> {
    let Some(addr) = addr else { return Ok(()) };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| bind_error("--pprof", addr, e))?;
    let bound = listener.local_addr().unwrap_or(addr);
    crawler::pprof::serve(listener, CancellationToken::new());
    eprintln!("pprof: serving on http://{bound}/debug/pprof/profile?seconds=30");
    Ok(())
}

fn bind_error(flag: &str, addr: std::net::SocketAddr, e: std::io::Error) -> ExitCode {
    eprintln!("crawler: {flag}: cannot listen on {addr}: {e}");
    ExitCode::FAILURE
}

fn usage_error(e: &ConfigError) -> ExitCode {
    eprintln!("crawler: config: {e}");
    ExitCode::from(EXIT_USAGE)
}

fn standalone(args: CrawlArgs) -> ExitCode {
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let tasks = match config.validate().and_then(|all| crawl::select_tasks(all, &args.tasks)) {
        Ok(t) => t,
        Err(e) => return usage_error(&e),
    };
    let pprof = match pprof_addr(args.pprof.as_deref()) {
        Ok(p) => p,
        Err(e) => return usage_error(&e),
    };
    let Some(runtime) = runtime() else { return ExitCode::FAILURE };
    runtime.block_on(async move {
        if let Err(code) = start_pprof(pprof).await {
            return code;
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        let progress = std::io::stderr().is_terminal();
        let output = args.output.as_deref();
        let ntasks = tasks.len();
        match crawl::run(&config, tasks, output, args.fresh, shutdown.clone(), progress).await {
            Ok(outcome) => {
                // A closed stdout loses the summary, not the exit status.
                let line = serde_json::to_string(&outcome.summary).expect("summary serializes");
                if let Err(e) = writeln!(std::io::stdout(), "{line}") {
                    eprintln!("crawler: the summary could not be written to stdout: {e}");
                }
                if shutdown.is_cancelled() {
                    ExitCode::from(EXIT_INTERRUPTED)
                } else if !outcome.stopped.is_empty() {
                    for (task, why) in &outcome.stopped {
                        eprintln!("crawler: {task} stopped before its end: {why}");
                    }
                    ExitCode::FAILURE
                } else if outcome.fetched_nothing.len() == ntasks {
                    let reasons: Vec<String> =
                        outcome.fetched_nothing.iter().map(|(task, why)| format!("{task}: {why}")).collect();
                    eprintln!("crawler: not one seed could be fetched ({})", reasons.join("; "));
                    ExitCode::from(EXIT_NOTHING_FETCHED)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(crawl::RunError::Config(e)) => usage_error(&e),
            Err(e) => {
                eprintln!("crawler: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Cancels on the first SIGINT or SIGTERM; a second one exits at once.
async fn stop_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    for round in 0..2 {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        if round == 0 {
            tracing::warn!("stopping (signal again to exit at once)");
            shutdown.cancel();
        }
    }
    std::process::exit(i32::from(EXIT_INTERRUPTED));
}
