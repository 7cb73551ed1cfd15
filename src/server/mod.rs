//! Listeners and the lifetime of a running gatekeeper: start, reload, drain.
//!
//! What lives as long as the process (metrics, the replay store and its
//! Redis connection, readiness) is in [`Shared`]. What a reload replaces
//! (config, proxy, TLS certificate) is a [`Generation`] behind an `ArcSwap`:
//! each new connection and each new request reads the current one, and a
//! request in flight keeps the one it started with. A new generation's
//! upstream and validate clients take over the old one's pooled connections
//! when their settings did not change ([`Reuse`]). `max_connections` is one semaphore over the public listeners; a
//! permit is taken before `accept`, so excess clients wait in the kernel's
//! backlog instead of costing memory here.

pub mod acme;
mod activity;
mod admin;
pub mod connection;
mod inspect;
mod listener;
pub mod tls;
mod watch_certs;
pub mod workers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Semaphore, watch};
use tracing::{error, info, warn};

use crate::challenge::KeptStore;
use crate::config::{Config, ReplayStoreKind, ThrottleStore};
use crate::gate::Gate;
use crate::gate::admission::Admission;
use crate::metrics::{Metrics, ResultLabels};
use crate::pool::Reuse;
use crate::proxy::Proxy;
use crate::replay::{FallbackStore, MemoryStore, RedisLink, RedisStore, ReplayStore};
use listener::{Listener, Role};
use workers::{WorkerThreads, Workers};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Store(String),
    #[error("cannot start the worker threads: {0}")]
    Workers(std::io::Error),
}

/// State kept for the life of the process, across reloads.
#[derive(Debug)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub store: Arc<dyn ReplayStore>,
    /// This instance's memory store (the store itself, or Redis's fallback).
    pub local_store: Arc<MemoryStore>,
    /// Kept requests outlive a reload, as the replay store does.
    pub kept: Arc<dyn KeptStore>,
    /// The live connection pools, for a reload to take over.
    pub pools: Arc<Reuse>,
    /// The body budget and per-address counts; a reload changes only their limits.
    pub admission: Arc<Admission>,
    /// The Redis of `throttle.store` as the process started (the replay
    /// store's own link for `"replay"`).
    pub throttle_link: Option<RedisLink>,
    /// `[tls.acme]` as the process started: its certificates and challenge answers.
    pub acme: Option<Arc<acme::Acme>>,
    ready: AtomicBool,
}

