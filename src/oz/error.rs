//! Errors of the Oz client. They name method, path, status, `error_code` and
//! `error_message`; never a request or response body (they may hold secrets). A server may
//! still echo a secret inside its `error_message`: every text built from an answer
//! (`error_message`, a session decode reason) is redacted by the transport before it is put
//! here (`redact::redact`: the request's secrets, the admin password and the session tokens,
//! in every form, and every registered secret), so `Display` and `Debug` are safe to print.

/// An Oz API request that failed.
#[derive(Debug, Clone, thiserror::Error, miette::Diagnostic)]
pub enum OzError {
    /// The API answered with an error status.
    #[error("{method} {path} answered {status}{}", api_detail(*error_code, error_message.as_deref()))]
    #[diagnostic(code(ozform::oz::http))]
    Http { method: String, path: String, status: u16, error_code: Option<i64>, error_message: Option<String> },
    /// The connection cannot be made for a reason that trying again cannot fix: the host name
    /// does not resolve, the TLS handshake or the certificate is refused, or the server speaks
    /// plain HTTP on an `https://` URL. Nothing was sent. Names the whole URL, scheme included.
    #[error("cannot connect to `{url}`: {reason}")]
    #[diagnostic(code(ozform::oz::unreachable))]
    Unreachable {
        url: String,
        reason: String,
        #[help]
        help: Option<String>,
    },
    /// The request did not get an answer (connect error, timeout, dropped connection).
    /// For a create this means the outcome is unknown: read back before trying again.
    #[error("{method} {path} failed: {reason}")]
    #[diagnostic(code(ozform::oz::transport), help("check that the API URL is right and reachable"))]
    Transport { method: String, path: String, reason: String, outcome_unknown: bool },
    /// The answer could not be understood.
    #[error("{method} {path}: unexpected answer: {reason}")]
    #[diagnostic(code(ozform::oz::decode))]
    Decode { method: String, path: String, reason: String },
    /// A mutating request was attempted while the client is read-only (planning).
    #[error("refused {method} {path}: the client is read-only while planning")]
    #[diagnostic(
        code(ozform::oz::read_only),
        help("this is a bug in ozform: planning must not change anything")
    )]
    ReadOnly { method: String, path: String },
    /// An answer past a bound ozform keeps against a broken or hostile API: a body larger than
    /// `--max-response-bytes`, a listing longer than `--max-objects`, an issued token that cannot
    /// be one. Names the bound and the flag that sets it, never the answer itself. Not
    /// `outcome_unknown`: asking again would meet the same answer.
    #[error("{method} {path}: {reason}")]
    #[diagnostic(code(ozform::oz::limit))]
    Limit {
        method: String,
        path: String,
        reason: String,
        #[help]
        help: Option<String>,
    },
    /// The server's paging cannot be trusted (it ignores `offset`).
    #[error("GET {path}: {reason}")]
    #[diagnostic(code(ozform::oz::paging))]
    Paging { path: String, reason: String },
    /// The admin login was refused (wrong email or password, or not an ADMIN account).
    #[error("cannot log in to `{host}` as `{email}`: answered {status}{}", api_detail(*error_code, error_message.as_deref()))]
    #[diagnostic(
        code(ozform::oz::login),
        help(
            "check `--admin-email` and the admin password (`OZ_ADMIN_PASSWORD` or `--admin-password-file`)"
        )
    )]
    Login { host: String, email: String, status: u16, error_code: Option<i64>, error_message: Option<String> },
    /// Bad client configuration (URL, CA file, credentials source, undecidable version).
    #[error("{message}")]
    #[diagnostic(code(ozform::oz::config))]
    Config {
        message: String,
        #[help]
        help: Option<String>,
    },
}

fn api_detail(code: Option<i64>, message: Option<&str>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(" (error_code {c}: {m})"),
        (Some(c), None) => format!(" (error_code {c})"),
        (None, Some(m)) => format!(" ({m})"),
        (None, None) => String::new(),
    }
}

impl OzError {
    /// A create whose effect may or may not have happened: never re-send it blindly, read
    /// back by natural key first. True for a timeout or a dropped connection after the request
    /// may have been sent, for a 5xx answer, and for a `POST` answered with success but with a
    /// body that could not be read (the object exists, its id is unknown).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            OzError::Transport { outcome_unknown, .. } => *outcome_unknown,
            OzError::Http { status, .. } => *status >= 500,
            OzError::Decode { method, .. } => method == "POST",
            _ => false,
        }
    }

    /// The HTTP status of an answered request.
    pub fn status(&self) -> Option<u16> {
        match self {
            OzError::Http { status, .. } | OzError::Login { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API said the object already exists (400 with `error_code` 3 or 4, or 409).
    pub fn is_duplicate(&self) -> bool {
        matches!(self, OzError::Http { status: 409, .. })
            || matches!(self, OzError::Http { status: 400, error_code: Some(3 | 4), .. })
    }
}
