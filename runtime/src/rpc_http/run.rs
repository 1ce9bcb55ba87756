//! The whole life of an rpc-server process: serve, announce the port, stop on a signal or on
//! `/destroy`, shut down gracefully.
//!
//! `fleet rpc-server` is this function with the built-in engines. A program that embeds fleet
//! with engines of its own runs the same server from its own binary by calling it with its own
//! registry, and a launcher can start that binary exactly as it starts `fleet rpc-server`.

use super::config::RpcHttpConfig;
use super::server::serve;
use super::wire::LISTENING_LINE_PREFIX;
use std::io::Write;

/// Serves `config` until SIGTERM, Ctrl-C or an answered `POST /destroy`, then shuts down
/// gracefully (engine destroy hooks first). Without a configured token, the random one is
/// printed on stderr. A program started by fleet's launcher reads its token with
/// [`token_from_stdin`](super::token_from_stdin) (the launcher writes it there). Prints `fleet rpc-server listening on HOST:PORT`
/// as the first stdout line, flushed, so that a parent that passed port 0 learns the port.
///
/// Returns `Ok` after a clean stop, including when a destroy hook failed (that is logged):
/// the process should then exit 0.
pub async fn run_until_stopped(config: RpcHttpConfig) -> anyhow::Result<()> {
    let generated = config.token.is_none();
    let server = serve(config).await?;
    if generated {
        // Only on loopback (`serve` refuses otherwise): whoever started it needs the token.
        eprintln!(
            "fleet rpc-server: no token configured; this run's token is {token}\n\
             fleet rpc-server: send it as `Authorization: Bearer {token}` (GET /health needs \
             none); give --token-file FILE to choose one",
            token = server.token()
        );
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{LISTENING_LINE_PREFIX}{}", server.addr())?;
        out.flush()?;
    }
    tokio::select! {
        _ = server.stopped() => {
            tracing::info!(worker = %server.worker(), "destroyed by request; exiting");
        }
        _ = shutdown_signal() => {
            tracing::info!(worker = %server.worker(), "signal received; destroying engines and stopping");
        }
    }
    if let Err(e) = server.shutdown().await {
        tracing::warn!(error = %e, "engine destroy hooks reported an error during shutdown");
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