impl Shared {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Everything one loaded configuration decides.
#[derive(Debug)]
pub struct Generation {
    pub config: Arc<Config>,
    pub proxy: Arc<Proxy>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

pub type Live = Arc<ArcSwap<Generation>>;

/// A started gatekeeper: its bound addresses and handles to reload or stop it.
#[derive(Debug)]
pub struct RunningServer {
    pub https_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    live: Live,
    shared: Arc<Shared>,
    listeners: HashMap<Role, Listener>,
    /// Tells every connection to finish and close (shutdown).
    drain: watch::Sender<bool>,
    connections: Arc<Semaphore>,
    max_connections: u32,
    cert_watch: tokio::task::JoinHandle<()>,
    /// Obtains and renews `[tls.acme]` certificates.
    acme_task: Option<tokio::task::JoinHandle<()>>,
    workers: Workers,
    /// Declared last: the worker threads stop when everything else is gone.
    _worker_threads: WorkerThreads,
}

/// The replay store, its local memory, and the throttle's Redis link.
type Stores = (Arc<dyn ReplayStore>, Arc<MemoryStore>, Option<RedisLink>);

fn build_stores(config: &Config, metrics: &Metrics) -> Result<Stores, StartError> {
    let replay = &config.replay;
    let local = MemoryStore::new(replay.ttl, replay.max_entries);
    local.spawn_sweeper(Duration::from_secs(10));
    let (store, replay_link): (Arc<dyn ReplayStore>, _) = match &replay.store {
        ReplayStoreKind::Memory => (local.clone(), None),
        ReplayStoreKind::Redis { url } => {
            let link = RedisLink::new(url, replay.timeout, "replay store")
                .map_err(|e| StartError::Store(format!("replay store: {e}")))?;
            let shared = RedisStore::new(link.clone(), &replay.key_prefix, replay.ttl);
            let store = Arc::new(FallbackStore::new(
                Arc::new(shared),
                local.clone(),
                replay.on_store_error,
                metrics.replay_store_errors.clone(),
            ));
            (store, Some(link))
        }
    };
    let throttle_link = match config.throttle.as_ref().map(|t| &t.store) {
        None | Some(ThrottleStore::Memory) => None,
        Some(ThrottleStore::Replay) => replay_link,
        Some(ThrottleStore::Redis { url }) => Some(
            RedisLink::new(url, replay.timeout, "throttle store")
                .map_err(|e| StartError::Store(format!("throttle store: {e}")))?,
        ),
    };
    Ok((store, local, throttle_link))
}

fn generation(config: Config, shared: &Shared) -> Result<Generation, StartError> {
    let tls = match (&config.tls, &shared.acme) {
        (Some(files), _) => {
            Some(tls::server_config(&files.cert, &files.key).map_err(StartError::Tls)?)
        }
        (None, Some(acme)) if config.acme.is_some() => {
            Some(tls::acme_server_config(acme.resolver.clone()).map_err(StartError::Tls)?)
        }
        (None, _) => None,
    };
    let proxy = shared.pools.scope(|| {
        let gate = Gate::new(
            &config,
            shared.store.clone(),
            shared.throttle_link.as_ref(),
            shared.metrics.clone(),
        );
        let kept = shared.kept.clone();
        Arc::new(Proxy::new(&config, gate, kept, shared.metrics.clone()))
    });
    Ok(Generation {
        config: Arc::new(config),
        proxy,
        tls,
    })
}

/// Binds every listener in `config` and starts serving.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    let metrics = Arc::new(Metrics::new());
    let (store, local_store, throttle_link) = build_stores(&config, &metrics)?;
    let kept = crate::challenge::store_for(&config.challenge, &config.replay)
        .map_err(|e| StartError::Store(format!("kept-request store: {e}")))?;
    let admission = Arc::new(Admission::new(
        &config.limits,
        metrics.buffered_body_bytes.clone(),
    ));
    let acme = config
        .acme
        .clone()
        .map(|a| acme::Acme::new(a, metrics.acme_orders.clone()));
    let shared = Arc::new(Shared {
        metrics,
        store,
        local_store,
        kept,
        pools: Arc::new(Reuse::default()),
        admission,
        throttle_link,
        acme: acme.clone(),
        ready: AtomicBool::new(false),
    });
    let max_connections = u32::try_from(config.limits.max_connections).unwrap_or(u32::MAX);
    let generation = generation(config, &shared)?;
    shared.metrics.set_config_hash(&generation.config.hash);
    let (workers, worker_threads) = workers::start(generation.config.server.workers)
        .await
        .map_err(StartError::Workers)?;
    let live: Live = Arc::new(ArcSwap::from_pointee(generation));
    let (drain, _) = watch::channel(false);
    let mut server = RunningServer {
        https_addr: None,
        http_addr: None,
        admin_addr: None,
        cert_watch: watch_certs::spawn(live.clone()),
        acme_task: None,
        live,
        shared,
        listeners: HashMap::new(),
        drain,
        connections: Arc::new(Semaphore::new(max_connections as usize)),
        max_connections,
        workers,
        _worker_threads: worker_threads,
    };
    server.bind_listeners().await?;
    // Once listening: the CA's validation reaches the listeners.
    server.acme_task = server.shared.acme.as_ref().map(acme::Acme::spawn);
    server.shared.ready.store(true, Ordering::Release);
    let config = server.live.load().config.clone();
    info!(upstream = %config.upstream.url, routes = config.routes.len(), hash = %config.hash, "gatekeeper started");
    Ok(server)
}

impl RunningServer {
    /// Makes the listeners match the current generation's addresses: new or
    /// moved ones are bound (all before any old one is stopped, so a failed
    /// bind changes nothing), unchanged ones are kept open.
    async fn bind_listeners(&mut self) -> Result<(), StartError> {
        let config = self.live.load().config.clone();
        let wanted = [
            (Role::Https, config.server.https),
            (Role::Http, config.server.http),
            (Role::Admin, config.server.admin),
        ];
        let mut started = Vec::new();
        for (role, addr) in wanted {
            if self.listeners.get(&role).map(|l| l.configured) == addr {
                continue;
            }
            let new = match addr {
                Some(addr) => {
                    let ctx = listener::Context {
                        live: self.live.clone(),
                        shared: self.shared.clone(),
                        connections: self.connections.clone(),
                        drain: self.drain.subscribe(),
                        workers: self.workers.clone(),
                    };
                    Some(Listener::bind(role, addr, ctx).await?)
                }
                None => None,
            };
            started.push((role, new));
        }
        for (role, new) in started {
            if let Some(old) = self.listeners.remove(&role) {
                old.stop();
            }
            if let Some(new) = new {
                self.listeners.insert(role, new);
            }
        }
        self.https_addr = self.listeners.get(&Role::Https).map(|l| l.bound);
        self.http_addr = self.listeners.get(&Role::Http).map(|l| l.bound);
        self.admin_addr = self.listeners.get(&Role::Admin).map(|l| l.bound);
        Ok(())
    }

