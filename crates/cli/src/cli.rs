//! Command-line arguments. Flags override the config file.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

/// A distributed web crawler.
#[derive(Debug, Parser)]
#[command(name = "crawler", disable_version_flag = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the config's tasks in this process (no cluster) and exit when they are done.
    Crawl(CrawlArgs),
    /// Cluster worker; with --cluster=false, the same as `crawl`.
    Worker(WorkerArgs),
    /// Cluster master: elects a leader through etcd and serves the API.
    Master(MasterArgs),
    /// Print version, git commit and build profile.
    Version,
}

/// `crawler crawl`.
#[derive(Debug, clap::Args, Default)]
pub struct CrawlArgs {
    /// Config file (default: crawler.toml in the working directory, if present).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run only this task (repeatable).
    #[arg(long = "task", value_name = "NAME")]
    pub tasks: Vec<String>,
    /// Also write items as JSON lines to this file.
    #[arg(long, value_name = "FILE.jsonl")]
    pub output: Option<PathBuf>,
    /// Discard the tasks' stored runs and start over from the seeds.
    #[arg(long)]
    pub fresh: bool,
    /// Serve CPU profiles on this address (`/debug/pprof/profile?seconds=N`).
    #[arg(long, value_name = "ADDR")]
    pub pprof: Option<String>,
}

/// `crawler worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Join the cluster (default) or run standalone with --cluster=false.
    #[arg(long, num_args = 0..=1, default_value_t = true, default_missing_value = "true", action = ArgAction::Set)]
    pub cluster: bool,
    /// Worker id.
    #[arg(long)]
    pub id: Option<String>,
    /// Comma-separated etcd endpoints.
    #[arg(long)]
    pub etcd: Option<String>,
    /// Address of the worker's HTTP server.
    #[arg(long)]
    pub http: Option<String>,
    /// Address to advertise instead of --http.
    #[arg(long)]
    pub advertise: Option<String>,
    /// Config file, and in standalone mode `--task` and `--output`.
    #[command(flatten)]
    pub common: CrawlArgs,
}

/// `crawler master`.
#[derive(Debug, clap::Args)]
pub struct MasterArgs {
    /// Master id.
    #[arg(long)]
    pub id: String,
    /// HTTP API address.
    #[arg(long)]
    pub http: String,
    /// gRPC API address.
    #[arg(long)]
    pub grpc: String,
    /// Comma-separated etcd endpoints.
    #[arg(long)]
    pub etcd: Option<String>,
    /// Config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve CPU profiles on this address (`/debug/pprof/profile?seconds=N`).
    #[arg(long, value_name = "ADDR")]
    pub pprof: Option<String>,
}
