//! Issue #20, the saved-plan side, tried as an attacker would, through the binary against the
//! emulator: a saved plan edited between `plan --out` and `apply --plan` can act on no other
//! object than the one at each change's address, and cannot send the admin credentials to
//! another API.
//!
//! Each attack edits an id the plan carries (a `live_id`, a create's `company_id`, a token's
//! `user_id`) to another live object's, then makes the plan id fit again the two ways an
//! attacker can: dropping `plan_id` (a plan without one, from ozform 0.1, still loads) or
//! recomputing it (it is a checksum, not a signature). Every run has canary values of the CI
//! secrets a job holds (`GITHUB_TOKEN`, `AWS_SECRET_ACCESS_KEY`, `VAULT_TOKEN`) in its
//! environment; each attack is refused as stale (`ozform::apply::stale`, exit 1) naming the
//! address and both ids, the emulator's state and the token files are what they were, no
//! mutating request was sent, and nothing printed or written shows a canary or a password.
//! The attacks on ids run under API 6 and API 5 (the dialects spell user kinds apart).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use std::collections::BTreeMap;
use std::net::TcpListener;

use common::emulator::service_user;
use common::world::{World, canary};
use common::{Cli, Run};
use ozform::emulator::{CompanyRecord, EmulatorConfig, Snapshot, UserRecord};
use ozform::model::ApiVersion;
use serde_json::{Value, json};

