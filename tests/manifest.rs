//! The manifest loader as users meet it: every invalid fixture's rendered diagnostic (insta
//! snapshots), the examples, the committed schema, `ozform validate` / `ozform schema`, and a
//! property test that no input makes `load` panic.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod common;

use std::path::{Path, PathBuf};

use common::{Cli, root};
use miette::{GraphicalReportHandler, GraphicalTheme};
use ozform::manifest::{self, Document};
use ozform::model::Desired;
use ozform::secret::SecretRef;

/// No variables at all: fixtures must not depend on the machine's environment.
fn no_env(_: &str) -> Option<String> {
    None
}

/// The environment the examples need.
fn example_env(name: &str) -> Option<String> {
    (name == "OZ_ENV").then(|| "prod".to_string())
}

/// The diagnostic as a user reads it, without colour and with a fixed width.
fn render(err: &manifest::ManifestError) -> String {
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, err)
        .unwrap();
    out.replace(&root().display().to_string(), "[ROOT]")
}

/// Load a fixture by its path relative to the repository root (so snapshots show short paths).
fn load_fixture(name: &str) -> Result<Desired, manifest::ManifestError> {
    // Integration tests run in the package root, so this relative path is the one users see.
    let path = PathBuf::from("tests/fixtures/invalid").join(name);
    manifest::load(&[path], &no_env)
}

macro_rules! invalid_fixture {
    ($test:ident, $fixture:literal, $codes:expr) => {
        #[test]
        fn $test() {
            let err = load_fixture($fixture).expect_err("the fixture must be invalid");
            let rendered = render(&err);
            for code in $codes {
                assert!(
                    rendered.contains(&format!("ozform::manifest::{code}")),
                    "{code} missing from\n{rendered}"
                );
            }
            insta::assert_snapshot!(stringify!($test), rendered);
        }
    };
}

invalid_fixture!(a_yaml_syntax_error_in_a_second_document_is_located, "yaml_syntax.yaml", ["yaml_syntax"]);
invalid_fixture!(an_unknown_field_suggests_the_intended_one, "unknown_field.yaml", ["unknown_field"]);
invalid_fixture!(a_duplicate_key_points_at_both, "duplicate_key.yaml", ["duplicate_key"]);
invalid_fixture!(yes_and_on_are_ambiguous_booleans, "ambiguous_boolean.yaml", ["ambiguous_boolean"]);
invalid_fixture!(a_literal_password_is_refused_with_the_fix, "literal_password.yaml", ["literal_password"]);
invalid_fixture!(a_company_declared_twice_points_at_both, "duplicate_company.yaml", ["duplicate_company"]);
invalid_fixture!(
    an_email_declared_twice_across_files_points_at_both,
    "duplicate_email_across_files",
    ["duplicate_email"]
);
invalid_fixture!(
    two_problems_in_two_files_are_both_reported,
    "two_files_two_errors",
    ["unknown_field", "ambiguous_boolean"]
);
invalid_fixture!(
    an_undeclared_company_suggests_a_declared_one,
    "undeclared_company.yaml",
    ["undeclared_company"]
);
invalid_fixture!(a_malformed_email_is_located, "malformed_email.yaml", ["malformed_email"]);
invalid_fixture!(empty_names_are_located, "empty_name.yaml", ["empty_name"]);
invalid_fixture!(a_missing_variable_is_located, "missing_variable.yaml", ["missing_variable"]);
invalid_fixture!(a_document_that_is_not_a_map_is_located, "not_a_map.yaml", ["not_a_map"]);
invalid_fixture!(values_of_the_wrong_type_are_located, "wrong_type.yaml", ["wrong_type"]);
invalid_fixture!(a_password_naming_two_sources_is_refused, "bad_secret.yaml", ["bad_secret"]);
invalid_fixture!(an_unclosed_interpolation_is_located, "bad_interpolation.yaml", ["bad_interpolation"]);
invalid_fixture!(a_missing_required_field_is_located, "missing_field.yaml", ["missing_field"]);
invalid_fixture!(
    a_prune_other_than_deactivate_or_delete_is_located,
    "unknown_prune.yaml",
    ["wrong_type", "wrong_type"]
);

