//! `astra run`: load and attach the dataplane, restore the lists, then poll until told to stop.
//!
//! The poll loop runs on its own thread: reading a large flow table is a long run of blocking
//! syscalls, and the HTTP endpoint must keep answering meanwhile.

pub mod api;
pub mod authlog;
pub mod config;
pub mod connlog;
pub mod crowdsec;
pub mod follow;
pub mod live;
pub mod status;
pub mod token;
pub mod ui;

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::{error, info, warn};

use crate::{
    agent::{
        config::{AgentConfig, OnExit},
        status::{AgentStatus, IfaceStatus},
    },
    clock::{mono_now_ns, now_ms, now_unix},
    dataplane::{AttachedMode, Dataplane, LinkWatch, ifindex, maps::PinnedMaps},
    engine::Engine,
    error::{Error, Result},
    flow::FlowTable,
    lists::{Lists, feeds::FeedSync},
    sink::metrics::Metrics,
    store::Store,
};

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(cfg: AgentConfig) -> Result<()> {
    // Everything the user can get wrong is checked before anything is loaded or attached.
    for iface in &cfg.ifaces {
        ifindex(iface)?;
    }
    cfg.validate()?;
    // A damaged database must not take enforcement down with it, at start or later: the
    // pinned maps keep their entries, the agent keeps detecting and blocking on an in-memory
    // store, status and metrics say decisions are not durable, and the poll loop moves back to
    // the file once it opens again. A state dir that cannot be used at all is a configuration
    // mistake and stops start-up instead.
    let store = Store::open_resilient(&cfg.state_dir)?;
    let mut engine = Engine::new(cfg.detect.clone(), &cfg.state_dir, cfg.events_path())?;
    if let Some(p) = &cfg.export_features {
        engine.export_features(p)?;
    }
    let listener = tokio::net::TcpListener::bind(cfg.metrics_addr)
        .await
        .map_err(|e| Error::Usage(format!("cannot listen on {}: {e}", cfg.metrics_addr)))?;
    let api_listener = tokio::net::TcpListener::bind(cfg.api_addr)
        .await
        .map_err(|e| Error::Usage(format!("cannot listen on {}: {e}", cfg.api_addr)))?;
    for role in token::Role::ALL {
        token::ensure(&cfg.state_dir, role)?;
    }

    crate::dataplane::ensure_pin_dir(&cfg.pin_dir)?;
    // Held until the programs are detached or handed over at exit, below.
    let pin_lock = crate::dataplane::PinDirLock::acquire(&cfg.pin_dir)?;
    let mut dataplane = Dataplane::load(&cfg.pin_dir, cfg.flow_capacity)?;
    let maps = PinnedMaps::open(&cfg.pin_dir)?
        .ok_or_else(|| Error::Layout("maps were not pinned after loading".into()))?;
    let mut lists = Lists::from_parts(store.clone(), Some(maps));
    if cfg.detect.policy.protect_syn_cookies {
        // conntrack tracks connections from now on, so those opened before a protection
        // with SYN cookies starts survive it.
        lists.track_for_synproxy()?;
    }
    // Blocks are in the maps before the first packet is seen.
    let restored = lists.restore()?;
    info!(
        restored,
        "restored block and allow entries from the state store"
    );
    if store.degraded().is_some() {
        // What the pinned maps still enforce from the previous run is all that is known.
        let adopted = lists.adopt_kernel_entries()?;
        info!(adopted, "in-memory store took over the kernel's entries");
    }

    let mut interfaces = Vec::new();
    for iface in &cfg.ifaces {
        match dataplane.attach(iface, cfg.xdp_mode) {
            Ok(a) => {
                info!(iface = %a.iface, mode = ?a.mode, egress = a.egress, "attached");
                interfaces.push(IfaceStatus {
                    iface: a.iface.clone(),
                    ifindex: a.ifindex,
                    mode: a.mode,
                    egress: a.egress,
                });
            }
            Err(e) => {
                dataplane.detach_all();
                return Err(e);
            }
        }
    }

    let watch = match dataplane.watch() {
        Ok(w) => w,
        Err(e) => {
            dataplane.detach_all();
            return Err(e);
        }
    };
    let metrics = Arc::new(Mutex::new(Metrics::new()));
    let registry = {
        let m = metrics.lock().expect("metrics lock");
        for i in &interfaces {
            m.register_iface(&i.iface);
        }
        m.set_flow_capacity(cfg.flow_capacity);
        m.registry().clone()
    };
    let server = tokio::spawn(api::serve(
        listener,
        api::metrics_router(registry.clone()),
        "metrics",
    ));
    info!(addr = %cfg.metrics_addr, "serving /metrics");
    let logins = Arc::new(api::LoginQueue::default());
    let live = Arc::new(live::Live::default());
    let train = Arc::new(AtomicBool::new(false));
    let api_server = tokio::spawn(api::serve(
        api_listener,
        api::router(api::ApiState {
            pin_dir: cfg.pin_dir.clone(),
            state_dir: cfg.state_dir.clone(),
            store: store.clone(),
            loopback: cfg.api_addr.ip().is_loopback(),
            poll_interval: cfg.poll_interval,
            read_token: cfg.api_read_token,
            live: live.clone(),
            train: train.clone(),
            logins: logins.clone(),
            predictor: Default::default(),
        }),
        "API",
    ));
    info!(addr = %cfg.api_addr, token = %token::path(&cfg.state_dir).display(), "serving the API");
    if !cfg.api_addr.ip().is_loopback() && !cfg.api_read_token {
        warn!(
            addr = %cfg.api_addr,
            "the API listens beyond loopback: anyone who reaches it can read status, flows, \
             alerts and the lists without a token (changes still need it); add \
             --api-read-token, and put it behind a firewall or a TLS proxy"
        );
    }

    let mut status = AgentStatus {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: now_unix(),
        pin_dir: cfg.pin_dir.clone(),
        metrics_addr: cfg.metrics_addr.to_string(),
        api_addr: cfg.api_addr.to_string(),
        poll_interval_ms: cfg.poll_interval.as_millis() as u64,
        flow_capacity: cfg.flow_capacity,
        interfaces,
        last_poll_at: None,
        last_poll_ms: None,
        flows_active: 0,
        running: true,
        events_path: cfg.events_path(),
        dry_run: cfg.detect.policy.dry_run,
        alerts: 0,
        auto_blocks: 0,
        model: None,
        store_error: store.degraded(),
        crowdsec: None,
        crowdsec_watcher: None,
        traffic: None,
        last_poll_at_ns: None,
    };
    status.write(&cfg.state_dir)?;

    let control = Arc::new(Control {
        logins: logins.clone(),
        live,
        train,
        ..Control::default()
    });
    // Feeds sync on their own thread, with their own map handles and the shared store: a large
    // feed swapped for another takes seconds to apply, and polls must go on meanwhile (a 1M-line
    // swap used to stop polling for 22 s).
    let feeder = {
        let control = control.clone();
        let lists = Lists::from_parts(store.clone(), PinnedMaps::open(&cfg.pin_dir)?);
        let (paths, every) = (cfg.feeds.clone(), cfg.feed_every);
        std::thread::Builder::new()
            .name("astra-feeds".into())
            .spawn(move || feed_loop(paths, every, lists, &control))
            .map_err(|e| Error::io("feed thread", e))?
    };
    // Logs are followed on threads of their own: a slow disk must not hold up the polls.
    let auth_follower = follower(&control, "astra-authlog", &cfg.auth_logs, |p, c| {
        authlog::follow(p, &c.logins, &c.stop)
    })?;
    let conn_follower = follower(&control, "astra-connlog", &cfg.zeek_conn_logs, |p, c| {
        connlog::follow(p, &c.conns, &c.stop)
    })?;
    // The bouncer and the watcher run on threads of their own, with their own map handles:
    // a slow or unreachable LAPI must never hold up a poll.
    let (bouncer, watcher) = match &cfg.crowdsec {
        Some(c) => {
            let (b, w) = c.open()?;
            let m = crate::sink::metrics::CrowdsecMetrics::register(&registry);
            let bouncer = match b {
                Some(b) => Some(crowdsec::bouncer::spawn(
                    b,
                    Lists::from_parts(store.clone(), PinnedMaps::open(&cfg.pin_dir)?),
                    control.crowdsec.clone(),
                    m.clone(),
                    control.stop_all.clone(),
                )?),
                None => None,
            };
            let watcher = match w {
                Some(w) => {
                    engine.push_to_crowdsec(true);
                    Some(crowdsec::watcher::spawn(
                        w,
                        store.clone(),
                        control.crowdsec_watcher.clone(),
                        m,
                        control.stop_all.clone(),
                    )?)
                }
                None => None,
            };
            (bouncer, watcher)
        }
        None => (None, None),
    };
    let poller = {
        let control = control.clone();
        let cfg = cfg.clone();
        let metrics = metrics.clone();
        let mut status = status.clone();
        std::thread::Builder::new()
            .name("astra-poll".into())
            .spawn(move || {
                poll_loop(
                    cfg,
                    &watch,
                    &mut lists,
                    engine,
                    &metrics,
                    &mut status,
                    &control,
                )
            })
            .map_err(|e| Error::io("poll thread", e))?
    };

    while let Signal::Reload = next_signal().await {
        let Some(reload) = cfg.reload.clone() else {
            info!("SIGHUP: this agent was started without a configuration to re-read");
            continue;
        };
        match tokio::task::spawn_blocking(move || reload.call()).await {
            Ok(Ok(new)) => {
                info!("SIGHUP: configuration re-read");
                *control.feeds_reloaded.lock().expect("reload lock") =
                    Some((new.feeds.clone(), new.feed_every));
                *control.reloaded.lock().expect("reload lock") = Some(new);
            }
            Ok(Err(e)) => {
                warn!(error = %e, "SIGHUP: configuration rejected; the running one stays in force");
            }
            Err(e) => warn!(error = %e, "SIGHUP: reload task failed"),
        }
    }
    info!("stopping");
    control.stop.store(true, Ordering::SeqCst);
    control.stop_all.store(true, Ordering::SeqCst);
    // The poll thread hands back its configuration, which a SIGHUP may have changed.
    let on_exit = match tokio::task::spawn_blocking(move || poller.join()).await {
        Ok(Ok(final_cfg)) => final_cfg.on_exit,
        _ => cfg.on_exit,
    };
    // A sync in progress finishes its current batch first.
    let _ = tokio::task::spawn_blocking(move || feeder.join()).await;
    for t in [bouncer, watcher].into_iter().flatten() {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    for t in [auth_follower, conn_follower].into_iter().flatten() {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    server.abort();
    api_server.abort();
    match on_exit {
        OnExit::Detach => dataplane.detach_all(),
        OnExit::Keep => info!(
            pin_dir = %cfg.pin_dir.display(),
            "leaving the programs attached: blocks stay enforced until the next agent takes \
             them over (`astra detach` removes them)"
        ),
    }
    drop(pin_lock);
    status.running = false;
    status.write(&cfg.state_dir)?;
    Ok(())
}

/// A thread named `name` following `paths` with `follow`, unless there are none.
fn follower(
    control: &Arc<Control>,
    name: &str,
    paths: &[PathBuf],
    follow: impl FnOnce(Vec<PathBuf>, &Control) + Send + 'static,
) -> Result<Option<std::thread::JoinHandle<()>>> {
    if paths.is_empty() {
        return Ok(None);
    }
    let (control, paths) = (control.clone(), paths.to_vec());
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || follow(paths, &control))
        .map(Some)
        .map_err(|e| Error::io(format!("{name} thread"), e))
}

/// What the signal handler tells the poll thread: stop, or take this reloaded configuration.
#[derive(Default)]
struct Control {
    stop: AtomicBool,
    reloaded: Mutex<Option<AgentConfig>>,
    /// The feed thread's part of a reload: the feed paths and how often to check them.
    feeds_reloaded: Mutex<Option<(Vec<PathBuf>, Duration)>>,
    /// Failed logins the API took, for the poll thread.
    logins: Arc<api::LoginQueue>,
    /// Conversations the conn.log followers read, for the poll thread to write into the
    /// flow table.
    conns: connlog::ConnQueue,
    /// The bouncer's state, for the status file the poll thread writes.
    crowdsec: Arc<Mutex<Option<crowdsec::BouncerStatus>>>,
    crowdsec_watcher: Arc<Mutex<Option<crowdsec::WatcherStatus>>>,
    /// `stop`, for the threads that hold their own handle on it.
    stop_all: Arc<AtomicBool>,
    /// What the web UI streams.
    live: Arc<live::Live>,
    /// `POST /api/v1/model/train` asked for training.
    train: Arc<AtomicBool>,
}

enum Signal {
    Stop,
    Reload,
}

async fn next_signal() -> Signal {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        error!("cannot install signal handlers; stop the agent with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => Signal::Stop,
        _ = term.recv() => Signal::Stop,
        _ = hup.recv() => Signal::Reload,
    }
}

/// Applies what a reload can change while running, and says which changes need a restart.
fn apply_reload(
    cfg: &mut AgentConfig,
    new: AgentConfig,
    table: &mut FlowTable,
    engine: &mut Engine,
    status: &mut AgentStatus,
) {
    let fixed = [
        ("iface", cfg.ifaces != new.ifaces),
        ("xdp_mode", cfg.xdp_mode != new.xdp_mode),
        ("metrics_addr", cfg.metrics_addr != new.metrics_addr),
        ("api_addr", cfg.api_addr != new.api_addr),
        ("flow_capacity", cfg.flow_capacity != new.flow_capacity),
        ("pin_dir", cfg.pin_dir != new.pin_dir),
        ("state_dir", cfg.state_dir != new.state_dir),
        ("events", cfg.events != new.events),
        ("auth_log", cfg.auth_logs != new.auth_logs),
        ("zeek_conn_log", cfg.zeek_conn_logs != new.zeek_conn_logs),
        (
            "crowdsec_*",
            serde_json::to_value(&cfg.crowdsec).ok() != serde_json::to_value(&new.crowdsec).ok(),
        ),
    ];
    for (key, changed) in fixed {
        if changed {
            warn!(
                key,
                "changed in the configuration; takes effect at the next restart"
            );
        }
    }
    table.set_timeouts(new.idle_timeout, new.active_timeout);
    engine.reconfigure(new.detect.clone());
    status.poll_interval_ms = new.poll_interval.as_millis() as u64;
    status.dry_run = new.detect.policy.dry_run;
    *cfg = AgentConfig {
        ifaces: cfg.ifaces.clone(),
        xdp_mode: cfg.xdp_mode,
        metrics_addr: cfg.metrics_addr,
        api_addr: cfg.api_addr,
        api_read_token: cfg.api_read_token,
        flow_capacity: cfg.flow_capacity,
        pin_dir: cfg.pin_dir.clone(),
        state_dir: cfg.state_dir.clone(),
        events: cfg.events.clone(),
        export_features: cfg.export_features.clone(),
        auth_logs: cfg.auth_logs.clone(),
        zeek_conn_logs: cfg.zeek_conn_logs.clone(),
        crowdsec: cfg.crowdsec.clone(),
        ..new
    };
    info!(
        poll_interval = ?cfg.poll_interval,
        dry_run = cfg.detect.policy.dry_run,
        "configuration reloaded"
    );
}

/// The `--feed` files, each kept applied by a [`FeedSync`].
struct Feeds {
    syncs: Vec<FeedSync>,
    last: Option<Instant>,
}

impl Feeds {
    fn new(paths: &[PathBuf]) -> Self {
        let syncs = paths
            .iter()
            .filter_map(|p| match FeedSync::new(p.clone(), None, None) {
                Ok(s) => Some(s),
                Err(e) => {
                    error!(feed = %p.display(), error = %e, "feed not usable; ignored");
                    None
                }
            })
            .collect();
        Self { syncs, last: None }
    }

    /// Syncs every feed at start and then every `every`. A feed that fails to read or parse
    /// keeps its previous entries in force (FeedSync's contract) and is retried next time.
    fn sync_if_due(&mut self, every: Duration, lists: &mut Lists) {
        if self.syncs.is_empty() || self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        for s in &mut self.syncs {
            match s.sync(lists) {
                Ok(r) if r.added + r.removed > 0 => info!(
                    feed = %s.path.display(),
                    added = r.added,
                    removed = r.removed,
                    unchanged = r.unchanged,
                    skipped = r.skipped,
                    "feed applied"
                ),
                Ok(_) => {}
                Err(e) => warn!(feed = %s.path.display(), error = %e, "feed not applied"),
            }
        }
    }
}

/// Keeps the `--feed` files applied until the agent stops, taking new paths and intervals
/// from SIGHUP reloads.
fn feed_loop(mut paths: Vec<PathBuf>, mut every: Duration, mut lists: Lists, control: &Control) {
    let mut feeds = Feeds::new(&paths);
    while !control.stop.load(Ordering::SeqCst) {
        if let Some((p, e)) = control.feeds_reloaded.lock().expect("reload lock").take() {
            every = e;
            if p != paths {
                paths = p;
                feeds = Feeds::new(&paths);
            }
        }
        feeds.sync_if_due(every, &mut lists);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How often the slower housekeeping (full kernel list scan) runs, in polls.
const LIST_SCAN_EVERY: u64 = 10;
/// How often the history is pruned, in polls.
const PRUNE_EVERY: u64 = 60;
/// Blocklist entries exported one series each (by drops).
const TOP_BLOCKED: usize = 20;

fn prune_history(cfg: &AgentConfig, lists: &Lists, engine: &Engine, metrics: &Mutex<Metrics>) {
    let keep = crate::sink::history::Retention {
        max_age: cfg.history_max_age,
        max_rows: cfg.history_max_rows,
    };
    match crate::sink::history::prune(lists.store(), keep, now_ms()) {
        Ok(p) => {
            crate::sink::report::remove(engine.incidents_dir(), &p.incidents);
            if p.alerts > 0 || !p.incidents.is_empty() {
                info!(
                    alerts = p.alerts,
                    incidents = p.incidents.len(),
                    "history pruned"
                );
            }
        }
        Err(e) => warn!(error = %e, "pruning the history"),
    }
    if let Ok((a, i)) = crate::sink::history::counts(lists.store()) {
        metrics.lock().expect("metrics lock").set_history_rows(a, i);
    }
}

fn poll_loop(
    mut cfg: AgentConfig,
    watch: &LinkWatch,
    lists: &mut Lists,
    mut engine: Engine,
    metrics: &Mutex<Metrics>,
    status: &mut AgentStatus,
    control: &Control,
) -> AgentConfig {
    let Control { stop, reloaded, .. } = control;
    let mut table = FlowTable::with_capacity(
        cfg.idle_timeout,
        cfg.active_timeout,
        cfg.flow_capacity as usize,
    );
    let mut n: u64 = 0;
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if let Some(new) = reloaded.lock().expect("reload lock").take() {
            apply_reload(&mut cfg, new, &mut table, &mut engine, status);
        }
        if n.is_multiple_of(LIST_SCAN_EVERY) {
            recover_store(lists);
            notice_detached(watch, status, metrics);
        }
        if control.train.swap(false, Ordering::SeqCst) {
            engine.request_training();
        }
        for (src, port, at_ns) in control.logins.take() {
            engine.report_login_failure(src, port, at_ns);
        }
        let logged = control.conns.take();
        if !logged.is_empty()
            && let Some(maps) = lists.maps_mut()
        {
            // Into the kernel table, where this poll reads them like counted flows.
            let (keys, values) = connlog::entries(&logged);
            if let Err(e) = maps.insert_flows(&keys, &values) {
                warn!(error = %e, "writing logged conversations into the flow table");
            }
        }
        let t0 = Instant::now();
        match poll_once(
            lists,
            &mut table,
            &mut engine,
            metrics,
            n.is_multiple_of(LIST_SCAN_EVERY),
            status,
            &control.live,
        ) {
            Ok(()) => {
                let dt = t0.elapsed();
                status.crowdsec_watcher = control
                    .crowdsec_watcher
                    .lock()
                    .expect("watcher status lock")
                    .clone();
                status.crowdsec = control
                    .crowdsec
                    .lock()
                    .expect("bouncer status lock")
                    .clone();
                status.last_poll_at = Some(now_unix());
                status.last_poll_ms = Some(dt.as_secs_f64() * 1e3);
                status.flows_active = table.len();
                if let Err(e) = status.write(&cfg.state_dir) {
                    warn!(error = %e, "writing status file");
                }
            }
            Err(e) => {
                metrics.lock().expect("metrics lock").poll_failed();
                warn!(error = %e, "poll failed");
            }
        }
        let degraded = lists.store().degraded();
        metrics
            .lock()
            .expect("metrics lock")
            .set_store_durable(degraded.is_none());
        if status.store_error != degraded {
            if status.store_error.is_none() {
                match lists.adopt_kernel_entries() {
                    Ok(n) => info!(
                        entries = n,
                        "in-memory store took over the kernel's entries"
                    ),
                    Err(e) => warn!(error = %e, "copying the kernel's entries into memory"),
                }
            }
            status.store_error = degraded;
            if let Err(e) = status.write(&cfg.state_dir) {
                warn!(error = %e, "writing status file");
            }
        }
        if n.is_multiple_of(PRUNE_EVERY) {
            prune_history(&cfg, lists, &engine, metrics);
        }
        n += 1;
        next += cfg.poll_interval;
        let now = Instant::now();
        if next < now {
            // A poll overran its interval: skip ahead rather than fire a burst of catch-ups.
            next = now + cfg.poll_interval;
        }
        while !stop.load(Ordering::SeqCst) && Instant::now() < next {
            std::thread::sleep((next - Instant::now()).min(Duration::from_millis(50)));
        }
    }
    cfg
}

/// Says so, once per interface, when the agent's programs were detached under it (by
/// `astra detach` from another shell, bpftool, `ip link set dev IF xdp off`): status shows the
/// interface as detached, /readyz fails and `astra_interface_attached` drops to 0.
fn notice_detached(watch: &LinkWatch, status: &mut AgentStatus, metrics: &Mutex<Metrics>) {
    let detached = watch.detached();
    for i in &mut status.interfaces {
        if i.mode != AttachedMode::Detached && detached.contains(&i.iface) {
            error!(
                iface = %i.iface,
                "the agent's programs were detached from this interface by someone else: \
                 nothing is filtered or counted there until the agent restarts"
            );
            i.mode = AttachedMode::Detached;
            metrics
                .lock()
                .expect("metrics lock")
                .set_attached(&i.iface, false);
        }
    }
}

/// While the store runs in memory, tries its file again; once it is back, what it holds goes
/// into the kernel maps as at start (a restored backup may hold entries the kernel lacks).
fn recover_store(lists: &mut Lists) {
    if lists.store().degraded().is_none() {
        return;
    }
    match lists.store().try_recover() {
        Ok(false) => {}
        Ok(true) => {
            let restored = lists.restore();
            info!(
                path = %lists.store().path().display(),
                restored = ?restored.as_ref().ok(),
                "state store usable again: decisions made meanwhile were written to it"
            );
            if let Err(e) = restored {
                warn!(error = %e, "restoring the lists from the recovered store");
            }
        }
        Err(e) => tracing::debug!(error = %e, "state store still unusable"),
    }
}

fn poll_once(
    lists: &mut Lists,
    table: &mut FlowTable,
    engine: &mut Engine,
    metrics: &Mutex<Metrics>,
    scan_lists: bool,
    status: &mut AgentStatus,
    live: &live::Live,
) -> Result<()> {
    let t0 = Instant::now();
    let maps = lists
        .maps_mut()
        .ok_or_else(|| Error::Layout("agent lost its maps".into()))?;
    let now_ns = mono_now_ns();
    let stats = table.poll(maps, now_ns)?;
    let mut per_iface = Vec::with_capacity(status.interfaces.len());
    for i in &status.interfaces {
        per_iface.push((i.iface.as_str(), maps.iface_counters(i.ifindex)?));
    }
    let counters: Vec<&[astra_common::Counter]> =
        per_iface.iter().map(|(_, c)| c.as_slice()).collect();
    let since = status
        .last_poll_at_ns
        .map_or(0.0, |t| now_ns.saturating_sub(t) as f64 / 1e9);
    status.traffic = Some(status::Traffic::from_counters(
        &counters,
        status.traffic.as_ref(),
        since,
    ));
    status.last_poll_at_ns = Some(now_ns);
    let expired = lists.sweep_store()?;
    for e in &expired {
        info!(net = %e.net, list = %e.kind, "entry expired");
    }
    let counts = scan_lists.then(|| {
        if let Err(e) = lists.sweep_kernel() {
            warn!(error = %e, "sweeping kernel lists");
        }
        (lists.kernel_counts(), lists.top_blocked(TOP_BLOCKED))
    });
    let secs = t0.elapsed().as_secs_f64();
    let mut m = metrics.lock().expect("metrics lock");
    for (iface, totals) in &per_iface {
        m.observe_counters(iface, totals);
    }
    m.observe_poll(&stats, stats.active, secs);
    // Detection runs right after the poll that brought the evidence, so a block reaches the
    // kernel within one poll interval of the packets that earned it.
    let closed = table.take_closed();
    let pass = engine.run(now_ns, now_ms(), table, &closed, lists, &m)?;
    status.alerts += pass.alerts as u64;
    status.auto_blocks += pass.blocks as u64;
    status.model = Some(engine.model_status());
    let mut top_blocked = None;
    if let Some((kinds, top)) = counts {
        m.set_list_entries(&kinds);
        let top: Vec<_> = top.into_iter().map(|(n, h)| (n.to_string(), h)).collect();
        m.set_top_blocked(&top);
        top_blocked = Some(top);
    }
    m.set_model_trained_at(status.model.as_ref().and_then(|s| s.trained_at));
    drop(m);
    let named: Vec<(&str, &[astra_common::Counter])> =
        per_iface.iter().map(|(i, c)| (*i, c.as_slice())).collect();
    live.observe(
        now_ms(),
        now_ns,
        &named,
        table.len(),
        t0.elapsed().as_secs_f64() * 1e3,
        &pass.raised,
    );
    // The summaries read every conversation: only for a UI, every few polls, and at once for
    // a UI that just connected.
    if live.watched() && (scan_lists || live.newly_watched()) {
        let talkers = status::talkers(&table.conversations(), TOP_TALKERS);
        live.summary(&talkers, top_blocked.as_deref());
    }
    Ok(())
}

/// Sources in the UI's live top-talker summary.
const TOP_TALKERS: usize = 10;
