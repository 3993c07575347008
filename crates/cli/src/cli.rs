//! Command-line arguments. Flags override the config file.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};

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
    /// Operate a cluster through any master: add, delete, ls, leader, stats, watch.
    Ctl(CtlArgs),
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

/// `crawler ctl`.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Masters' HTTP addresses or URLs, comma-separated; the next is tried when one cannot be
    /// reached or has no leader.
    #[arg(long, global = true, value_name = "URLS", default_value = "http://127.0.0.1:8081")]
    pub master: String,
    /// Bearer token for add and delete (`[api] token` of the masters).
    #[arg(long, global = true, value_name = "T")]
    pub token: Option<String>,
    /// Output: human tables, or the API's JSON.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `crawler ctl -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns.
    Table,
    /// The API's JSON, one document per line.
    Json,
}

/// `crawler ctl ls` targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListWhat {
    /// Stored resources (tasks) and their workers.
    Resources,
    /// Live workers and their load.
    Workers,
    /// Masters, the leader marked.
    Masters,
}

/// `crawler ctl` subcommands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Add a resource: a task of the masters' config by name, or the task in a file.
    Add {
        /// Resource (task) name.
        name: String,
        /// The task, as TOML (the keys of one [[task]], rules as [[rule]]) or JSON.
        #[arg(long, value_name = "FILE.toml|json")]
        task: Option<PathBuf>,
    },
    /// Delete a resource.
    Delete {
        /// Resource name.
        name: String,
    },
    /// List resources, workers or masters.
    Ls {
        /// What to list.
        #[arg(value_enum)]
        what: ListWhat,
    },
    /// Show the leader.
    Leader,
    /// Figures of every resource's crawl (or of one).
    Stats {
        /// Only this resource.
        name: Option<String>,
    },
    /// The stats table, refreshed until Ctrl-C.
    Watch {
        /// Stop after this many refreshes.
        #[arg(long)]
        count: Option<u64>,
        /// Milliseconds between refreshes.
        #[arg(long = "every-ms", default_value_t = 1000)]
        every_ms: u64,
    },
}
