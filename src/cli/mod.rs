//! The command line: raw clap arguments, turned into validated settings by each command's
//! module (one file per command), which then calls one operation of `ops`. No command module
//! calls another; what they share is `connection` (connection and token flags → settings).
//! Only `main` turns the result into the exit code.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::Exit;
use crate::model::ApiVersion;
use crate::output::{LogFormat, Output};
use crate::oz::VersionSetting;

mod apply;
mod completions;
mod connection;
mod demo;
mod doctor;
mod emulator;
mod export;
mod installations;
mod interrupt;
mod man;
mod plan;
mod reconcile;
mod report;
mod schema;
mod sections;
mod show;
mod validate;

use interrupt::Interrupt;

/// Declarative reconciler for the Oz Forensics API: companies, service users and service
/// tokens as YAML in Git.
#[derive(Debug, Parser)]
#[command(name = "ozform", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes, under their own heading in each command's help (and a
/// GLOBAL OPTIONS section of its manual page), apart from the command's own.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// More log output (-v info, -vv debug, -vvv trace); `RUST_LOG` overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors and warnings
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log line format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and check manifests; no network
    Validate(ValidateArgs),
    /// Read live state and print what would change
    Plan(PlanArgs),
    /// Plan, show, confirm, then make the changes
    Apply(ApplyArgs),
    /// Plan and apply in a loop, repairing drift; serves Prometheus metrics
    Reconcile(ReconcileArgs),
    /// Write live companies and service users as a manifest
    Export(ExportArgs),
    /// Print the manifest JSON Schema (or the project file's, with --project-file)
    Schema(SchemaArgs),
    /// Serve the built-in Oz API emulator
    Emulator(EmulatorArgs),
    /// Run plan, apply and plan again on the built-in emulator
    Demo(DemoArgs),
    /// Check a live installation, read-only: what ozform sees and what it means
    Doctor(DoctorArgs),
    /// Render a saved plan as `plan` would print it; no network
    Show(show::ShowArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish)
    Completions(CompletionsArgs),
    /// Print the manual page, or write one page per command into a directory
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Manifest files or directories (searched recursively for *.yaml / *.yml)
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub secrets: SecretsArgs,
}

/// Where `{file: PATH}` secrets may lie besides the manifest paths (`validate`, `plan`, `apply`).
#[derive(Debug, Clone, Args)]
pub struct SecretsArgs {
    /// A directory where `password: {file: PATH}` secrets may lie besides the manifest paths
    /// (repeatable; `OZ_SECRETS_DIR` takes a colon-separated list)
    #[arg(
        long = "secrets-dir",
        env = "OZ_SECRETS_DIR",
        value_name = "DIR",
        value_delimiter = ':',
        // Empty entries (`a::b`, a trailing `:`) are accepted here and ignored by `dirs`.
        value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from)
    )]
    pub dirs: Vec<PathBuf>,
}

impl SecretsArgs {
    /// The directories given, empty entries (`a::b`) dropped.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().filter(|dir| !dir.as_os_str().is_empty()).cloned().collect()
    }
}

/// `--api-version` of a command that connects: a dialect (`ApiVersion`'s one parser), or `auto`
/// (detected from what the live API returns).
fn version_setting() -> impl clap::builder::TypedValueParser<Value = VersionSetting> {
    clap::builder::PossibleValuesParser::new(["5", "6", "auto"]).try_map(|s| match s.as_str() {
        "auto" => Ok(VersionSetting::Auto),
        version => version.parse::<ApiVersion>().map(VersionSetting::Fixed),
    })
}

/// `--api-version` of the emulator and the demo: the dialect to speak (`ApiVersion`'s one parser).
fn api_version() -> impl clap::builder::TypedValueParser<Value = ApiVersion> {
    clap::builder::PossibleValuesParser::new(["5", "6"]).try_map(|s| s.parse::<ApiVersion>())
}

