//! [`ClientBuilder`]: settings, their checks, and `from_env`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use confstore_core::VerifyingKey;

use crate::Client;
use crate::config::Config;
use crate::env::EnvOverrides;
use crate::error::ClientError;
use crate::mqtt::{MqttSettings, MqttUrl};
use crate::rest::Rest;
use crate::tlog::Witnesses;
use crate::updater::{OnUpdate, UpdaterSettings};
use confstore_core::tlog::WitnessKey;

/// How long `start` waits for the retained MQTT snapshot by default.
pub const STARTUP_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);

/// Environment variables read by [`ClientBuilder::from_env`].
pub mod vars {
    /// The service name (required).
    pub const SERVICE: &str = "CONFSTORE_SERVICE";
    /// The trusted Ed25519 public key(s), base64 of 32 bytes; several separated by commas
    /// or spaces during a signing-key rotation (required).
    pub const PUBLIC_KEY: &str = "CONFIG_SIGNATURE_PUBLIC_KEY";
    /// The REST base URL, e.g. `http://127.0.0.1:8080`.
    pub const URL: &str = "CONFSTORE_URL";
    /// The bearer token for REST.
    pub const TOKEN: &str = "CONFSTORE_TOKEN";
    /// The broker, `mqtt://host:port` or `mqtts://host:port`.
    pub const MQTT_URL: &str = "CONFSTORE_MQTT_URL";
    /// The client's LKG file.
    pub const LKG_PATH: &str = "CONFSTORE_LKG_PATH";
    /// The store id (hex) to accept; optional, else pinned from the first snapshot.
    pub const STORE_ID: &str = "CONFSTORE_STORE_ID";
    /// The MQTT client id; optional (a stable one makes the session survive restarts).
    pub const MQTT_CLIENT_ID: &str = "CONFSTORE_MQTT_CLIENT_ID";
    /// The MQTT user name; optional, with [`MQTT_PASSWORD`]. Without it the client logs in
    /// with the service name and its token (what `serve`'s embedded broker expects).
    pub const MQTT_USERNAME: &str = "CONFSTORE_MQTT_USERNAME";
    /// The MQTT password; optional.
    pub const MQTT_PASSWORD: &str = "CONFSTORE_MQTT_PASSWORD";
    /// A PEM file of CA certificates for `mqtts://`; optional, else the webpki roots.
    pub const MQTT_CA_FILE: &str = "CONFSTORE_MQTT_CA_FILE";
    /// `1` (or `true`): report this instance's status (docs/format.md §20); optional.
    pub const REPORT_STATUS: &str = "CONFSTORE_REPORT_STATUS";
    /// The instance id status reports name; optional, else the host name.
    pub const INSTANCE_ID: &str = "CONFSTORE_INSTANCE_ID";
    /// `0`, `false`, `off` or `no` turns the transparency-log checks off (default on; they
    /// need [`URL`]).
    pub const TLOG_CHECKS: &str = "CONFSTORE_TLOG_CHECKS";
    /// Witness verifier keys (`name+id+base64`, cosignature/v1), separated by commas or
    /// spaces; optional.
    pub const WITNESSES: &str = "CONFSTORE_WITNESSES";
    /// How many of [`WITNESSES`] must have cosigned a checkpoint for the client to accept it
    /// (default 0).
    pub const REQUIRE_WITNESSES: &str = "CONFSTORE_REQUIRE_WITNESSES";
}

enum TrustedKey {
    Base64(String),
    Key(VerifyingKey),
}

