//! `serve` (the server, with zero-flag first-run set-up) and `token create|list|revoke`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use confstore_core::auth::{Role, token_hash};
use confstore_core::state::{Change, ChangesetDraft};
use confstore_server::{App, BrokerError, Config, Embedded, HttpLimits, Keys, MqttSettings, StreamAdvert};
use serde_json::json;

use super::{Ctx, default_actor, new_request_id};
use crate::cli::ServeArgs;
use crate::output;

/// File the first admin token is written to on a fresh store (mode 0600).
const ADMIN_TOKEN_FILE: &str = "admin.token";

fn server_keys(ctx: &Ctx) -> Result<Keys> {
    let keys = ctx.keys()?;
    Ok(Keys {
        signing: keys.signing_key()?,
        lkg: keys.lkg_key()?,
        master: keys.master_key()?,
        master_version: keys.master_key_version()?,
        previous_master: keys.previous_master_key()?,
    })
}

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CONFSTORE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let json = match format {
        "json" => true,
        "text" => false,
        // A person at a terminal reads compact lines; a service manager or a pipe gets JSON.
        _ => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    if json {
        builder.json().with_current_span(true).with_span_list(false).init();
    } else {
        builder.compact().init();
    }
}

pub fn serve(ctx: &Ctx, args: &ServeArgs) -> Result<ExitCode> {
    init_logging(&args.log_format);
    // Settings first: a bad one changes nothing (no store is created for it).
    let witnesses = args
        .witnesses
        .iter()
        .map(|w| confstore_core::tlog::WitnessEndpoint::parse(w).map_err(|e| anyhow!("--witness {w:?}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let db = ctx.db_path();
    let lkg = ctx.lkg_path();
    if !db.exists() && !lkg.exists() {
        // A fresh machine: set up as `init` does. (A missing database beside an LKG file is
        // not fresh: it was lost, and the server falls back to the LKG instead.)
        let (store_id, written, _) = super::init::create(ctx)?;
        tracing::info!(store_id = %store_id, database = %db.display(), keys_written = ?written, "created a new store");
    }
    for w in confstore_log::files::exposure(&ctx.data_dir) {
        tracing::warn!(warning = %w, "the data directory is not private");
    }
    let mut config = Config::new(ctx.data_dir.clone());
    config.db = ctx.db.clone();
    config.db.max_read_age = Duration::from_secs(args.max_read_secs);
    config.lkg_interval = Duration::from_millis(args.lkg_interval_ms);
    config.recover_interval = Duration::from_secs(args.recover_interval_s.max(1));
    config.head_file = args.head_file.clone();
    config.denial_window = Duration::from_secs(args.denial_summary_secs);
    config.witnesses = witnesses;
    let app = App::open(config, server_keys(ctx)?);
    bootstrap_admin_token(ctx, &app)?;
    let (mqtt, broker) = mqtt_stream(&app, args)?;
    let limits = HttpLimits {
        max_connections: args.http_max_connections,
        header_timeout: Duration::from_secs(args.http_header_timeout_s),
        idle_timeout: Duration::from_secs(args.http_idle_timeout_s),
        ..Default::default()
    };
    if !args.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %args.listen,
            "listening beyond loopback: /healthz, /readyz and /metrics need no token; guard them with a proxy"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(listen = %args.listen, mode = app.mode_name(), "serving");
        confstore_server::serve(app, listener, limits, mqtt, broker, shutdown_signal())
            .await
            .context("the server failed")
    })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Sets up the MQTT stream: the external broker given, or the embedded one (started here,
/// so a taken port is a clear error before anything listens), or none with --no-mqtt.
fn mqtt_stream(app: &App, args: &ServeArgs) -> Result<(Option<MqttSettings>, Option<Embedded>)> {
    if args.no_mqtt {
        tracing::info!("live stream off (--no-mqtt)");
        return Ok((None, None));
    }
    let store_id = app.store_id_hex().unwrap_or_default();
    let client_id =
        args.mqtt_client_id.clone().unwrap_or_else(|| format!("confstore-{}", store_id.get(..16).unwrap_or("store")));
    let (settings, broker) = match &args.mqtt_url {
        Some(url) => {
            let mut settings = MqttSettings::from_url(url, client_id)?;
            args.mqtt_access.apply(&mut settings);
            (settings, None)
        }
        None => {
            let broker = match args.mqtt_listen {
                Some(addr) => Embedded::start(addr, &client_id)?,
                None => embedded_on_default_port(&client_id)?,
            };
            // The publisher and the fleet view use the embedded broker's hub in process
            // (docs/adr/0032); clients come through the gate at addr().
            let settings = broker.publisher_settings();
            tracing::info!(listen = %broker.addr(), "embedded MQTT broker listening (clients log in with a confstore token as the password)");
            (settings, Some(broker))
        }
    };
    // A bad CA file is an error now, not a reconnect loop later.
    settings.options(None)?;
    // Where clients connect: the external broker, or the embedded broker's gate.
    let public_url = broker.as_ref().map_or_else(|| settings.url(), |b| format!("mqtt://{}", b.addr()));
    let advert = StreamAdvert {
        mqtt_url: Some(public_url.clone()),
        embedded: broker.is_some(),
        login: if broker.is_some() { "token" } else { "broker" }.into(),
    };
    app.advertise_stream(advert);
    tracing::info!(broker = %public_url, embedded = broker.is_some(), "live stream on");
    Ok((Some(settings), broker))
}

/// The embedded broker on 127.0.0.1:1883, or on a free loopback port when something (a
/// Mosquitto, often) already listens there: the zero-flag start works on such a machine too.
fn embedded_on_default_port(client_id: &str) -> Result<Embedded> {
    let default = std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_MQTT_PORT));
    match Embedded::start(default, client_id) {
        Err(BrokerError::AddressInUse { .. }) => {
            let broker = Embedded::start(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), client_id)?;
            tracing::warn!(
                taken = %default,
                listen = %broker.addr(),
                "port {DEFAULT_MQTT_PORT} is taken (another MQTT broker?); the embedded broker listens on {} instead \
                 (clients learn it from GET /api/v1/stream; fix it with --mqtt-listen, or use that broker with --mqtt-url)",
                broker.addr()
            );
            Ok(broker)
        }
        other => Ok(other?),
    }
}