#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Base URL of the Oz API, e.g. `https://oz.example.com`
    #[arg(long, env = "OZ_API_URL")]
    pub api_url: Option<String>,
    /// Email of the ADMIN account ozform logs in as
    #[arg(long, env = "OZ_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// File holding the admin password (otherwise `OZ_ADMIN_PASSWORD`; there is no password flag)
    #[arg(long)]
    pub admin_password_file: Option<PathBuf>,
    /// API dialect: 5, 6, or auto (detected from what the API returns)
    #[arg(long, env = "OZ_API_VERSION", value_parser = version_setting(), default_value = "auto")]
    pub api_version: VersionSetting,
    /// Extra CA certificate (PEM) to trust, for private CAs
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// At most this many requests per second (default: unlimited)
    #[arg(long)]
    pub max_rps: Option<f64>,
    /// At most this many requests in flight (default: 16, or `apply --parallelism` (`auto`:
    /// `--max-parallelism`) if higher)
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Per-request timeout, e.g. 30s
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// The largest answer read from the API, e.g. 64MiB: a longer one is an error, found while
    /// it streams in
    #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = parse_size)]
    pub max_response_bytes: usize,
    /// The most companies or users one listing of the API may hold: more is an error
    #[arg(long, default_value_t = crate::oz::DEFAULT_MAX_OBJECTS, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_objects: usize,
    /// Allow plain `http://` to a host that is not this machine (passwords and tokens would
    /// cross the network in clear)
    #[arg(long)]
    pub allow_insecure_http: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Where tokens are kept: `dir:PATH` (one file per token) or `exec:COMMAND [ARGS...]` (a helper
    /// program speaking the token store protocol, see docs/token-stores.md) [default: dir:./ozform-tokens]
    #[arg(long, env = "OZ_TOKEN_STORE", value_name = "STORE")]
    pub token_store: Option<String>,
    /// Directory of the token store, short for `--token-store dir:DIR` [default: ./ozform-tokens]
    #[arg(long, env = "OZ_TOKEN_DIR", value_name = "DIR")]
    pub token_dir: Option<PathBuf>,
    /// With a project file: act on this installation only (repeatable). Without one: the
    /// installation whose tokens the store keeps, so that a store shared by several
    /// installations keeps each one's tokens apart [default: every installation of the project
    /// file; without one, the API URL's origin, `scheme://host[:port]`]
    #[arg(long, env = "OZ_INSTALLATION", value_name = "NAME")]
    pub installation: Vec<String>,
    /// How long a token store helper (`exec:`) may take for one call before it is stopped
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub store_timeout: Duration,
    /// Issue a new token when the stored one expires within this long, e.g. 30d
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    pub rotate_before: Duration,
    /// Issue a new token for every user with `token.issue: true`
    #[arg(long)]
    pub rotate_tokens: bool,
    /// Use a token directory that group or others may write to (refused by default: a token
    /// planted there would be deployed)
    #[arg(long)]
    pub allow_shared_token_dir: bool,
}

/// The blast-radius guard of removals (`prune:`), shared by `plan` and `apply`.
#[derive(Debug, Clone, Args)]
pub struct RemovalArgs {
    /// Refuse removals of more than this percentage of the pruning companies' live service users
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_removal_percent: u32,
    /// ...when those number at least this many
    #[arg(long, default_value_t = 10)]
    pub min_live_for_percent: usize,
    /// Refuse more removals than this, whatever the percentage
    #[arg(long, value_name = "N")]
    pub max_removals: Option<usize>,
    /// Allow removals beyond the guard's thresholds (and in a company that declares no user)
    #[arg(long)]
    pub allow_mass_removal: bool,
}