/// The secrets a CI job typically holds.
const CI_SECRETS: [&str; 3] = ["GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "VAULT_TOKEN"];

const ACME: &str = "Acme Bank";
const GLOBEX: &str = "Globex";
const WEB: &str = "svc-web@acme.example";
const CLAIMS: &str = "svc-claims@globex.example";

/// Two companies, a user in each with a token, `extra` appended (YAML under `service_users`),
/// Acme's metadata `tier`, and `svc-web`'s `biometry` flag.
fn manifest(tier: &str, web_biometry: bool, extra: &str) -> String {
    format!(
        "companies:\n  - name: {ACME}\n    technical_meta_data: {{tier: {tier}}}\n  - name: {GLOBEX}\n\
         service_users:\n\
         \x20 - email: {WEB}\n    company: {ACME}\n    first_name: Acme\n    last_name: Web\n\
         \x20   password: {{env: ACME_WEB_PASSWORD}}\n\
         \x20   permissions: {{biometry: {web_biometry}, collection: true, documents: false, quality: true}}\n\
         \x20   token: {{issue: true}}\n\
         \x20 - email: {CLAIMS}\n    company: {GLOBEX}\n    password: {{env: GLOBEX_CLAIMS_PASSWORD}}\n\
         \x20   token: {{issue: true}}\n{extra}"
    )
}

/// A scenario: a world whose every run has canaries of the CI secrets in its environment.
struct Scene {
    w: World,
    canaries: Vec<(&'static str, String)>,
}

impl Scene {
    async fn new(config: EmulatorConfig) -> Self {
        let w = World::with(config).await;
        let canaries: Vec<(&'static str, String)> =
            CI_SECRETS.iter().map(|name| (*name, canary("ci"))).collect();
        w.other_secrets.lock().unwrap().extend(canaries.iter().map(|(_, value)| value.clone()));
        Self { w, canaries }
    }

    /// `ozform <command> --token-dir … <args…>` with the canaries in its environment.
    fn command(&self, command: &str, args: &[&str]) -> Cli {
        let mut cli = self.w.command(command, args);
        for (name, value) in &self.canaries {
            cli = cli.env(name, value);
        }
        cli
    }

    async fn run(&self, cli: Cli) -> Run {
        self.w.run(cli).await
    }

    /// Write `yaml` as `name` in the world's dir and return its path.
    fn write(&self, name: &str, yaml: &str) -> String {
        let path = self.w.path(name);
        std::fs::write(&path, yaml).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// Apply `yaml` (written as `name`) with `--auto-approve`.
    async fn apply_manifest(&self, name: &str, yaml: &str) {
        let path = self.write(name, yaml);
        self.run(self.command("apply", &["--auto-approve", &path])).await.code(0);
    }

    /// `plan --out` of `yaml` (and `args`): the saved plan, parsed.
    async fn saved_plan(&self, yaml: &str, args: &[&str]) -> Value {
        let manifest = self.write("planned.yaml", yaml);
        let out = self.w.path("plan.json");
        let mut all = vec!["--out", out.to_str().unwrap(), manifest.as_str()];
        all.extend_from_slice(args);
        let run = self.run(self.command("plan", &all)).await;
        assert!([0, 2, 3].contains(&run.code), "{}", run.stderr);
        serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
    }

    fn user_id(&self, email: &str) -> String {
        self.w.user(email).user_id
    }

    fn company_id(&self, name: &str) -> String {
        self.w.company_id(name)
    }

    /// Apply `plan` after `edit`, twice: with its `plan_id` dropped and with it recomputed, as
    /// an attacker would. Each run must be refused as stale, saying every one of `says`
    /// (whatever the line wrapping), and change nothing: the emulator's state, the token files
    /// and the mutating requests are checked.
    async fn refused_as_stale(&self, plan: &Value, edit: impl Fn(&mut Value), says: &[String]) {
        let mut tampered = plan.clone();
        edit(&mut tampered);
        assert_ne!(&tampered, plan, "the edit changed nothing");
        for variant in tampered_variants(&tampered) {
            let run = self.apply_refused(&variant).await;
            assert!(says_all(&run.stderr, &["ozform::apply::stale", "the plan is stale"]), "{}", run.stderr);
            assert!(says_all(&run.stderr, says), "{says:?}\n{}", run.stderr);
        }
        self.w.assert_no_secrets();
    }

    /// Run `apply --plan` on `plan` (written out): exit 1, and nothing changed.
    async fn apply_refused(&self, plan: &Value) -> Run {
        self.apply_plan_refused(plan, |cli| cli).await
    }

    /// As `apply_refused`, with the command adjusted by `adjust` (its environment).
    async fn apply_plan_refused(&self, plan: &Value, adjust: impl FnOnce(Cli) -> Cli) -> Run {
        let path = self.w.path("tampered.json");
        std::fs::write(&path, serde_json::to_string_pretty(plan).unwrap()).unwrap();
        let before = (self.w.emu.snapshot(), self.token_files());
        self.w.emu.reset_stats();
        let run = self.run(adjust(self.command("apply", &["--plan", path.to_str().unwrap()]))).await.code(1);
        assert_eq!(self.w.emu.stats().mutating_requests, 0, "{}", run.stderr);
        let after = (self.w.emu.snapshot(), self.token_files());
        assert!(before.0 == after.0, "the emulator's state changed:\n{}", run.stderr);
        assert_eq!(before.1, after.1, "the token files changed:\n{}", run.stderr);
        run
    }

    /// Every token file, as text.
    fn token_files(&self) -> BTreeMap<String, String> {
        self.w.token_files().into_iter().map(|(name, value)| (name, value.to_string())).collect()
    }
}

/// The tampered plan as an attacker would hand it over: without `plan_id`, and with it
/// recomputed for the edited changes.
fn tampered_variants(tampered: &Value) -> [Value; 2] {
    let mut dropped = tampered.clone();
    dropped.as_object_mut().unwrap().remove("plan_id");
    let read = ozform::plan::format::from_json(&dropped.to_string())
        .unwrap_or_else(|e| panic!("the tampered plan must still read as a plan: {e}"));
    let mut recomputed = dropped.clone();
    recomputed["plan_id"] = json!(ozform::plan::id::plan_id(&read));
    [dropped, recomputed]
}

/// The change of `plan` at `address`.
fn change<'a>(plan: &'a mut Value, address: &str) -> &'a mut Value {
    plan["changes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["address"] == address)
        .unwrap_or_else(|| panic!("no change of `{address}`"))
}

/// Whether `stderr` says every one of `needles`, whatever the line wrapping of the diagnostic
/// (whitespace and miette's gutter are ignored on both sides).
fn says_all(stderr: &str, needles: &[impl AsRef<str>]) -> bool {
    let squash =
        |s: &str| s.chars().filter(|c| !c.is_whitespace() && !matches!(c, '|' | '│')).collect::<String>();
    let said = squash(stderr);
    needles.iter().all(|n| said.contains(&squash(n.as_ref())))
}

/// A world where `manifest("gold", true, "")` was applied: Acme Bank and Globex, `svc-web` and
/// `svc-claims` with a token each.
async fn applied(version: ApiVersion) -> Scene {
    let scene = Scene::new(EmulatorConfig::new(version)).await;
    scene.apply_manifest("base.yaml", &manifest("gold", true, "")).await;
    assert_eq!(scene.w.token_files().len(), 2);
    scene
}

// ---------------------------------------------------------------------------------------------
// Ids edited to another live object's.

/// An update of `svc-web` (its `biometry` turned off) edited to the admin's id: before #20
/// this turned off a permission of the admin.
async fn an_update_edited_to_the_admins_id_is_refused(version: ApiVersion) {
    let scene = applied(version).await;
    let plan = scene.saved_plan(&manifest("gold", false, ""), &[]).await;
    let admin = scene.user_id(scene.w.emu.admin_email());
    let web = scene.user_id(WEB);
    let address = format!("service_user/{WEB}");
    scene
        .refused_as_stale(
            &plan,
            |p| change(p, &address)["live_id"] = json!(admin),
            &[format!("`{address}` acts on user id `{admin}`, but the live user `{WEB}` has id `{web}`")],
        )
        .await;
    assert!(scene.w.user(scene.w.emu.admin_email()).permissions.biometry, "the admin keeps its permission");
}

/// A company update (Acme's tier) edited to Globex's id: before #20 this patched Globex.
async fn a_company_update_edited_to_another_companys_id_is_refused(version: ApiVersion) {
    let scene = applied(version).await;
    let plan = scene.saved_plan(&manifest("platinum", true, ""), &[]).await;
    let (acme, globex) = (scene.company_id(ACME), scene.company_id(GLOBEX));
    let address = format!("company/{ACME}");
    scene
        .refused_as_stale(
            &plan,
            |p| change(p, &address)["live_id"] = json!(globex),
            &[format!(
                "`{address}` acts on company id `{globex}`, but the live company `{ACME}` has id `{acme}`"
            )],
        )
        .await;
}

/// A user create in Acme edited to create it in Globex: before #20 the user was made there.
async fn a_create_edited_into_another_company_is_refused(version: ApiVersion) {
    let scene = applied(version).await;
    let extra =
        "  - email: svc-new@acme.example\n    company: Acme Bank\n    password: {env: ACME_BATCH_PASSWORD}\n";
    let plan = scene.saved_plan(&manifest("gold", true, extra), &[]).await;
    let (acme, globex) = (scene.company_id(ACME), scene.company_id(GLOBEX));
    let address = "service_user/svc-new@acme.example";
    assert_eq!(change(&mut plan.clone(), address)["after"]["company_id"], json!(acme));
    scene
        .refused_as_stale(
            &plan,
            |p| change(p, address)["after"]["company_id"] = json!(globex),
            &[format!(
                "`{address}` creates its user in company id `{globex}`, but the live company `{ACME}` has id `{acme}`"
            )],
        )
        .await;
    assert!(scene.w.emu.snapshot().users.iter().all(|u| u.email != "svc-new@acme.example"));
}

/// `svc-web`'s token (`--rotate-tokens`) edited to `svc-claims`'s user id: before #20 a token
/// of `svc-claims` was issued and stored in `svc-web`'s token file.
async fn a_token_edited_to_another_users_id_is_refused(version: ApiVersion) {
    let scene = applied(version).await;
    let plan = scene.saved_plan(&manifest("gold", true, ""), &["--rotate-tokens"]).await;
    let (web, claims) = (scene.user_id(WEB), scene.user_id(CLAIMS));
    let address = format!("token/{WEB}");
    let to_claims = |p: &mut Value| {
        let token = change(p, &address);
        token["live_id"] = json!(claims);
        token["after"]["user_id"] = json!(claims);
    };
    scene
        .refused_as_stale(
            &plan,
            to_claims,
            &[format!("`{address}` acts on user id `{claims}`, but the live user `{WEB}` has id `{web}`")],
        )
        .await;
}

// --- Removals: Acme Bank prunes, Globex does not. -------------------------------------------

const KEEP: &str = "svc-keep@acme.example";
const GONE: &str = "svc-gone@acme.example";
const OTHER: &str = "svc-other@globex.example";

/// Acme Bank with `svc-keep` and `svc-gone`, Globex with `svc-other`, all service users.
async fn pruning(version: ApiVersion) -> Scene {
    let acme = CompanyRecord::new(ACME);
    let globex = CompanyRecord::new(GLOBEX);
    let svc = |email: &str, company: &CompanyRecord| UserRecord {
        email: email.into(),
        ..service_user(version, 0, &company.company_id)
    };
    let users = vec![svc(KEEP, &acme), svc(GONE, &acme), svc(OTHER, &globex)];
    let mut config = EmulatorConfig::new(version);
    config.seed = Some(Snapshot { companies: vec![acme, globex], users, ..Snapshot::default() });
    Scene::new(config).await
}

/// Acme Bank pruning with `mode`, declaring `svc-keep`; Globex declared, not pruning.
fn pruning_manifest(mode: &str) -> String {
    format!(
        "companies:\n  - name: {ACME}\n    prune: {mode}\n  - name: {GLOBEX}\n\
         service_users:\n  - email: {KEEP}\n    company: {ACME}\n"
    )
}

/// The deactivation of `svc-gone` edited to `svc-other`'s id, a user of a company that does not
/// prune: before #20 `svc-other` was deactivated.
async fn a_deactivation_edited_to_another_companys_user_is_refused(version: ApiVersion) {
    let scene = pruning(version).await;
    let plan = scene.saved_plan(&pruning_manifest("deactivate"), &[]).await;
    let (gone, other) = (scene.user_id(GONE), scene.user_id(OTHER));
    let address = format!("service_user/{GONE}");
    assert_eq!(change(&mut plan.clone(), &address)["action"], "deactivate");
    scene
        .refused_as_stale(
            &plan,
            |p| change(p, &address)["live_id"] = json!(other),
            &[format!("`{address}` acts on user id `{other}`, but the live user `{GONE}` has id `{gone}`")],
        )
        .await;
    assert!(scene.w.user(OTHER).is_active);
}

/// A delete in Acme Bank (which prunes with `delete`) aimed at `svc-other` of Globex (which does
/// not prune): by its id, and by its address and id together. Before #20 `svc-other` was
/// deleted.
async fn a_delete_edited_into_a_company_that_does_not_prune_is_refused(version: ApiVersion) {
    let scene = pruning(version).await;
    let plan = scene.saved_plan(&pruning_manifest("delete"), &[]).await;
    let (gone, other) = (scene.user_id(GONE), scene.user_id(OTHER));
    let (acme, globex) = (scene.company_id(ACME), scene.company_id(GLOBEX));
    let address = format!("service_user/{GONE}");
    assert_eq!(change(&mut plan.clone(), &address)["action"], "delete");
    scene
        .refused_as_stale(
            &plan,
            |p| change(p, &address)["live_id"] = json!(other),
            &[format!("`{address}` acts on user id `{other}`, but the live user `{GONE}` has id `{gone}`")],
        )
        .await;
    // The whole change moved onto the other user, its company left as the one that prunes.
    let other_address = format!("service_user/{OTHER}");
    let retarget = |p: &mut Value| {
        let removal = change(p, &address);
        removal["address"] = json!(other_address);
        removal["live_id"] = json!(other);
        removal["before"]["email"] = json!(OTHER);
    };
    scene
        .refused_as_stale(
            &plan,
            retarget,
            &[format!(
                "`{other_address}` acts on a user of company `{ACME}` (id `{acme}`), but the live user `{OTHER}` \
                 (id `{other}`) is in company id `{globex}`"
            )],
        )
        .await;
    assert!(scene.w.emu.snapshot().users.iter().any(|u| u.email == OTHER));
}

under_both_dialects!(
    an_update_edited_to_the_admins_id_is_refused,
    a_company_update_edited_to_another_companys_id_is_refused,
    a_create_edited_into_another_company_is_refused,
    a_token_edited_to_another_users_id_is_refused,
    a_deactivation_edited_to_another_companys_user_is_refused,
    a_delete_edited_into_a_company_that_does_not_prune_is_refused,
);

// ---------------------------------------------------------------------------------------------
// Credentials only to the API configured for the run.

/// A listener on loopback standing for another host: whether anything connected to it.
struct Elsewhere(TcpListener);

impl Elsewhere {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Self(listener)
    }

    fn url(&self) -> String {
        format!("http://{}", self.0.local_addr().unwrap())
    }

    /// A connection made to it waits in the backlog, even after the client went away.
    fn was_contacted(&self) -> bool {
        match self.0.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_without_a_configured_api_url_is_a_usage_error_whatever_its_api_url() {
    let scene = applied(ApiVersion::V6).await;
    let plan = scene.saved_plan(&manifest("platinum", true, ""), &[]).await;
    let elsewhere = Elsewhere::new();
    let mut edited = plan.clone();
    edited["api_url"] = json!(elsewhere.url());
    // The plan as it was, and edited to send the credentials elsewhere, each with its plan id
    // dropped and recomputed: none is applied without `--api-url`/`OZ_API_URL`.
    let mut plans = vec![plan.clone()];
    plans.extend(tampered_variants(&edited));
    for plan in &plans {
        let run = scene.apply_plan_refused(plan, |cli| cli.env_remove("OZ_API_URL")).await;
        assert!(says_all(&run.stderr, &["no Oz API URL given", "`OZ_API_URL`"]), "{}", run.stderr);
        assert_eq!(scene.w.emu.stats().total_requests, 0, "it connected:\n{}", run.stderr);
        assert!(!elsewhere.was_contacted(), "it connected to the plan's API:\n{}", run.stderr);
    }
    scene.w.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_made_for_another_api_url_is_refused_naming_both() {
    let scene = applied(ApiVersion::V6).await;
    let plan = scene.saved_plan(&manifest("platinum", true, ""), &[]).await;
    let elsewhere = Elsewhere::new();
    let mut edited = plan.clone();
    edited["api_url"] = json!(elsewhere.url());
    for plan in tampered_variants(&edited) {
        let run = scene.apply_refused(&plan).await;
        let both = format!("the plan was made for `{}`, not `{}`", elsewhere.url(), scene.w.emu.url());
        assert!(says_all(&run.stderr, &[both]), "{}", run.stderr);
        assert_eq!(scene.w.emu.stats().total_requests, 0, "it connected:\n{}", run.stderr);
        assert!(!elsewhere.was_contacted(), "it connected to the plan's API:\n{}", run.stderr);
    }
    scene.w.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------------
// The source ids a saved plan carries for `apply --plan --id-map` (#24).

/// `manifest` with a `source_id` on Acme Bank and on `svc-web`, as `ozform export` writes them.
fn exported_manifest() -> String {
    manifest("gold", true, "")
        .replace(&format!("  - name: {ACME}\n"), &format!("  - name: {ACME}\n    source_id: old-acme\n"))
        .replace(&format!("  - email: {WEB}\n"), &format!("  - email: {WEB}\n    source_id: \"9f1c\"\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_carries_the_source_ids_of_its_creates_and_its_id_map_pairs_them() {
    let scene = Scene::new(EmulatorConfig::new(ApiVersion::V6)).await;
    let plan = scene.saved_plan(&exported_manifest(), &[]).await;
    assert_eq!(
        plan["source_ids"],
        json!({"company/Acme Bank": "old-acme", format!("service_user/{WEB}"): "9f1c"}),
        "{plan:#}"
    );

    // An edited source id is another plan: its id no longer fits.
    let mut edited = plan.clone();
    edited["source_ids"]["company/Acme Bank"] = json!("someone-else");
    let run = scene.apply_refused(&edited).await;
    assert!(run.stderr.contains("plan_id"), "{}", run.stderr);
    // Without a plan id (a plan from before plan ids), a source id must still name a create
    // of the plan and be one line of text.
    for (address, id) in [("company/No\u{1b}[2Jpe", json!("x")), ("company/Acme Bank", json!("a\u{1b}[2Jb"))]
    {
        let mut odd = plan.clone();
        odd.as_object_mut().unwrap().remove("plan_id");
        odd["source_ids"][address] = id;
        let run = scene.apply_refused(&odd).await;
        assert!(run.stderr.contains("source_ids"), "{}", run.stderr);
        // A hostile address is shown escaped, never interpreted by the terminal.
        assert!(!run.stderr.contains('\u{1b}'), "{}", run.stderr);
        if address.contains('\u{1b}') {
            assert!(run.stderr.contains("No\\u{1b}[2Jpe"), "{}", run.stderr);
        }
    }

    let saved = scene.w.path("plan.json");
    let map_path = scene.w.path("ids.json");
    let args = ["--plan", saved.to_str().unwrap(), "--id-map", map_path.to_str().unwrap()];
    scene.run(scene.command("apply", &args)).await.code(0);
    let map: Value = serde_json::from_str(&std::fs::read_to_string(&map_path).unwrap()).unwrap();
    let entry = |address: &str| (map[address]["source_id"].clone(), map[address]["live_id"].clone());
    assert_eq!(entry("company/Acme Bank"), (json!("old-acme"), json!(scene.company_id(ACME))));
    assert_eq!(entry(&format!("service_user/{WEB}")), (json!("9f1c"), json!(scene.user_id(WEB))));
    // Objects whose manifest names no source id are mapped too, without one.
    assert_eq!(entry("company/Globex"), (Value::Null, json!(scene.company_id(GLOBEX))));
    assert_eq!(entry(&format!("service_user/{CLAIMS}")), (Value::Null, json!(scene.user_id(CLAIMS))));
    scene.w.assert_no_secrets();
}