/// The MQTT port the embedded broker prefers.
const DEFAULT_MQTT_PORT: u16 = 1883;

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight requests"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: finishing in-flight requests"),
    }
}

/// A store with no token yet gets one admin token, written to `<data-dir>/admin.token`
/// (0600) and never logged: without it nobody could call the API.
fn bootstrap_admin_token(ctx: &Ctx, app: &App) -> Result<()> {
    let Some(store) = app.store_without_tokens() else { return Ok(()) };
    let token = confstore_core::auth::NewToken::draw().map_err(|e| anyhow!("the random source failed: {e}"))?;
    let path = ctx.data_dir.join(ADMIN_TOKEN_FILE);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(format!("{}\n", token.text.as_str()).as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    store
        .append(ChangesetDraft {
            actor: "serve".into(),
            reason: "first admin token of a new store".into(),
            request_id: new_request_id(),
            expected_epoch: None,
            changes: vec![Change::IssueToken {
                token_id: token.id.clone(),
                name: "bootstrap-admin".into(),
                role: Role::Admin,
                service: None,
                token_hash: token_hash(&token.text),
            }],
        })
        .map_err(|e| anyhow!("cannot issue the first admin token: {e}"))?;
    tracing::info!(token_id = %token.id, file = %path.display(), "issued the first admin token; it is in the file");
    Ok(())
}

pub fn token_create(ctx: &Ctx, role: &str, service: Option<String>, name: &str, as_json: bool) -> Result<ExitCode> {
    let role = Role::parse(role)
        .ok_or_else(|| anyhow!("unknown role {role:?}; one of: {}", Role::ALL.map(Role::as_str).join(", ")))?;
    let token = confstore_core::auth::NewToken::draw().map_err(|e| anyhow!("the random source failed: {e}"))?;
    let store = ctx.store()?;
    let receipt = store
        .append(ChangesetDraft {
            actor: default_actor(),
            reason: String::new(),
            request_id: new_request_id(),
            expected_epoch: None,
            changes: vec![Change::IssueToken {
                token_id: token.id.clone(),
                name: name.to_owned(),
                role,
                service: service.clone(),
                token_hash: token_hash(&token.text),
            }],
        })
        .map_err(|e| anyhow!("{e}; no token was issued"))?;
    drop(store);
    ctx.refresh_lkg();
    if as_json {
        output::json(&json!({
            "id": token.id, "token": token.text.as_str(), "name": name, "role": role.as_str(),
            "service": service, "seq": receipt.last_seq,
        }));
    } else {
        println!("{}", token.text.as_str());
        eprintln!(
            "token {} ({name}, {role}{}) issued; it is shown only this once",
            token.id,
            service.as_deref().map(|s| format!(", service {s}")).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn token_list(ctx: &Ctx, as_json: bool) -> Result<ExitCode> {
    let state = ctx.reader()?.current_state()?;
    if as_json {
        let items: Vec<_> = state
            .tokens
            .iter()
            .map(|(id, t)| {
                json!({"id": id, "name": t.name, "role": t.role.as_str(), "service": t.service,
                       "issued_seq": t.issued_seq, "revoked_seq": t.revoked_seq})
            })
            .collect();
        output::json(&json!({ "tokens": items }));
    } else {
        for (id, t) in &state.tokens {
            let status = if t.revoked_seq.is_some() { "revoked" } else { "active" };
            println!(
                "{id}  {:<8} {:<15} {:<12} {}",
                status,
                t.role.as_str(),
                t.service.as_deref().unwrap_or("*"),
                t.name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn token_revoke(ctx: &Ctx, id: &str, as_json: bool) -> Result<ExitCode> {
    if !confstore_core::auth::is_token_id(id) {
        bail!("{id:?} is not a token id (16 hex digits; `confstore token list` shows them)");
    }
    let store = ctx.store()?;
    let receipt = store
        .append(ChangesetDraft {
            actor: default_actor(),
            reason: String::new(),
            request_id: new_request_id(),
            expected_epoch: None,
            changes: vec![Change::RevokeToken { token_id: id.to_owned() }],
        })
        .map_err(|e| anyhow!("{e}; nothing was changed"))?;
    drop(store);
    ctx.refresh_lkg();
    if as_json {
        output::json(&json!({"id": id, "revoked": true, "seq": receipt.last_seq}));
    } else {
        println!("revoked token {id} (seq {})", receipt.last_seq);
    }
    Ok(ExitCode::SUCCESS)
}
