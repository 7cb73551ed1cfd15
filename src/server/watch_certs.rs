//! Certificate renewal without a signal: the certificate and key files are
//! polled, and a changed pair is loaded for the next handshake. Polling the
//! files' size and modification time follows certbot's symlink swaps too.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{error, info};

use super::{Generation, Live, tls};

const POLL: Duration = Duration::from_secs(1);

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &std::path::Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

pub fn spawn(live: Live) -> tokio::task::JoinHandle<()> {
    // The baseline is the files as loaded at start, not as at the first poll:
    // a renewal in the first second must not become the baseline.
    let mut seen = live
        .load()
        .config
        .tls
        .as_ref()
        .map(|f| (f.cert.clone(), stamp(&f.cert), stamp(&f.key)));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(POLL).await;
            let generation = live.load_full();
            let Some(files) = generation.config.tls.clone() else {
                seen = None;
                continue;
            };
            let now = (files.cert.clone(), stamp(&files.cert), stamp(&files.key));
            match &seen {
                None => seen = Some(now),
                Some(before) if *before == now => {}
                Some(_) => {
                    seen = Some(now);
                    match tls::server_config(&files.cert, &files.key) {
                        Ok(config) => {
                            live.rcu(|g| {
                                Arc::new(Generation {
                                    config: g.config.clone(),
                                    proxy: g.proxy.clone(),
                                    tls: Some(config.clone()),
                                })
                            });
                            info!(cert = %files.cert.display(), "certificate files changed: new certificate loaded");
                        }
                        // Half-written files during a renewal: keep the old one, try again next change.
                        Err(e) => error!(
                            "certificate files changed but cannot be loaded, keeping the current certificate: {e}"
                        ),
                    }
                }
            }
        }
    })
}