#[test]
fn every_invalid_fixture_fails_to_load() {
    let dir = root().join("tests/fixtures/invalid");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert!(names.len() >= 15, "{names:?}");
    for name in names {
        assert!(manifest::load(&[dir.join(&name)], &no_env).is_err(), "{name:?} loaded without error");
    }
}

#[test]
fn two_problems_in_two_files_are_two_located_problems() {
    let err = load_fixture("two_files_two_errors").unwrap_err();
    assert_eq!(err.problems.len(), 2);
    let rendered = render(&err);
    assert!(rendered.contains("two_files_two_errors/a.yaml:3:5"), "{rendered}");
    assert!(rendered.contains("two_files_two_errors/b.yaml:4:20"), "{rendered}");
}

#[test]
fn a_literal_password_never_appears_in_the_diagnostic() {
    let rendered = render(&load_fixture("literal_password.yaml").unwrap_err());
    assert!(!rendered.contains("canary"), "{rendered}");
    assert!(!rendered.contains("hunter2"), "{rendered}");
}

#[test]
fn a_path_that_does_not_exist_is_named() {
    let err = manifest::load(&[PathBuf::from("no/such/manifests")], &no_env).unwrap_err();
    insta::assert_snapshot!("a_path_that_does_not_exist_is_named", render(&err));
}

// ---------------------------------------------------------------------------------------------
// Examples and schema.

fn example_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> =
        std::fs::read_dir(root().join("examples").join(dir)).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn the_basic_example_loads_two_companies_three_users_two_tokens() {
    let desired = manifest::load(&[root().join("examples/basic")], &no_env).unwrap();
    let names: Vec<_> = desired.companies.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["Acme Bank", "Globex Insurance"]);
    let emails: Vec<_> = desired.users.iter().map(|u| u.email.to_string()).collect();
    assert_eq!(emails, ["svc-batch@acme.example", "svc-claims@globex.example", "svc-web@acme.example"]);
    assert_eq!(desired.users.iter().filter(|u| u.token.issue).count(), 2);
    assert_eq!(desired.files.len(), 2);
    assert_eq!(desired.users[2].password, Some(SecretRef::Env("ACME_WEB_PASSWORD".into())));
}

#[test]
fn the_multi_env_example_takes_its_names_from_oz_env() {
    let prod = manifest::load(&[root().join("examples/multi-env")], &example_env).unwrap();
    assert_eq!(prod.companies[0].name, "Acme Bank (prod)");
    assert_eq!(
        prod.companies[0].technical_meta_data,
        Some(serde_json::json!({"environment": "prod", "note": "${not-interpolated}"}))
    );
    assert_eq!(prod.users[1].email.as_str(), "svc-web-prod@acme.example");
    assert_eq!(
        prod.users[1].password,
        Some(SecretRef::File(root().join("examples/multi-env").join("secrets/prod/web-password")))
    );
    let staging = manifest::load(&[root().join("examples/multi-env")], &no_env).unwrap();
    assert_eq!(staging.companies[0].name, "Acme Bank (staging)");
}

#[test]
fn every_example_starts_with_the_schema_comment_and_matches_the_schema() {
    let schema = manifest::schema();
    for dir in ["basic", "multi-env"] {
        for file in example_files(dir) {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                text.starts_with("# yaml-language-server: $schema=../../schemas/ozform.schema.json\n"),
                "{}",
                file.display()
            );
            let documents: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(&text).unwrap();
            for document in documents {
                let errors = schema_check::validate(&schema, &schema, &document, "");
                assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
            }
        }
    }
    assert!(root().join("examples/basic").join("../../schemas/ozform.schema.json").is_file());
}

#[test]
fn the_schema_check_itself_rejects_what_the_schema_forbids() {
    let schema = manifest::schema();
    let bad = serde_json::json!({"service_users": [{"email": "a@b.c", "company": "X", "password": "literal", "colour": 1}]});
    let errors = schema_check::validate(&schema, &schema, &bad, "");
    assert!(errors.iter().any(|e| e.contains("colour")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("password")), "{errors:?}");
}

#[test]
fn the_committed_schema_equals_ozform_schema() {
    let committed = std::fs::read_to_string(root().join("schemas/ozform.schema.json")).unwrap_or_default();
    let expected = format!("{}\n", serde_json::to_string_pretty(&manifest::schema()).unwrap());
    assert!(
        committed == expected,
        "schemas/ozform.schema.json is out of date; regenerate it with:\n    cargo run -- schema > schemas/ozform.schema.json"
    );
}

