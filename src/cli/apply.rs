//! `ozform apply`: plan (or read a saved plan), show, approve, then execute in dependency order,
//! writing issued tokens to the file sink.
//!
//! Order of phases, each before the next can change anything: load and plan (or parse the saved
//! plan and check it is fresh), resolve every password a create needs, ask (or require
//! `--auto-approve`), execute. A missing password or a stale plan stops before the first
//! mutating request.

use std::path::Path;
use std::sync::Arc;

use crate::apply::{self, ApplyError, ApplyReport, ExecuteOptions};
use crate::error::{Error, Exit};
use crate::manifest;
use crate::output::Output;
use crate::oz::{ClientConfig, OzClient, VersionSetting};
use crate::plan::Plan;
use crate::render;
use crate::secret::process_env;
use crate::sink::{FileSink, TokenSink};

use super::{ApplyArgs, connection, plan as plan_cmd};

pub async fn run(args: ApplyArgs, output: &Output) -> Result<Exit, Error> {
    let sink: Arc<dyn TokenSink> = Arc::new(FileSink::new(&args.tokens.token_dir));
    let style = render::Style { color: output.color };
    if let Some(path) = &args.plan {
        let plan = read_plan(path)?;
        let mut config =
            connection::client_config(&args.connection, &process_env, false, Some(&plan.api_url))?;
        fit_parallelism(&mut config, &args, output);
        config.api_version = VersionSetting::Fixed(plan.api_version);
        if config.api_url.trim_end_matches('/') != plan.api_url.trim_end_matches('/') {
            return Err(Error::Usage {
                message: format!("the plan was made for `{}`, not `{}`", plan.api_url, config.api_url),
                help: "apply a saved plan to the API it was made for (drop `--api-url`), or make a new plan"
                    .into(),
            });
        }
        let passwords = apply::resolve_passwords(&plan, &process_env)?;
        let client = OzClient::connect(config).await?;
        apply::check_fresh(&plan, &client, args.parallelism.max(1)).await?;
        output.print(&render::text(&plan, &style));
        let report = execute(&plan, client, sink, passwords, args.parallelism, output).await?;
        return finish(&plan, &report, output);
    }

    let desired = manifest::load_with(
        &args.paths,
        &manifest::LoadOptions {
            warn: &|w| output.warn(&w.to_string()),
            ..manifest::LoadOptions::new(&process_env)
        },
    )?;
    let mut config = connection::client_config(&args.connection, &process_env, false, None)?;
    fit_parallelism(&mut config, &args, output);
    let client = OzClient::connect(config).await?;
    let plan =
        plan_cmd::make_plan(&client, &desired, sink.as_ref(), &args.tokens, &args.companies, &process_env)
            .await?;
    output.print(&render::text(&plan, &style));
    if !plan.has_changes() {
        return plan_cmd::finish(&plan, false);
    }
    // Before asking: a missing password would stop the apply anyway, so say it now.
    let passwords = apply::resolve_passwords(&plan, &process_env)?;
    approve(args.auto_approve, output)?;
    let report = execute(&plan, client, sink, passwords, args.parallelism, output).await?;
    finish(&plan, &report, output)
}

/// The client must let `--parallelism` steps run at once (or say why it does not).
fn fit_parallelism(config: &mut ClientConfig, args: &ApplyArgs, output: &Output) {
    if let Some(warning) = connection::fit_parallelism(config, &args.connection, args.parallelism.max(1)) {
        output.warn(&warning);
    }
}

/// Run the plan through the executor with progress on the terminal (or JSON lines).
pub async fn execute(
    plan: &Plan,
    client: OzClient,
    sink: Arc<dyn TokenSink>,
    passwords: apply::Passwords,
    parallelism: usize,
    output: &Output,
) -> Result<ApplyReport, Error> {
    let observer = apply::observer_for_output(output, plan.changes.len());
    let mut options = ExecuteOptions::new(passwords);
    options.parallelism = parallelism.max(1);
    let report = apply::execute(plan, Arc::new(client), sink, observer, &options).await?;
    Ok(report)
}

/// Print the summary; a partial apply or unresolved conflicts end with exit 1.
fn finish(plan: &Plan, report: &ApplyReport, output: &Output) -> Result<Exit, Error> {
    output.print(&format!("\n{}\n", report.summary_line()));
    report.clone().into_result()?;
    plan_cmd::finish(plan, false)
}

fn approve(auto_approve: bool, output: &Output) -> Result<(), Error> {
    if auto_approve {
        return Ok(());
    }
    if !output.stdin_tty() {
        return Err(Error::Usage {
            message: "apply needs approval, and there is no terminal to ask on".into(),
            help:
                "review the plan above and pass `--auto-approve`, or apply a reviewed plan with `--plan FILE`"
                    .into(),
        });
    }
    if output.confirm("Do you want to perform these actions?") {
        Ok(())
    } else {
        Err(ApplyError::NotApproved.into())
    }
}

fn read_plan(path: &Path) -> Result<Plan, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::plan::PlanError::Unreadable {
        path: path.display().to_string(),
        reason: e.kind().to_string(),
    })?;
    Ok(render::parse_plan(&text)?)
}
