//! `ozform validate`: load and check manifests, print a one-line summary. No network.

use crate::error::{Error, Exit};
use crate::manifest;
use crate::model::Desired;
use crate::output::Output;
use crate::secret::process_env;

pub fn run(args: super::ValidateArgs, output: &Output) -> Result<Exit, Error> {
    let super::ValidateArgs { paths, secrets } = args;
    let secrets_dirs = secrets.dirs();
    let desired = manifest::load_with(
        &paths,
        &manifest::LoadOptions {
            warn: &|w| output.warn(&w.to_string()),
            secrets_dirs: &secrets_dirs,
            ..manifest::LoadOptions::new(&process_env)
        },
    )?;
    output.print(&format!("{}\n", summary(&desired)));
    Ok(Exit::Success)
}

/// `ok: 2 companies, 3 service users, 2 tokens in 2 files`.
fn summary(desired: &Desired) -> String {
    let tokens = desired.users.iter().filter(|u| u.token.issue).count();
    format!(
        "ok: {}, {}, {} in {}",
        count(desired.companies.len(), "company", "companies"),
        count(desired.users.len(), "service user", "service users"),
        count(tokens, "token", "tokens"),
        count(desired.files.len(), "file", "files"),
    )
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_companies_users_tokens_and_files_in_singular_and_plural() {
        let desired = Desired { files: vec!["a.yaml".into()], ..Desired::default() };
        assert_eq!(summary(&desired), "ok: 0 companies, 0 service users, 0 tokens in 1 file");
    }
}
