//! The `fleet` command line: one subcommand per file under `cli/`.
//!
//! Every subcommand is an `async fn run(args) -> anyhow::Result<()>`; this module parses the
//! command line, sets up logging and the tokio runtime, and turns an error into a non-zero exit
//! with the error's full chain printed.

use clap::{Parser, Subcommand};

mod bench;
mod bench_proxy;
mod bench_router;
mod cluster_args;
mod demo;
mod follow;
mod head;
mod head_client;
mod infer;
mod job;
mod logging;
mod logs;
mod mock_llm;
mod node;
mod proxy;
pub(crate) mod rollout_report;
mod rpc_server;
mod run;
mod status;
mod submit;

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
    Submit(submit::Args),
    Job(job::Args),
    Logs(logs::Args),
    Bench(bench::Args),
    Proxy(proxy::Args),
    MockLlm(mock_llm::Args),
    Infer(infer::Args),
    RpcServer(rpc_server::Args),
}

/// Parses the command line, runs the chosen subcommand on a tokio runtime and maps the result to
/// an exit code.
pub fn main() -> std::process::ExitCode {
    // First, while this is the only thread: secrets out of the environment (nothing forked
    // later inherits them), and the open-file limit up to the hard limit.
    crate::secrets::take_from_env();
    let nofile = crate::secrets::raise_nofile_limit();
    let cli = Cli::parse();
    // Jobs that draw a progress bar, and client commands that print a report, log only
    // warnings unless RUST_LOG says otherwise.
    let level = match cli.command {
        Command::Demo(_)
        | Command::Run(_)
        | Command::Bench(_)
        | Command::Status(_)
        | Command::Submit(_)
        | Command::Job(_)
        | Command::Logs(_) => "warn",
        _ => "info",
    };
    logging::init(cli.log_json, &logging::default_filter(level));
    match nofile {
        Ok((before, after)) => tracing::debug!(before, after, "open-file limit (RLIMIT_NOFILE)"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit; many connections may fail with EMFILE")
        }
    }
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
    let ok = |r: anyhow::Result<()>| r.map(|()| std::process::ExitCode::SUCCESS);
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Node(args) => ok(node::run(args).await),
            Command::Head(args) => ok(head::run(args).await),
            Command::Status(args) => ok(status::run(args).await),
            Command::Submit(args) => ok(submit::run(args).await),
            Command::Job(args) => job::run(args).await,
            Command::Logs(args) => ok(logs::run(args).await),
            Command::Bench(args) => ok(bench::run(args).await),
            Command::Proxy(args) => ok(proxy::run(args).await),
            Command::MockLlm(args) => ok(mock_llm::run(args).await),
            Command::Infer(args) => ok(infer::run(args).await),
            Command::RpcServer(args) => ok(rpc_server::run(args).await),
        }
    });
    // Workers' children die with the runtime's threads (parent-death signal); don't wait for
    // stray blocking tasks.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fleet: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Turns SIGINT and SIGTERM into stop requests for a running job: the first asks for a
/// graceful stop, the second cancels what is in flight, the third exits at once (children die
/// with this process through their parent-death signal).
pub(crate) fn job_stop_signals() -> tokio::sync::watch::Receiver<crate::rollout::run::Stop> {
    use crate::rollout::run::{Stop, StopSignal};
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = tokio::sync::watch::channel(Stop::Run);
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (int, term) else {
            tracing::warn!("cannot listen for SIGINT/SIGTERM; they end the job at once");
            return;
        };
        let mut count = 0;
        loop {
            let sig = tokio::select! {
                _ = int.recv() => StopSignal::Interrupt,
                _ = term.recv() => StopSignal::Terminate,
            };
            count += 1;
            match count {
                1 => {
                    let _ = tx.send(Stop::Graceful(sig));
                }
                2 => {
                    let _ = tx.send(Stop::Now(sig));
                }
                _ => {
                    eprintln!("fleet: stopping at once");
                    std::process::exit(sig.exit_code() as i32);
                }
            }
        }
    });
    rx
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
