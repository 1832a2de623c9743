//! Ctrl-C and SIGTERM, turned into one cancellation every long-running part listens to.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}

/// Also cancels `token` when standard input reaches its end: a parent that runs this process as
/// a child holds the pipe, so the child stops when the parent ends, even by SIGKILL.
pub fn on_stdin_eof(token: CancellationToken) {
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        tracing::info!("standard input closed; shutting down");
        token.cancel();
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let ctrl_c = tokio::signal::ctrl_c();
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this");
            let _ = ctrl_c.await;
        }
    }
}