impl RemovalArgs {
    pub fn limits(&self) -> crate::plan::RemovalLimits {
        crate::plan::RemovalLimits {
            max_percent: self.max_removal_percent,
            min_live_for_percent: self.min_live_for_percent,
            max_removals: self.max_removals,
            allow_mass_removal: self.allow_mass_removal,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Manifest files or directories (without a project file)
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub project: installations::ProjectArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub tokens: TokenArgs,
    /// How to print the plan
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// With `--format markdown`: at most this many bytes (GitHub refuses comments over 65,536
    /// characters); past it, the summary, the removals and as many changes as fit
    #[arg(long, value_name = "N", value_parser = parse_max_bytes)]
    pub max_bytes: Option<usize>,
    /// Also save the plan as JSON, for `apply --plan`; with several installations, a directory
    /// of `<installation>.json`
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Exit 0 when there are no changes, 2 when there are, 3 when one of them is a removal
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan only these companies and their users (repeatable)
    #[arg(long = "company", value_name = "NAME")]
    pub companies: Vec<String>,
    #[command(flatten)]
    pub removals: RemovalArgs,
    #[command(flatten)]
    pub secrets: SecretsArgs,
    /// Also write the run's metrics to this file in the Prometheus text format, for the node
    /// exporter's textfile collector (name it `*.prom`)
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest files or directories (without a project file; not with --plan)
    #[arg(conflicts_with = "plan")]
    pub paths: Vec<PathBuf>,
    /// Execute this saved plan exactly, on the API that --api-url/OZ_API_URL names (refused whole
    /// if live state has moved or an id it carries is not the live object's); with a project
    /// file, a plan or a directory of plans (`plan --out DIR`), each on its installation
    #[arg(long, value_name = "PATH")]
    pub plan: Option<PathBuf>,
    /// With a project file: go on with the next installations after one fails
    #[arg(long)]
    pub keep_going: bool,
    #[command(flatten)]
    pub project: installations::ProjectArgs,
    /// Do not ask for confirmation
    #[arg(long)]
    pub auto_approve: bool,
    /// Independent steps talking to the API at once: `auto` adapts to the server's capacity
    /// (between 1 and `--max-parallelism`), a number fixes it; also the most tokens issued but
    /// not yet stored (`--max-parallelism` with `auto`)
    #[arg(long, value_name = "auto|N", default_value = "auto", value_parser = parse_parallelism)]
    pub parallelism: ParallelismArg,
    /// The most steps `--parallelism auto` may run at once
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_parallelism: u64,
    /// How long to wait for another apply holding the token store's lock, e.g. 5m (default: fail
    /// at once)
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub lock_timeout: Duration,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub tokens: TokenArgs,
    /// Apply only these companies and their users (repeatable)
    #[arg(long = "company", value_name = "NAME", conflicts_with = "plan")]
    pub companies: Vec<String>,
    #[command(flatten)]
    pub removals: RemovalArgs,
    #[command(flatten)]
    pub secrets: SecretsArgs,
    /// Write a JSON map `{address: {source_id, live_id}}` of every company and service user
    /// created or adopted to this file, atomically and again after each object made (a killed
    /// run leaves a valid map of what was done); `source_id` is the manifest's (`ozform export`
    /// writes it)
    #[arg(long, value_name = "FILE")]
    pub id_map: Option<PathBuf>,
    /// Also write the run's metrics to this file in the Prometheus text format, for the node
    /// exporter's textfile collector (name it `*.prom`)
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Manifest files or directories, read again at every cycle (without a project file)
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub project: installations::ProjectArgs,
    /// The pause between the end of one cycle and the start of the next, e.g. 5m
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub interval: Duration,
    /// Each pause is the interval give or take up to this share of it, at random, e.g. 10%
    #[arg(long, default_value = "10%", value_name = "PERCENT", value_parser = parse_percent)]
    pub jitter: f64,
    /// Run one cycle and exit with `apply`'s exit codes (for a Kubernetes `CronJob` or a scheduled CI job)
    #[arg(long)]
    pub once: bool,
    /// Apply removals (`prune:`), within the blast-radius guard; without it they are reported and
    /// held back
    #[arg(long)]
    pub allow_removals: bool,
    /// Serve Prometheus metrics on `/metrics`, and `/healthz` and `/readyz`, at this address
    /// (`PORT` alone is loopback; `0.0.0.0:PORT` every interface)
    #[arg(long, value_name = "ADDR", value_parser = crate::metrics::server::parse_listen)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Also write the metrics to this file after every cycle, in the Prometheus text format, for
    /// the node exporter's textfile collector (name it `*.prom`)
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Independent steps talking to the API at once, as `apply --parallelism`: `auto` adapts to
    /// the server's capacity (between 1 and `--max-parallelism`, learned from cycle to cycle), a
    /// number fixes it; also the most tokens issued but not yet stored
    #[arg(long, value_name = "auto|N", default_value = "auto", value_parser = parse_parallelism)]
    pub parallelism: ParallelismArg,
    /// The most steps `--parallelism auto` may run at once
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_parallelism: u64,
    /// How long a cycle waits for another apply holding the token store's lock, e.g. 1m (default:
    /// fail the cycle at once; the next one tries again)
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub lock_timeout: Duration,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub tokens: TokenArgs,
    #[command(flatten)]
    pub removals: RemovalArgs,
    #[command(flatten)]
    pub secrets: SecretsArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub project: installations::ProjectArgs,
    /// With a project file: export this installation only (repeatable)
    #[arg(long, env = "OZ_INSTALLATION", value_name = "NAME")]
    pub installation: Vec<String>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Export only these companies (repeatable)
    #[arg(long = "company", value_name = "NAME")]
    pub companies: Vec<String>,
    /// Write to this file (atomically) instead of stdout; with several installations, a
    /// directory of `<installation>.yaml`
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Write `token: {issue: true}` on every user (off by default: applying the export would
    /// issue a new token for each user whose token is not in the token store)
    #[arg(long)]
    pub tokens: bool,
    /// Write each user's password as `{env: OZ_PW_<EMAIL>}` (a variable per user, named from its
    /// email) instead of `{generate: true}` (ozform generates it if it creates the user and
    /// keeps it with the user's token record)
    #[arg(long)]
    pub password_env: bool,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Print the JSON Schema of the project file (`ozform.yaml`) instead of the manifest's
    #[arg(long)]
    pub project_file: bool,
}

#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// API dialect to speak
    #[arg(long, value_parser = api_version(), default_value = "6")]
    pub api_version: ApiVersion,
    /// Email of the built-in ADMIN account
    #[arg(long, default_value = "admin@ozform.local")]
    pub admin_email: String,
    /// File holding the admin password (otherwise `OZ_ADMIN_PASSWORD`, else the default `emulator-admin`, for local use only)
    #[arg(long)]
    pub admin_password_file: Option<PathBuf>,
    /// Start from this state (JSON, as written by the emulator's state dump)
    #[arg(long)]
    pub seed: Option<PathBuf>,
    /// Added latency per request, in milliseconds
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Fraction (0..1) of requests answered with an injected fault
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Serve at most N requests at once (a hidden pool of workers); the others wait in line
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub capacity: Option<u64>,
    /// With `--capacity`: answer 503 (and do nothing) to a request that waited this many
    /// milliseconds in line
    #[arg(long, value_name = "MS", requires = "capacity")]
    pub shed_after_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// API dialect the emulator speaks
    #[arg(long, value_parser = api_version(), default_value = "6")]
    pub api_version: ApiVersion,
    /// Keep the demo's directory (its manifests and token files) instead of removing it at the end
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DoctorFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub project: installations::ProjectArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub tokens: TokenArgs,
    /// How to print the findings
    #[arg(long, value_enum, default_value_t = DoctorFormat::Text)]
    pub format: DoctorFormat,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `ozform.1` and one `ozform-<command>.1` per command into this directory instead of
    /// printing `ozform.1`
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// `--parallelism auto|N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParallelismArg {
    Auto,
    Fixed(usize),
}

impl ParallelismArg {
    /// The setting, with `--max-parallelism` as `auto`'s ceiling.
    pub fn setting(self, max_parallelism: u64) -> crate::ops::settings::Parallelism {
        use crate::ops::settings::Parallelism;
        match self {
            ParallelismArg::Auto => {
                Parallelism::Auto { max: usize::try_from(max_parallelism).unwrap_or(usize::MAX) }
            }
            ParallelismArg::Fixed(n) => Parallelism::Fixed(n.max(1)),
        }
    }
}

pub fn parse_parallelism(s: &str) -> Result<ParallelismArg, String> {
    match s {
        "auto" => Ok(ParallelismArg::Auto),
        n => n
            .parse()
            .map(ParallelismArg::Fixed)
            .map_err(|_| format!("`{s}` is neither `auto` nor a number of steps")),
    }
}

/// Parse `30d`, `12h`, `90s`, `1h 30m` (humantime).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. `30d`, `12h` or `90s`"))
}

/// `--jitter`: a percentage from 0 to 100 (`10%` or `10`), as a fraction.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let number = s.trim().strip_suffix('%').unwrap_or(s.trim());
    match number.trim().parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p / 100.0),
        _ => Err(format!("`{s}` is not a percentage from 0 to 100; write e.g. `10%`")),
    }
}

