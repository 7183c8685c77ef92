//! `cachewarden serve`: the collector in front of the store, until SIGTERM or SIGINT.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::ExitStatus;
use crate::cli::ServeArgs;
use crate::commands::open_store;
use crate::config::Config;
use crate::error::InputError;
use crate::printer::Printer;
use crate::serve::{Collector, TlsFiles};

pub async fn serve(
    args: &ServeArgs,
    db: &Path,
    config: Config,
    printer: Printer,
) -> Result<ExitStatus> {
    if config.issuers.is_empty() && config.tokens.is_empty() {
        printer.warn("no `[[issuer]]` or `[[token]]` in the config: every run will be refused");
    }
    for issuer in &config.issuers {
        if issuer.kind == crate::config::IssuerKind::Generic && issuer.run_claim.is_none() {
            printer.warn(format!(
                "issuer `{}` names no `run_claim`: its tokens vouch for the pipeline only, and a job holding one can record under any run id of that pipeline",
                crate::report::escape::Term(&issuer.issuer)
            ));
        }
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let files = TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            };
            // Read now, so a bad certificate is an error before listening.
            files
                .acceptor()
                .map_err(|e| InputError::invalid(format!("--tls-cert/--tls-key: {e}")))?;
            Some(files)
        }
        _ => None,
    };
    let store = open_store(db)?;
    let collector = Collector::new(store, config).map_err(InputError::invalid)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on `{}`", args.listen))?;
    let local = listener.local_addr()?;
    eprintln!("{}", crate::serve::describe_listen(local, tls.is_some()));
    crate::serve::run(listener, tls, Arc::new(collector), shutdown_signal())
        .await
        .context("the collector stopped")?;
    printer.status("collector stopped; every accepted run is stored");
    Ok(ExitStatus::Success)
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
    }
}
