//! The `fleet` command line: one subcommand per file under `cli/`.
//!
//! Every subcommand is an `async fn run(args) -> anyhow::Result<()>`; this module parses the
//! command line, sets up logging and the tokio runtime, and turns an error into a non-zero exit
//! with the error's full chain printed.

use clap::{Parser, Subcommand};

mod bench;
mod bench_proxy;
mod cluster_args;
mod demo;
mod head;
mod logging;
mod mock_llm;
mod node;
mod proxy;
mod rollout_report;
mod rpc_server;
mod run;
mod status;

/// fleet: a distributed runtime for LLM reinforcement-learning jobs.
///
/// Places, starts, supervises and talks to the workers of a job: in-process RPC servers that
/// host engines, external HTTP services (inference servers, OpenAI-compatible proxies) forked
/// next to them, and rollout workers.
#[derive(Debug, Parser)]
#[command(name = "fleet", version, propagate_version = true)]
pub struct Cli {
    /// Log as JSON lines instead of the human format (filter with RUST_LOG, default `info`).
    #[arg(long, global = true)]
    log_json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Demo(demo::Args),
    Run(run::Args),
    Node(node::Args),
    Head(head::Args),
    Status(status::Args),
    Bench(bench::Args),
    Proxy(proxy::Args),
    MockLlm(mock_llm::Args),
    RpcServer(rpc_server::Args),
}

/// Parses the command line, runs the chosen subcommand on a tokio runtime and maps the result to
/// an exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Jobs that draw a progress bar log only warnings unless RUST_LOG says otherwise.
    let default_filter = match cli.command {
        Command::Demo(_) | Command::Run(_) | Command::Bench(_) => "warn",
        _ => "info",
    };
    logging::init(cli.log_json, default_filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleet: cannot start the tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Node(args) => node::run(args).await,
            Command::Head(args) => head::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Proxy(args) => proxy::run(args).await,
            Command::MockLlm(args) => mock_llm::run(args).await,
            Command::RpcServer(args) => rpc_server::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM, whichever comes first.
pub(crate) async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