/// A size in bytes: a whole number, optionally followed by `B`, `KiB`, `MiB` or `GiB` (`K`, `M`,
/// `G` for short; powers of 1024), at least 1 byte.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let text = s.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return Err(format!("`{s}` is not a size; write e.g. `64MiB`, `512KiB` or `1048576` (bytes)")),
    };
    let n: usize = number
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write e.g. `64MiB`, `512KiB` or `1048576` (bytes)"))?;
    let bytes = n.checked_mul(1usize << shift).ok_or_else(|| format!("`{s}` is too large a size"))?;
    if bytes == 0 {
        return Err("the size must be at least 1 byte".into());
    }
    Ok(bytes)
}

/// `--max-bytes N`: a byte count of at least 1,024 (the head of a plan always fits in that).
pub fn parse_max_bytes(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1024 => Ok(n),
        _ => Err(format!("`{s}` is not a byte count of at least 1024")),
    }
}

/// `--max-bytes` sizes the Markdown plan only.
fn check_max_bytes(max_bytes: Option<usize>, format: PlanFormat) -> Result<(), crate::error::Error> {
    if max_bytes.is_some() && format != PlanFormat::Markdown {
        return Err(crate::error::Error::Usage {
            message: "`--max-bytes` applies to `--format markdown` only".into(),
            help: "add `--format markdown`, or drop `--max-bytes`".into(),
        });
    }
    Ok(())
}