/// Settings of a [`Client`]; [`ClientBuilder::start`] fetches the first configuration.
pub struct ClientBuilder {
    service: String,
    keys: Vec<TrustedKey>,
    store_id: Option<String>,
    lkg_path: Option<PathBuf>,
    mqtt_url: Option<String>,
    mqtt_credentials: Option<(String, String)>,
    mqtt_ca_file: Option<PathBuf>,
    mqtt_discovery: bool,
    mqtt_client_id: Option<String>,
    rest_url: Option<String>,
    token: Option<String>,
    startup_timeout: Duration,
    env: Option<Vec<(String, String)>>,
    on_update: Option<OnUpdate>,
    /// `None`: the default (on when there is a broker).
    report_status: Option<bool>,
    instance_id: Option<String>,
    tlog_checks: bool,
    witnesses: Vec<String>,
    require_witnesses: usize,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No token, no password: builders end up in logs.
        f.debug_struct("ClientBuilder")
            .field("service", &self.service)
            .field("store_id", &self.store_id)
            .field("lkg_path", &self.lkg_path)
            .field("mqtt_url", &self.mqtt_url)
            .field("rest_url", &self.rest_url)
            .field("startup_timeout", &self.startup_timeout)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// A builder for `service` with nothing configured.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            keys: Vec::new(),
            store_id: None,
            lkg_path: None,
            mqtt_url: None,
            mqtt_credentials: None,
            mqtt_ca_file: None,
            mqtt_discovery: true,
            mqtt_client_id: None,
            rest_url: None,
            token: None,
            startup_timeout: STARTUP_TIMEOUT_DEFAULT,
            env: None,
            on_update: None,
            report_status: None,
            instance_id: None,
            tlog_checks: true,
            witnesses: Vec::new(),
            require_witnesses: 0,
        }
    }

    /// A builder from the process environment: see [`ClientBuilder::from_vars`].
    pub fn from_env() -> Result<Self, ClientError> {
        Self::from_vars(std::env::vars())
    }

    /// A builder from `vars` (the [`vars`] names; empty values count as unset), which are
    /// also the environment the `<SERVICE>__<KEY>` overrides are read from.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ClientError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let get = |name: &str| {
            vars.iter().rev().find(|(k, v)| k == name && !v.trim().is_empty()).map(|(_, v)| v.trim().to_owned())
        };
        let service =
            get(vars::SERVICE).ok_or_else(|| ClientError::setting(vars::SERVICE, "not set; name the service"))?;
        let keys = get(vars::PUBLIC_KEY)
            .ok_or_else(|| ClientError::setting(vars::PUBLIC_KEY, "not set; give the store's public key (base64)"))?;
        let mut builder = Self::new(service);
        for key in keys.split([',', ' ']).filter(|k| !k.is_empty()) {
            builder = builder.public_key_base64(key);
        }
        builder.rest_url = get(vars::URL);
        builder.token = get(vars::TOKEN);
        builder.mqtt_url = get(vars::MQTT_URL);
        builder.lkg_path = get(vars::LKG_PATH).map(PathBuf::from);
        builder.store_id = get(vars::STORE_ID);
        builder.mqtt_client_id = get(vars::MQTT_CLIENT_ID);
        builder.mqtt_ca_file = get(vars::MQTT_CA_FILE).map(PathBuf::from);
        if let Some(user) = get(vars::MQTT_USERNAME) {
            builder.mqtt_credentials = Some((user, get(vars::MQTT_PASSWORD).unwrap_or_default()));
        }
        if let Some(flag) = get(vars::REPORT_STATUS) {
            builder.report_status = match flag.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Some(true),
                "0" | "false" | "no" | "off" => Some(false),
                other => {
                    return Err(ClientError::setting(vars::REPORT_STATUS, format!("{other:?}: use 1 or 0")));
                }
            };
        }
        builder.instance_id = get(vars::INSTANCE_ID);
        if let Some(on) = get(vars::TLOG_CHECKS) {
            builder.tlog_checks = match on.to_ascii_lowercase().as_str() {
                "1" | "true" | "on" | "yes" => true,
                "0" | "false" | "off" | "no" => false,
                _ => return Err(ClientError::setting(vars::TLOG_CHECKS, format!("{on:?}: expected 0 or 1"))),
            };
        }
        if let Some(list) = get(vars::WITNESSES) {
            builder.witnesses = list.split([',', ' ']).filter(|k| !k.is_empty()).map(str::to_owned).collect();
        }
        if let Some(k) = get(vars::REQUIRE_WITNESSES) {
            builder.require_witnesses = k
                .parse()
                .map_err(|_| ClientError::setting(vars::REQUIRE_WITNESSES, format!("{k:?} is not a number")))?;
        }
        Ok(builder.env(vars))
    }

    /// Trusts the Ed25519 public key given as base64 of its 32 bytes (the form of
    /// `CONFIG_SIGNATURE_PUBLIC_KEY`). Call again to trust more keys (a rotation).
    pub fn public_key_base64(mut self, key: &str) -> Self {
        self.keys.push(TrustedKey::Base64(key.trim().to_owned()));
        self
    }

    /// Trusts an Ed25519 public key. Call again to trust more keys (a rotation).
    pub fn public_key(mut self, key: VerifyingKey) -> Self {
        self.keys.push(TrustedKey::Key(key));
        self
    }

    /// Accepts snapshots of this store only (hex id). Without it, the store of the first
    /// verified snapshot is pinned (and kept in the LKG file).
    pub fn store_id(mut self, hex_id: &str) -> Self {
        self.store_id = Some(hex_id.trim().to_ascii_lowercase());
        self
    }

    /// Keeps the last applied snapshot in this file (see the crate docs).
    pub fn lkg_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.lkg_path = Some(path.into());
        self
    }

    /// Receives live updates from this broker: `mqtt://host:port` or `mqtts://host:port`.
    pub fn mqtt_url(mut self, url: &str) -> Self {
        self.mqtt_url = Some(url.to_owned());
        self
    }

    /// MQTT user name and password (for an external broker with its own users). Without
    /// them the client logs in with the service name as user and its token as password,
    /// which is what `serve`'s embedded broker checks.
    pub fn mqtt_credentials(mut self, user: &str, pass: &str) -> Self {
        self.mqtt_credentials = Some((user.to_owned(), pass.to_owned()));
        self
    }

    /// Trusts the CA certificates in this PEM file for `mqtts://` (default: webpki roots).
    pub fn mqtt_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.mqtt_ca_file = Some(path.into());
        self
    }

    /// The MQTT client id; default `confstore-client-<service>-<pid>`. The session lives
    /// on the broker under this id: only an id that stays the same across restarts lets a
    /// restarted service pick up the messages queued while it was down (otherwise it
    /// catches up from the retained message and REST).
    pub fn mqtt_client_id(mut self, id: &str) -> Self {
        self.mqtt_client_id = Some(id.to_owned());
        self
    }

    /// Reports what this instance applied (docs/format.md §20) on
    /// `system/config-status/<service>/<instance>`, retained, with an `offline` last will:
    /// after start-up, after every applied version and on [`crate::Client::set_healthy`].
    /// Needs MQTT and a broker that lets the client publish its own status topic (the
    /// embedded broker does for a token that reads the service; `ops/mosquitto/confstore.acl`
    /// for a user named after the service). Default on whenever there is a broker: staged
    /// rollouts decide by these reports (docs/format.md §21). A broker that refuses the
    /// report's last will at CONNECT (an ACL without the status topics) is asked again
    /// without it, and the client then runs without reporting, saying so in a warning.
    pub fn report_status(mut self, on: bool) -> Self {
        self.report_status = Some(on);
        self
    }

    /// The instance id status reports name (1-64 of `A-Z a-z 0-9 . _ -`); default the host
    /// name. Give each instance on one host its own.
    pub fn instance_id(mut self, id: &str) -> Self {
        self.instance_id = Some(id.to_owned());
        self
    }

    /// The store's REST base URL, e.g. `http://127.0.0.1:8080`: the start-up snapshot and
    /// the source of missing versions.
    pub fn rest_url(mut self, url: &str) -> Self {
        self.rest_url = Some(url.to_owned());
        self
    }

    /// The bearer token for REST.
    pub fn token(mut self, bearer: &str) -> Self {
        self.token = Some(bearer.to_owned());
        self
    }

    /// How long `start` waits for the retained MQTT snapshot when REST gave none
    /// (default 3 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// The environment the `<SERVICE>__<KEY>` overrides are read from (default: the
    /// process environment), read once at `start`.
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env = Some(vars.into_iter().collect());
        self
    }

    /// Called synchronously for every applied version, in order, once each (never
    /// coalesced), from the client's update task: keep it short, and do not block or panic.
    /// The version resumed from the LKG file at start is not applied again, so it is not
    /// reported; read [`Client::config`] after `start` for the starting point.
    pub fn on_update(mut self, f: impl Fn(&Config) + Send + Sync + 'static) -> Self {
        self.on_update = Some(Arc::new(f));
        self
    }

    /// Fetches the first verified configuration — REST, else the retained MQTT message
    /// (waiting up to the start-up timeout), else the LKG file — and starts live updates.
    pub async fn start(mut self) -> Result<Client, ClientError> {
        self.discover_mqtt().await;
        crate::startup::start(self.check()?).await
    }

    /// Without a broker URL, asks the server where its live stream is (`GET
    /// /api/v1/stream`), so the server's URL and a token are all a client needs. A server
    /// that cannot say leaves the client on REST and its LKG file, with a warning.
    async fn discover_mqtt(&mut self) {
        if self.mqtt_url.is_some() || !self.mqtt_discovery {
            return;
        }
        let (Some(url), Some(token)) = (&self.rest_url, &self.token) else { return };
        let Ok(rest) = Rest::new(url, &self.service, Some(token.clone())) else { return };
        match rest.advertised_mqtt_url().await {
            Ok(found) => self.mqtt_url = found,
            Err(e) => {
                tracing::warn!(service = %self.service, error = %e, "cannot ask the server where its live stream is; no live updates")
            }
        }
    }

    /// Whether to run the transparency-log checks (default: yes; they need
    /// [`Self::rest_url`], and are off without it): the signed checkpoints of the log's
    /// Merkle tree the client sees must only grow, and the event behind each applied version
    /// must be in the accepted one. They run in the background and never delay applying a
    /// version; findings are counted in [`crate::Stats`] (see the crate docs).
    pub fn tlog_checks(mut self, on: bool) -> Self {
        self.tlog_checks = on;
        self
    }

    /// Trusts this witness (its cosignature/v1 verifier key, `name+id+base64`) for
    /// [`Self::require_witnesses`]. Call again for more.
    pub fn witness(mut self, verifier_key: &str) -> Self {
        self.witnesses.push(verifier_key.trim().to_owned());
        self
    }

    /// Accepts a checkpoint only when at least `k` of the [`Self::witness`]es cosigned it
    /// (default 0: none needed). A witness cosigns a checkpoint only if it is consistent
    /// with the last one it cosigned, so a store that shows this client another history
    /// than the one the witnesses saw gets its checkpoints refused (`unwitnessed`).
    pub fn require_witnesses(mut self, k: usize) -> Self {
        self.require_witnesses = k;
        self
    }

    /// Whether to ask the server for its broker URL when none is given (default: yes).
    pub fn mqtt_discovery(mut self, on: bool) -> Self {
        self.mqtt_discovery = on;
        self
    }

    /// Validates every setting before anything is fetched.
    fn check(self) -> Result<Plan, ClientError> {
        confstore_core::state::check_service_name(&self.service)
            .map_err(|e| ClientError::setting("service", e.to_string()))?;
        if self.keys.is_empty() {
            return Err(ClientError::setting(
                "public_key",
                "no trusted public key; call public_key_base64 or set CONFIG_SIGNATURE_PUBLIC_KEY",
            ));
        }
        let keys = self.keys.into_iter().map(parse_key).collect::<Result<Vec<_>, _>>()?;
        if let Some(id) = &self.store_id
            && (id.is_empty() || hex::decode(id).is_err())
        {
            return Err(ClientError::setting("store_id", format!("{id:?} is not a hex store id")));
        }
        let witness_keys = self
            .witnesses
            .iter()
            .map(|w| WitnessKey::parse(w).map_err(|e| ClientError::setting("witness", format!("{w:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if self.require_witnesses > witness_keys.len() {
            return Err(ClientError::setting(
                "require_witnesses",
                format!("{} required but {} witness keys given", self.require_witnesses, witness_keys.len()),
            ));
        }
        if self.require_witnesses > 0 && (!self.tlog_checks || self.rest_url.is_none()) {
            return Err(ClientError::setting(
                "require_witnesses",
                "witnesses are checked by the transparency-log checks: they need rest_url and tlog_checks on",
            ));
        }
        if self.rest_url.is_none() && self.mqtt_url.is_none() && self.lkg_path.is_none() {
            return Err(ClientError::setting("sources", "none configured; set rest_url, mqtt_url or lkg_path"));
        }
        // Without MQTT credentials of its own, the client logs in with its token (the
        // embedded broker's rule; user name = the service).
        let token_login = self.token.clone().map(|t| (self.service.clone(), t));
        let rest = match &self.rest_url {
            Some(url) => Some(
                Rest::new(url, &self.service, self.token)
                    .map_err(|e| ClientError::setting("rest_url", format!("{url:?}: {e}")))?,
            ),
            None => None,
        };
        // The instance id places the instance in staged rollouts' cohorts and names its
        // status reports.
        let instance = match self.instance_id {
            Some(id) => {
                confstore_core::fleet::check_instance_id(&id)
                    .map_err(|why| ClientError::setting("instance_id", format!("{id:?}: {why}")))?;
                id
            }
            None => crate::status::default_instance_id(),
        };
        // Over MQTT when there is a broker, else over REST (crate::status).
        let reporter = match (self.report_status, self.mqtt_url.is_some() || self.rest_url.is_some()) {
            (Some(false), _) => None,
            (Some(true), false) => {
                tracing::warn!(service = %self.service, "neither MQTT nor REST: this instance makes no status reports");
                None
            }
            (_, false) => None,
            (_, true) => Some(std::sync::Arc::new(crate::status::Reporter::new(&self.service, &instance))),
        };
        let mqtt = match &self.mqtt_url {
            Some(url) => {
                let mut settings = MqttSettings {
                    url: MqttUrl::parse(url).map_err(|e| ClientError::setting("mqtt_url", format!("{url:?}: {e}")))?,
                    client_id: self
                        .mqtt_client_id
                        .unwrap_or_else(|| format!("confstore-client-{}-{}", self.service, std::process::id())),
                    credentials: self.mqtt_credentials.or(token_login),
                    ca_file: self.mqtt_ca_file,
                    will: reporter.as_ref().map(|r| r.will()),
                };
                let options = settings.options()?;
                // What to connect with if the broker refuses the will (crate::mqtt).
                let without_will = match settings.will.take() {
                    Some(_) => Some(settings.options()?),
                    None => None,
                };
                Some(crate::mqtt::MqttPlan { options, without_will })
            }
            None => None,
        };
        let env = match self.env {
            Some(vars) => EnvOverrides::from_vars(&self.service, vars),
            None => EnvOverrides::from_vars(&self.service, std::env::vars()),
        };
        let updater = UpdaterSettings {
            service: self.service,
            keys,
            store_id: self.store_id,
            env,
            on_update: self.on_update,
            lkg_path: self.lkg_path,
            rest,
            reporter,
            instance,
            audit: None,
        };
        Ok(Plan {
            updater,
            mqtt,
            startup_timeout: self.startup_timeout,
            tlog_checks: self.tlog_checks,
            witnesses: Witnesses { keys: witness_keys, required: self.require_witnesses },
        })
    }
}

/// Checked settings.
pub(crate) struct Plan {
    pub(crate) updater: UpdaterSettings,
    pub(crate) mqtt: Option<crate::mqtt::MqttPlan>,
    pub(crate) startup_timeout: Duration,
    /// Whether to run the transparency-log checks (when REST is configured).
    pub(crate) tlog_checks: bool,
    /// The witness policy of those checks.
    pub(crate) witnesses: Witnesses,
}

fn parse_key(key: TrustedKey) -> Result<VerifyingKey, ClientError> {
    let text = match key {
        TrustedKey::Key(key) => return Ok(key),
        TrustedKey::Base64(text) => text,
    };
    let bad = |why: String| ClientError::setting("public_key", format!("{text:?}: {why}"));
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let bytes = engines
        .iter()
        .find_map(|engine| engine.decode(&text).ok())
        .ok_or_else(|| bad("not base64 of the 32 public key bytes".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn from_vars_reads_every_setting() {
        let key = crate::testutil::Signer::new(1).public_base64();
        let key2 = crate::testutil::Signer::new(2).public_base64();
        let b = ClientBuilder::from_vars(vars(&[
            ("CONFSTORE_SERVICE", "web"),
            ("CONFIG_SIGNATURE_PUBLIC_KEY", &format!("{key}, {key2}")),
            ("CONFSTORE_URL", "http://127.0.0.1:8080"),
            ("CONFSTORE_TOKEN", "t0k"),
            ("CONFSTORE_MQTT_URL", "mqtt://127.0.0.1:1884"),
            ("CONFSTORE_LKG_PATH", "/var/lib/web/config.lkg.json"),
            ("CONFSTORE_STORE_ID", ""),
            ("WEB__PORT", "9000"),
        ]))
        .unwrap();
        assert_eq!(b.service, "web");
        assert_eq!(b.keys.len(), 2);
        assert_eq!(b.rest_url.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(b.token.as_deref(), Some("t0k"));
        assert_eq!(b.mqtt_url.as_deref(), Some("mqtt://127.0.0.1:1884"));
        assert_eq!(b.lkg_path, Some(PathBuf::from("/var/lib/web/config.lkg.json")));
        assert_eq!(b.store_id, None, "empty means unset");
        assert!(b.env.as_ref().unwrap().iter().any(|(k, _)| k == "WEB__PORT"));
        let plan = b.check().unwrap();
        assert_eq!(plan.updater.keys.len(), 2);
        assert!(plan.mqtt.unwrap().options.client_id().starts_with("confstore-client-web-"));
    }

    #[test]
    fn clients_and_their_start_can_move_between_threads() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        let builder = ClientBuilder::new("web").on_update(|_| {});
        send(&builder);
        let start = builder.start();
        send(&start);
        drop(start);
        let _ = send_sync::<Client>;
        let _ = send_sync::<Config>;
    }

    #[test]
    fn missing_or_bad_settings_are_named() {
        let err = ClientBuilder::from_vars(vars(&[("CONFIG_SIGNATURE_PUBLIC_KEY", "x")])).unwrap_err();
        assert!(err.to_string().contains("CONFSTORE_SERVICE"), "{err}");
        let err = ClientBuilder::from_vars(vars(&[("CONFSTORE_SERVICE", "web")])).unwrap_err();
        assert!(err.to_string().contains("CONFIG_SIGNATURE_PUBLIC_KEY"), "{err}");
        let key = crate::testutil::Signer::new(1).public_base64();
        let setting = |b: ClientBuilder| match b.check() {
            Err(ClientError::InvalidSetting { setting, .. }) => setting,
            other => panic!("expected an invalid setting, got {:?}", other.map(|_| ())),
        };
        let base = || ClientBuilder::new("web").public_key_base64(&key).rest_url("http://127.0.0.1:1");
        assert_eq!(setting(ClientBuilder::new("Web!").public_key_base64(&key)), "service");
        assert_eq!(setting(ClientBuilder::new("web").rest_url("http://x")), "public_key");
        assert_eq!(setting(base().public_key_base64("AAAA")), "public_key");
        assert_eq!(setting(base().store_id("xyz")), "store_id");
        assert_eq!(setting(base().mqtt_url("http://b")), "mqtt_url");
        assert_eq!(setting(ClientBuilder::new("web").public_key_base64(&key)), "sources");
        assert!(base().mqtt_client_id("fixed").check().is_ok());
        // The transparency-log settings (docs/format.md §17.6).
        let wkey = "witness.test/w1+0483b5b8+BCalxNTbwNQMFU5BM9hOYRtqdWEPfD7vdtzpDn/PQ/ps";
        assert_eq!(setting(base().witness("w1+00000000+AAAA")), "witness");
        assert_eq!(setting(base().witness(wkey).require_witnesses(2)), "require_witnesses");
        assert_eq!(setting(base().witness(wkey).require_witnesses(1).tlog_checks(false)), "require_witnesses");
        let no_rest = ClientBuilder::new("web").public_key_base64(&key).lkg_path("/tmp/x").witness(wkey);
        assert_eq!(setting(no_rest.require_witnesses(1)), "require_witnesses");
        let plan = base().witness(wkey).require_witnesses(1).check().unwrap();
        assert_eq!((plan.witnesses.keys.len(), plan.witnesses.required, plan.tlog_checks), (1, 1, true));
        let with = |extra: &[(&str, &str)]| {
            let mut v = vec![("CONFSTORE_SERVICE", "web"), ("CONFIG_SIGNATURE_PUBLIC_KEY", key.as_str())];
            v.extend_from_slice(extra);
            ClientBuilder::from_vars(vars(&v))
        };
        assert!(!with(&[("CONFSTORE_TLOG_CHECKS", "0")]).unwrap().tlog_checks);
        let err = with(&[("CONFSTORE_TLOG_CHECKS", "maybe")]).unwrap_err();
        assert!(err.to_string().contains("CONFSTORE_TLOG_CHECKS"), "{err}");
        let b =
            with(&[("CONFSTORE_WITNESSES", &format!("{wkey}, {wkey}")), ("CONFSTORE_REQUIRE_WITNESSES", "1")]).unwrap();
        assert_eq!((b.witnesses.len(), b.require_witnesses), (2, 1));
        let err = with(&[("CONFSTORE_REQUIRE_WITNESSES", "one")]).unwrap_err();
        assert!(err.to_string().contains("CONFSTORE_REQUIRE_WITNESSES"), "{err}");
    }
}
