//! Emulator test builders: start an emulator that records its requests, a `ClientConfig` and a
//! connected client for it, seeds of companies and service users spelled as either dialect
//! stores them, and counts over the request log.

use std::time::Duration;

use ozform::emulator::{self, CompanyRecord, EmulatorConfig, Faults, Handle, Quirks, Snapshot, UserRecord};
use ozform::model::{ApiVersion, LivePermissions};
use ozform::oz::{ClientConfig, OzClient, RetryPolicy};

/// An emulator to start, recording its requests (`Handle::requests`):
/// `Emulator::new(ApiVersion::V6).seed(seed(..)).quirks(..).start().await`.
pub struct Emulator {
    config: EmulatorConfig,
}

impl Emulator {
    pub fn new(version: ApiVersion) -> Self {
        let mut config = EmulatorConfig::new(version);
        config.record_requests = true;
        Self { config }
    }
    pub fn seed(mut self, seed: Snapshot) -> Self {
        self.config.seed = Some(seed);
        self
    }
    pub fn quirks(mut self, quirks: Quirks) -> Self {
        self.config.quirks = quirks;
        self
    }
    pub fn faults(mut self, faults: Faults) -> Self {
        self.config.faults = faults;
        self
    }
    /// A hidden pool of `n` workers: at most `n` requests served at once, the others in line.
    pub fn capacity(mut self, n: usize) -> Self {
        self.config.capacity = Some(n);
        self
    }
    /// With a capacity: shed (503, not handled) a request that waited this long in line.
    pub fn shed_after(mut self, wait: Duration) -> Self {
        self.config.shed_after = Some(wait);
        self
    }
    /// Any other setting of the configuration.
    pub fn with(mut self, adjust: impl FnOnce(&mut EmulatorConfig)) -> Self {
        adjust(&mut self.config);
        self
    }
    pub async fn start(self) -> Handle {
        emulator::start(self.config).await.unwrap()
    }
}

/// A configuration of the emulator's admin with fast retries (4 attempts, 1 to 5 ms apart)
/// and a 5 s request timeout, so that failing tests fail fast.
pub fn client_config(handle: &Handle) -> ClientConfig {
    let mut config = ClientConfig::new(handle.url(), handle.admin_email(), handle.admin_password().clone());
    config.retry = RetryPolicy {
        max_attempts: 4,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_elapsed: Duration::from_secs(10),
    };
    config.request_timeout = Duration::from_secs(5);
    config
}

/// A client connected with `client_config` as `adjust` changes it.
pub async fn connect(handle: &Handle, adjust: impl FnOnce(&mut ClientConfig)) -> OzClient {
    let mut config = client_config(handle);
    adjust(&mut config);
    OzClient::connect(config).await.unwrap()
}

/// The email of the `i`-th seeded service user.
pub fn email(i: usize) -> String {
    format!("user{i}@x.test")
}

/// A service user `user{i}@x.test` of `company_id`, spelled as `version` stores one (API 6:
/// `CLIENT_SERVICE`; API 5: `CLIENT` with `is_service`), named `F L`, with every permission but
/// `documents`.
pub fn service_user(version: ApiVersion, i: usize, company_id: &str) -> UserRecord {
    let user_type = match version {
        ApiVersion::V5 => "CLIENT",
        ApiVersion::V6 => "CLIENT_SERVICE",
    };
    let mut user = UserRecord::new(email(i), user_type.into(), Some(company_id.to_string()));
    user.is_service = true;
    user.first_name = "F".into();
    user.last_name = "L".into();
    user.permissions = LivePermissions { documents: false, ..LivePermissions::default() };
    user
}

pub fn v5_user(i: usize, company_id: &str) -> UserRecord {
    service_user(ApiVersion::V5, i, company_id)
}

pub fn v6_user(i: usize, company_id: &str) -> UserRecord {
    service_user(ApiVersion::V6, i, company_id)
}

/// The companies `companies` and `users` service users (`service_user`) dealt over them in
/// turn: user 0 in the first company, user 1 in the second, and so on.
pub fn seed(version: ApiVersion, companies: &[&str], users: usize) -> Snapshot {
    let companies: Vec<CompanyRecord> = companies.iter().map(|name| CompanyRecord::new(*name)).collect();
    let users =
        (0..users).map(|i| service_user(version, i, &companies[i % companies.len()].company_id)).collect();
    Snapshot { companies, users, ..Snapshot::default() }
}

/// The id of the company named `name`.
pub fn company_id(handle: &Handle, name: &str) -> String {
    let snapshot = handle.snapshot();
    snapshot.companies.into_iter().find(|c| c.name == name).unwrap().company_id
}

/// The id of the user with this email (case-insensitive).
pub fn user_id(handle: &Handle, email: &str) -> String {
    let snapshot = handle.snapshot();
    snapshot.users.into_iter().find(|u| u.email.eq_ignore_ascii_case(email)).unwrap().user_id
}

/// Requests in the log whose `METHOD path?query` starts with `prefix`.
pub fn count(handle: &Handle, prefix: &str) -> usize {
    handle.requests().iter().filter(|r| r.to_string().starts_with(prefix)).count()
}

/// As `count`, of those answered with a success status.
pub fn count_ok(handle: &Handle, prefix: &str) -> usize {
    let ok = |status: Option<u16>| status.is_some_and(|s| (200..300).contains(&s));
    handle.requests().iter().filter(|r| ok(r.status) && r.to_string().starts_with(prefix)).count()
}

/// A TLS-terminating proxy in front of the emulator, with a certificate from the test CA in
/// `tests/fixtures/tls`: `https://127.0.0.1:PORT` reaches the emulator through it.
pub async fn tls_proxy(handle: &Handle) -> String {
    tls_proxy_with(handle, "server").await
}

/// The same, presenting `tests/fixtures/tls/<name>.pem` with its key.
pub async fn tls_proxy_with(handle: &Handle, name: &str) -> String {
    use std::sync::Arc;

    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join(format!("{name}.pem"))).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let emulator = handle.addr();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust the CA aborts the handshake: nothing to forward.
                let Ok(mut client) = acceptor.accept(tcp).await else { return };
                let Ok(mut upstream) = TcpStream::connect(emulator).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    url
}