/// Parse the command line, run the command, and return the process exit code.
pub fn main() -> std::process::ExitCode {
    // Every diagnostic is printed by `output.report` (scrubbed, never panicking on a closed
    // stderr), which sets up its own miette handler.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_exit(&e),
    };
    let output = Output::new(cli.global.verbose, cli.global.quiet, cli.global.log_format);
    output.init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            output.report(&miette::Report::msg(format!("cannot start the async runtime: {e}")));
            return Exit::Failure.into();
        }
    };
    let exit = runtime.block_on(run(cli.command, &output));
    // Not waiting for blocking threads: one may still be polling a token store's lock that a
    // signal gave up on (nothing was done yet); the process ends with them.
    runtime.shutdown_background();
    exit.into()
}

/// Print clap's message and say how to exit: 0 for `--help` and `--version`, 1 for every usage
/// error (clap's own default is 2, which `plan --detailed-exitcode` uses for "there are
/// changes": a mistyped flag in a CI job must not read as "post the plan").
///
/// A usage error quotes what was typed, which a script may have taken from anywhere: it is
/// printed plain, each line escaped for the terminal as every other value is (clap would pass
/// C1 controls and direction overrides through, and every escape sequence where colour is
/// forced). Help and version text hold only our own words, and keep their style.
fn usage_exit(e: &clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    use std::io::Write as _;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // A closed stream is no reason to panic; the exit code still tells.
            let _ = e.print();
            Exit::Success.into()
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            Exit::Failure.into()
        }
        _ => {
            let plain = e.render().to_string();
            let mut escaped = String::with_capacity(plain.len());
            for line in plain.lines() {
                escaped.push_str(&crate::escape::terminal(line));
                escaped.push('\n');
            }
            let _ = std::io::stderr().lock().write_all(escaped.as_bytes());
            Exit::Failure.into()
        }
    }
}

/// Run one command and give its exit code, its error reported (scrubbed, located).
async fn run(command: Command, output: &Output) -> Exit {
    let ran = match command {
        Command::Validate(args) => validate::run(args, output),
        Command::Plan(args) => match Interrupt::immediate() {
            Ok(()) => plan::run(args, output).await,
            Err(e) => Err(e),
        },
        Command::Apply(args) => {
            let interrupt = match Interrupt::graceful() {
                Ok(interrupt) => interrupt,
                Err(e) => return report::fail(e, None, output),
            };
            return apply::run(args, &interrupt, output)
                .await
                .unwrap_or_else(|e| report::fail(e, interrupt.signal(), output));
        }
        Command::Reconcile(args) => {
            let interrupt = match Interrupt::graceful() {
                Ok(interrupt) => interrupt,
                Err(e) => return report::fail(e, None, output),
            };
            return reconcile::run(args, &interrupt, output)
                .await
                .unwrap_or_else(|e| report::fail(e, interrupt.signal(), output));
        }
        Command::Export(args) => match Interrupt::immediate() {
            Ok(()) => export::run(args, output).await,
            Err(e) => Err(e),
        },
        Command::Schema(args) => schema::run(&args, output),
        Command::Emulator(args) => emulator::run(args, output).await,
        Command::Demo(args) => demo::run(args, output).await,
        Command::Doctor(args) => doctor::run(args, output).await,
        Command::Show(args) => show::run(&args, output),
        Command::Completions(args) => completions::run(args.shell, output),
        Command::Man(args) => man::run(args.out_dir.as_deref(), output),
    };
    ran.unwrap_or_else(|e| report::fail(e, None, output))
}