    /// Re-reads the configuration file and the certificate files. A bad file
    /// leaves everything as it was; the error names file and line.
    pub async fn reload(&mut self) -> Result<(), String> {
        let result = self.try_reload().await;
        let outcome = if result.is_ok() { "success" } else { "failure" };
        self.shared
            .metrics
            .reloads
            .get_or_create(&ResultLabels { result: outcome })
            .inc();
        match &result {
            Ok(()) => info!(hash = %self.live.load().config.hash, "configuration reloaded"),
            Err(e) => {
                // One line, whatever the format: each problem is "; "-separated.
                let errors = e.trim_end().replace('\n', "; ");
                error!(%errors, "configuration reload failed, keeping the running configuration")
            }
        }
        result
    }

    async fn try_reload(&mut self) -> Result<(), String> {
        let current = self.live.load_full();
        let mut config =
            crate::config::load_file(&current.config.source).map_err(|e| e.to_string())?;
        let old = &current.config;
        if config.replay.store != old.replay.store
            || config.replay.max_entries != old.replay.max_entries
            || config.replay.ttl != old.replay.ttl
            || config.replay.key_prefix != old.replay.key_prefix
        {
            warn!("[replay] changes take effect at the next restart");
        }
        let store = |c: &Config| {
            c.throttle
                .as_ref()
                .map_or(ThrottleStore::Memory, |t| t.store.clone())
        };
        if store(&config) != store(old) {
            warn!("throttle.store changes take effect at the next restart");
        }
        let (new, was) = (&config.challenge, &old.challenge);
        if new.ttl != was.ttl
            || new.max_entries != was.max_entries
            || new.max_bytes != was.max_bytes
        {
            warn!("[challenge] ttl, max_entries and max_bytes take effect at the next restart");
        }
        if config.acme != old.acme {
            warn!("[tls.acme] changes take effect at the next restart");
        }
        if config.limits.max_connections != old.limits.max_connections {
            warn!("limits.max_connections takes effect at the next restart");
        }
        if config.server.workers != old.server.workers {
            warn!("server.workers takes effect at the next restart");
            // The pools are per worker thread: size them for the threads
            // that run, or two threads would share one pool.
            config.server.workers = old.server.workers;
        }
        let next = generation(config, &self.shared).map_err(|e| e.to_string())?;
        let hash = next.config.hash.clone();
        let previous = self.live.swap(Arc::new(next));
        if let Err(e) = self.bind_listeners().await {
            // Put the old generation back: its listeners are all still open.
            self.live.store(previous);
            return Err(e.to_string());
        }
        self.shared
            .admission
            .configure(&self.live.load().config.limits);
        self.shared.metrics.set_config_hash(&hash);
        Ok(())
    }

    /// Stops accepting, answers 503 on /readyz, closes idle connections
    /// (HTTP/2 gets GOAWAY), and lets requests in flight finish for at most
    /// `grace` before returning.
    pub async fn shutdown(mut self, grace: Duration) {
        self.shared.ready.store(false, Ordering::Release);
        for role in [Role::Https, Role::Http] {
            if let Some(l) = self.listeners.remove(&role) {
                l.stop();
            }
        }
        let _ = self.drain.send(true);
        let drained =
            tokio::time::timeout(grace, self.connections.acquire_many(self.max_connections)).await;
        if drained.is_err() {
            warn!("shutdown grace period ended with requests still in flight");
        }
        self.cert_watch.abort();
        if let Some(task) = &self.acme_task {
            task.abort();
        }
        for (_, l) in self.listeners.drain() {
            l.stop();
        }
    }

    /// Serves until SIGINT or SIGTERM (SIGHUP reloads), then drains for
    /// `server.shutdown_timeout`.
    pub async fn run_until_signal(mut self) {
        wait_for_signals(&mut self).await;
        let grace = self.live.load().config.server.shutdown_timeout;
        info!(grace = ?grace, "shutting down: draining connections");
        self.shutdown(grace).await;
        info!("stopped");
    }
}

#[cfg(unix)]
async fn wait_for_signals(server: &mut RunningServer) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => {
                info!("SIGHUP: reloading the configuration");
                let _ = server.reload().await;
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(_: &mut RunningServer) {
    let _ = tokio::signal::ctrl_c().await;
}
