//! The command line: raw clap arguments, turned into validated settings by each command's
//! module (one file per command), which then calls one operation of `ops`. No command module
//! calls another; what they share is `connection` (connection and token flags → settings).
//! Only `main` turns the result into the exit code.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::{Error, Exit};
use crate::ops::interrupt::Interrupt;
use crate::output::{LogFormat, Output};

mod apply;
mod completions;
mod connection;
mod demo;
mod doctor;
mod emulator;
mod export;
mod man;
mod plan;
mod schema;
mod validate;

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

#[derive(Debug, Args)]
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
    /// Write live companies and service users as a manifest
    Export(ExportArgs),
    /// Print the manifest JSON Schema
    Schema,
    /// Serve the built-in Oz API emulator
    Emulator(EmulatorArgs),
    /// Run plan, apply and plan again on the built-in emulator
    Demo(DemoArgs),
    /// Check a live installation, read-only: what ozform sees and what it means
    Doctor(DoctorArgs),
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
}

/// `--api-version`: a fixed dialect or detection from what the live API returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiVersionArg {
    #[value(name = "5")]
    V5,
    #[value(name = "6")]
    V6,
    Auto,
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
    #[arg(long, env = "OZ_API_VERSION", value_enum, default_value = "auto")]
    pub api_version: ApiVersionArg,
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
    /// Manifest files or directories
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub tokens: TokenArgs,
    /// How to print the plan
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Also save the plan as JSON, for `apply --plan`
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Exit 0 when there are no changes, 2 when there are, 3 when one of them is a removal
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan only these companies and their users (repeatable)
    #[arg(long = "company", value_name = "NAME")]
    pub companies: Vec<String>,
    #[command(flatten)]
    pub removals: RemovalArgs,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest files or directories (not with --plan)
    #[arg(required_unless_present = "plan", conflicts_with = "plan")]
    pub paths: Vec<PathBuf>,
    /// Execute this saved plan exactly (refused whole if live state has moved)
    #[arg(long)]
    pub plan: Option<PathBuf>,
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
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Export only these companies (repeatable)
    #[arg(long = "company", value_name = "NAME")]
    pub companies: Vec<String>,
    /// Write to this file (atomically) instead of stdout
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write `token: {issue: true}` on every user (off by default: applying the export would
    /// issue a new token for each user whose token is not in the token store)
    #[arg(long)]
    pub tokens: bool,
}

#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// API dialect to speak
    #[arg(long, value_parser = ["5", "6"], default_value = "6")]
    pub api_version: String,
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
    #[arg(long, value_parser = ["5", "6"], default_value = "6")]
    pub api_version: String,
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

/// Parse `30d`, `12h`, `90s`, `1h 30m` (humantime).
/// `--parallelism auto|N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParallelismArg {
    Auto,
    Fixed(usize),
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

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. `30d`, `12h` or `90s`"))
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
    match runtime.block_on(run(cli.command, &output)) {
        Ok(exit) => exit.into(),
        Err(err) => {
            let exit = err.exit();
            output.report(&miette::Report::new(err));
            exit.into()
        }
    }
}

/// Print clap's message and say how to exit: 0 for `--help` and `--version`, 1 for every usage
/// error (clap's own default is 2, which `plan --detailed-exitcode` uses for "there are
/// changes": a mistyped flag in a CI job must not read as "post the plan").
fn usage_exit(e: &clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    // A closed stream is no reason to panic; the exit code still tells.
    let _ = e.print();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Exit::Success.into(),
        _ => Exit::Failure.into(),
    }
}

async fn run(command: Command, output: &Output) -> Result<Exit, Error> {
    match command {
        Command::Validate(args) => validate::run(args, output),
        Command::Plan(args) => {
            Interrupt::immediate()?;
            plan::run(args, output).await
        }
        Command::Apply(args) => {
            let interrupt = Interrupt::graceful()?;
            apply::run(args, &interrupt, output).await
        }
        Command::Export(args) => {
            Interrupt::immediate()?;
            export::run(args, output).await
        }
        Command::Schema => schema::run(output),
        Command::Emulator(args) => emulator::run(args, output).await,
        Command::Demo(args) => demo::run(args, output).await,
        Command::Doctor(args) => doctor::run(args, output).await,
        Command::Completions(args) => completions::run(args.shell, output),
        Command::Man(args) => man::run(args.out_dir.as_deref(), output),
    }
}