/// A small JSON Schema checker for the keywords schemars emits for the manifest (`type`,
/// `properties`, `required`, `additionalProperties`, `items`, `$ref`, `anyOf`, `oneOf`,
/// `minLength`): enough to check the examples without another crate.
mod schema_check {
    use serde_json::Value;

    pub fn validate(root: &Value, schema: &Value, value: &Value, path: &str) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.trim_start_matches("#/$defs/");
            return validate(root, &root["$defs"][name], value, path);
        }
        if let Some(types) = schema.get("type") {
            let allowed: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if !allowed.iter().any(|t| type_matches(t, value)) {
                errors.push(format!("{path}: {value} is not of type {allowed:?}"));
                return errors;
            }
        }
        for (keyword, need_one) in [("anyOf", false), ("oneOf", true)] {
            if let Some(options) = schema.get(keyword).and_then(Value::as_array) {
                let passing = options.iter().filter(|o| validate(root, o, value, path).is_empty()).count();
                if passing == 0 || (need_one && passing > 1) {
                    errors.push(format!("{path}: {value} matches {passing} of the {keyword} options"));
                }
            }
        }
        if let (Some(min), Some(s)) = (schema.get("minLength").and_then(Value::as_u64), value.as_str()) {
            if (s.chars().count() as u64) < min {
                errors.push(format!("{path}: shorter than {min}"));
            }
        }
        if let Value::Object(map) = value {
            let properties = schema.get("properties").and_then(Value::as_object);
            for key in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                if let Some(key) = key.as_str().filter(|k| !map.contains_key(*k)) {
                    errors.push(format!("{path}: `{key}` is required"));
                }
            }
            for (key, item) in map {
                match properties.and_then(|p| p.get(key)) {
                    Some(sub) => errors.extend(validate(root, sub, item, &format!("{path}/{key}"))),
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        errors.push(format!("{path}: `{key}` is not allowed"));
                    }
                    None => {}
                }
            }
        }
        if let (Some(items), Value::Array(values)) = (schema.get("items"), value) {
            for (i, item) in values.iter().enumerate() {
                errors.extend(validate(root, items, item, &format!("{path}/{i}")));
            }
        }
        errors
    }

    fn type_matches(t: &str, value: &Value) -> bool {
        match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            _ => true,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing manifests.

/// `desired` without locations and file lists, which a round trip through a new file changes.
fn identities(desired: &Desired) -> String {
    format!("{:?}", Document::from(desired))
}

#[test]
fn to_yaml_writes_a_manifest_that_loads_back_to_the_same_state() {
    let desired = manifest::load(&[root().join("examples/basic")], &no_env).unwrap();
    let yaml = manifest::to_yaml(&Document::from(&desired));
    assert!(yaml.starts_with("# yaml-language-server: $schema="), "{yaml}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("export.yaml"), &yaml).unwrap();
    let again = manifest::load(&[dir.path().to_path_buf()], &no_env).unwrap();
    assert_eq!(identities(&again), identities(&desired), "{yaml}");
}

#[test]
fn to_yaml_quotes_strings_that_yaml_would_read_as_something_else() {
    let tricky =
        ["2024", "yes", "true", "null", "~", "", "a: b", "#hash", "${NOT_A_VAR}", "- dash", "0x1F", "1e3"];
    let doc = Document {
        companies: tricky
            .iter()
            .map(|name| manifest::CompanyDoc {
                name: (*name).to_string(),
                technical_meta_data: None,
                prune: None,
            })
            .filter(|c| !c.name.is_empty())
            .collect(),
        service_users: vec![],
    };
    let yaml = manifest::to_yaml(&doc);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("export.yaml"), &yaml).unwrap();
    // `${NOT_A_VAR}` is a name, not an interpolation: loading must not need the variable.
    let loaded = manifest::load(&[dir.path().to_path_buf()], &no_env);
    let loaded = loaded.map_err(|e| render(&e)).unwrap();
    let mut names: Vec<_> = loaded.companies.iter().map(|c| c.name.clone()).collect();
    let mut expected: Vec<_> = doc.companies.iter().map(|c| c.name.clone()).collect();
    names.sort();
    expected.sort();
    assert_eq!(names, expected, "{yaml}");
}

// ---------------------------------------------------------------------------------------------
// The command line.

#[test]
fn validate_prints_a_summary_and_exits_0_for_the_examples() {
    let run = Cli::new().args(["validate", "examples/basic"]).current_dir(root()).run().code(0);
    assert_eq!(run.stdout, "ok: 2 companies, 3 service users, 2 tokens in 2 files\n");
    let run = Cli::new()
        .args(["validate", "examples/multi-env"])
        .env("OZ_ENV", "prod")
        .current_dir(root())
        .run()
        .code(0);
    assert_eq!(run.stdout, "ok: 1 company, 2 service users, 1 token in 2 files\n");
}

#[test]
fn validate_exits_1_with_every_problem_on_stderr() {
    let run = Cli::new()
        .args(["validate", "tests/fixtures/invalid/two_files_two_errors"])
        .current_dir(root())
        .run()
        .code(1);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("ozform::manifest::unknown_field"), "{}", run.stderr);
    assert!(run.stderr.contains("ozform::manifest::ambiguous_boolean"), "{}", run.stderr);
    assert!(run.stderr.contains("the manifests have 2 problems"), "{}", run.stderr);
}

#[test]
fn validate_names_a_path_that_does_not_exist() {
    let run =
        Cli::new().args(["validate", "examples/basic", "nowhere.yaml"]).current_dir(root()).run().code(1);
    assert!(run.stderr.contains("cannot read `nowhere.yaml`: no such file or directory"), "{}", run.stderr);
}

#[test]
fn validate_never_prints_a_literal_password() {
    let run = Cli::new()
        .args(["validate", "tests/fixtures/invalid/literal_password.yaml"])
        .current_dir(root())
        .run()
        .code(1);
    assert!(run.stderr.contains("ozform::manifest::literal_password"), "{}", run.stderr);
    assert!(!run.stderr.contains("canary") && !run.stdout.contains("canary"), "{}", run.stderr);
}

#[test]
fn schema_prints_the_manifest_schema() {
    let run = Cli::new().args(["schema"]).run().code(0);
    let printed: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(printed, manifest::schema());
    assert!(run.stdout.ends_with("}\n"));
}

// ---------------------------------------------------------------------------------------------
// No input makes the loader panic.

fn load_text(dir: &Path, bytes: &[u8]) {
    let file = dir.join("m.yaml");
    std::fs::write(&file, bytes).unwrap();
    let _ = manifest::load(&[file], &example_env);
}

#[test]
fn every_truncation_of_the_examples_loads_or_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for example in ["basic", "multi-env"] {
        for file in example_files(example) {
            let bytes = std::fs::read(&file).unwrap();
            for end in 0..=bytes.len() {
                load_text(dir.path(), &bytes[..end]);
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    #[test]
    fn random_text_never_panics_the_loader(text in "\\PC{0,200}") {
        let dir = tempfile::tempdir().unwrap();
        load_text(dir.path(), text.as_bytes());
    }

    #[test]
    fn yaml_like_text_never_panics_the_loader(text in "[a-z_:{}\\[\\],\\- \n#\"'$&*!|>@.]{0,300}") {
        let dir = tempfile::tempdir().unwrap();
        load_text(dir.path(), text.as_bytes());
    }
}

#[test]
fn to_yaml_writes_the_basic_example_like_this() {
    let desired = manifest::load(&[root().join("examples/basic")], &no_env).unwrap();
    insta::assert_snapshot!("to_yaml_of_the_basic_example", manifest::to_yaml(&Document::from(&desired)));
}

#[test]
fn prune_is_read_per_company_and_absent_means_keep() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.yaml");
    std::fs::write(
        &path,
        "companies:\n  - name: A\n    prune: deactivate\n  - name: B\n    prune: delete\n  - name: C\n  - name: D\n    prune: null\n",
    )
    .unwrap();
    let desired = manifest::load(&[path], &no_env).unwrap();
    let prunes: Vec<_> = desired.companies.iter().map(|c| (c.name.as_str(), c.prune)).collect();
    assert_eq!(
        prunes,
        [
            ("A", Some(ozform::model::Prune::Deactivate)),
            ("B", Some(ozform::model::Prune::Delete)),
            ("C", None),
            ("D", None)
        ]
    );
}
