//! The manifest loader as users meet it: every invalid fixture's rendered diagnostic (insta
//! snapshots), the examples, the committed schema, `ozform validate` / `ozform schema`, and a
//! property test that no input makes `load` panic.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use std::path::{Path, PathBuf};

use common::{Cli, root};
use miette::{GraphicalReportHandler, GraphicalTheme};
use ozform::manifest::{self, Document};
use ozform::model::Desired;
use ozform::secret::{PasswordSource, SecretRef};

/// No variables at all: fixtures must not depend on the machine's environment.
fn no_env(_: &str) -> Option<String> {
    None
}

/// The environment the examples need.
fn example_env(name: &str) -> Option<String> {
    (name == "OZ_VAR_ENV").then(|| "prod".to_string())
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

// Hostile input (issue #14): each new diagnostic, and what no diagnostic may print.
invalid_fixture!(a_file_that_is_not_utf8_is_located_at_its_first_bad_byte, "not_utf8.yaml", ["not_utf8"]);
invalid_fixture!(a_byte_order_mark_does_not_shift_columns, "byte_order_mark.yaml", ["unknown_field"]);
invalid_fixture!(
    a_password_source_without_a_value_is_refused,
    "password_without_source_value.yaml",
    ["bad_secret"]
);
invalid_fixture!(
    a_value_that_interpolates_a_secret_is_refused,
    "secret_interpolation.yaml",
    ["secret_interpolation"]
);
invalid_fixture!(
    terminal_escapes_in_values_are_printed_escaped,
    "terminal_escape.yaml",
    ["duplicate_company", "unknown_field"]
);
invalid_fixture!(
    raw_control_characters_in_the_source_are_printed_escaped,
    "raw_control_character.yaml",
    ["yaml_syntax"]
);

// Issue #20: what a pull request may no longer reach.
invalid_fixture!(
    a_variable_not_named_oz_var_is_refused_without_reading_it,
    "undeclared_variable.yaml",
    ["undeclared_variable"]
);
invalid_fixture!(
    a_secret_file_outside_the_manifest_paths_is_refused_as_written,
    "secret_outside.yaml",
    ["secret_outside"]
);
invalid_fixture!(a_saved_plan_given_as_a_manifest_says_how_to_apply_it, "saved_plan.json", ["saved_plan"]);
invalid_fixture!(
    aliases_past_the_budget_of_all_files_together_are_located_where_they_cross_it,
    "alias_budget",
    ["alias_budget"]
);

/// Whether `text` holds a character a terminal could act on (all but newline).
fn has_control(text: &str) -> bool {
    text.chars().any(|c| {
        c != '\n' && (c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
    })
}

#[test]
fn no_fixture_diagnostic_holds_a_control_character() {
    for name in ["terminal_escape.yaml", "raw_control_character.yaml", "not_utf8.yaml"] {
        let rendered = render(&load_fixture(name).unwrap_err());
        assert!(!has_control(&rendered), "{name}:\n{rendered}");
    }
}

#[test]
fn a_secret_is_refused_whatever_the_environment_holds_and_never_printed() {
    let env = |name: &str| Some(format!("canary-{name}"));
    let path = PathBuf::from("tests/fixtures/invalid/secret_interpolation.yaml");
    let rendered = render(&manifest::load(&[path], &env).unwrap_err());
    assert!(rendered.contains("ozform::manifest::secret_interpolation"), "{rendered}");
    assert!(!rendered.contains("canary"), "{rendered}");
}

/// A diagnostic about files made at run time, without wrapping (so that the temporary
/// directory's length cannot move a line break) and with that directory as `[TMP]`.
fn render_in(dir: &Path, err: &manifest::ManifestError) -> String {
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(1_000)
        .render_report(&mut out, err)
        .unwrap();
    out.replace(&dir.display().to_string(), "[TMP]")
}

#[cfg(unix)]
#[test]
fn links_outside_the_paths_given_or_nowhere_are_refused_naming_the_link() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(m.join("a.yaml"), "companies: [{name: A}]\n").unwrap();
    symlink("/proc/self/environ", m.join("environ.yaml")).unwrap();
    symlink(m.join("nowhere.yaml"), m.join("dangling.yaml")).unwrap();
    symlink("a.yaml", m.join("inside.yaml")).unwrap();
    let err = manifest::load(&[m], &no_env).unwrap_err();
    insta::assert_snapshot!(render_in(dir.path(), &err));
}

#[cfg(unix)]
#[test]
fn special_files_and_files_over_the_caps_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.yaml");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let big = dir.path().join("big.yaml");
    std::fs::File::create(&big).unwrap().set_len(manifest::MAX_FILE_BYTES + 1).unwrap();
    // Four files at the cap reach the total: the fifth is refused (sparse, so nothing is
    // written; each reads as NUL bytes, a YAML error at its first character).
    let full: Vec<PathBuf> = (1..=5).map(|i| dir.path().join(format!("full-{i}.yaml"))).collect();
    for path in &full {
        std::fs::File::create(path).unwrap().set_len(manifest::MAX_FILE_BYTES).unwrap();
    }
    let mut paths = vec![PathBuf::from("/dev/zero"), fifo, big];
    paths.extend(full);
    let err = manifest::load(&paths, &no_env).unwrap_err();
    insta::assert_snapshot!(render_in(dir.path(), &err));
}

#[test]
fn a_flood_of_problems_shows_the_first_hundred_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("companies:\n  - name: A\n");
    for i in 0..10_000 {
        std::fmt::Write::write_fmt(&mut text, format_args!("    x{i}: 1\n")).unwrap();
    }
    std::fs::write(dir.path().join("flood.yaml"), text).unwrap();
    let err = manifest::load(&[dir.path().to_path_buf()], &no_env).unwrap_err();
    assert_eq!((err.total, err.problems.len()), (10_000, manifest::MAX_PROBLEMS));
    let rendered = render_in(dir.path(), &err);
    assert_eq!(rendered.matches("ozform::manifest::unknown_field").count(), manifest::MAX_PROBLEMS);
    let tail: Vec<&str> = rendered.lines().rev().take(22).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    insta::assert_snapshot!(tail.join("\n"));
}

#[test]
fn a_problem_far_along_a_long_line_shows_a_window_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let pairs: Vec<String> = (0..12_000).map(|i| format!("k{i}: {i}")).collect();
    let text =
        format!("companies:\n  - {{name: A, technical_meta_data: {{{}}}, tier: gold}}\n", pairs.join(", "));
    assert!(text.len() > 150_000);
    std::fs::write(dir.path().join("long.yaml"), text).unwrap();
    let err = manifest::load(&[dir.path().to_path_buf()], &no_env).unwrap_err();
    let rendered = render_in(dir.path(), &err);
    assert!(rendered.lines().all(|l| l.chars().count() < 300), "{rendered}");
    insta::assert_snapshot!(rendered);
}

#[test]
fn every_invalid_fixture_fails_to_load() {
    let dir = root().join("tests/fixtures/invalid");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert!(names.len() >= 21, "{names:?}");
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
    assert_eq!(desired.users[2].password, Some(SecretRef::Env("ACME_WEB_PASSWORD".into()).into()));
}

#[test]
fn the_multi_env_example_takes_its_names_from_oz_var_env() {
    let prod = manifest::load(&[root().join("examples/multi-env")], &example_env).unwrap();
    assert_eq!(prod.companies[0].name, "Acme Bank (prod)");
    assert_eq!(
        prod.companies[0].technical_meta_data,
        Some(serde_json::json!({"environment": "prod", "note": "${not-interpolated}"}))
    );
    assert_eq!(prod.users[1].email.as_str(), "svc-web-prod@acme.example");
    // Recorded relative to the checkout root (this repository), found at the path it names.
    let Some(PasswordSource::Read(SecretRef::File(file))) = &prod.users[1].password else {
        panic!("{:?}", prod.users[1].password)
    };
    assert_eq!(file.path(), Path::new("examples/multi-env/secrets/prod/web-password"));
    assert_eq!(file.written(), Path::new("secrets/prod/web-password"));
    assert_eq!(file.resolved(), Some(root().join("examples/multi-env/secrets/prod/web-password").as_path()));
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
fn the_schema_allows_generate_true_and_nothing_else_under_generate() {
    let schema = manifest::schema();
    let with = |password: serde_json::Value| {
        let doc =
            serde_json::json!({"service_users": [{"email": "a@b.c", "company": "X", "password": password}]});
        schema_check::validate(&schema, &schema, &doc, "")
    };
    assert_eq!(with(serde_json::json!({"generate": true})), Vec::<String>::new());
    for refused in [
        serde_json::json!({"generate": false}),
        serde_json::json!({"generate": "true"}),
        serde_json::json!({"generate": true, "env": "PW"}),
    ] {
        assert!(!with(refused.clone()).is_empty(), "{refused}");
    }
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
/// `minLength`, `const`): enough to check the examples without another crate.
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
        if let Some(wanted) = schema.get("const")
            && wanted != value
        {
            errors.push(format!("{path}: {value} is not {wanted}"));
        }
        if let (Some(min), Some(s)) = (schema.get("minLength").and_then(Value::as_u64), value.as_str())
            && (s.chars().count() as u64) < min
        {
            errors.push(format!("{path}: shorter than {min}"));
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
                source_id: None,
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

#[test]
fn source_ids_load_and_are_written_back_by_a_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let text = "companies:\n  - {name: Acme, source_id: c-old-1}\n\
                service_users:\n  - {email: a@acme.example, company: Acme, source_id: \"42\", password: {generate: true}}\n";
    std::fs::write(dir.path().join("m.yaml"), text).unwrap();
    let desired = manifest::load(&[dir.path().to_path_buf()], &no_env).unwrap();
    assert_eq!(desired.companies[0].source_id.as_deref(), Some("c-old-1"));
    assert_eq!(desired.users[0].source_id.as_deref(), Some("42"));

    let again = tempfile::tempdir().unwrap();
    let yaml = manifest::to_yaml(&Document::from(&desired));
    std::fs::write(again.path().join("m.yaml"), &yaml).unwrap();
    let back = manifest::load(&[again.path().to_path_buf()], &no_env).unwrap();
    assert_eq!(back.companies[0].source_id.as_deref(), Some("c-old-1"), "{yaml}");
    assert_eq!(back.users[0].source_id.as_deref(), Some("42"), "{yaml}");
    assert_eq!(back.users[0].password, Some(PasswordSource::Generate), "{yaml}");
}

#[test]
fn a_blank_or_non_string_source_id_is_a_located_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = "companies:\n  - {name: Acme, source_id: \" \"}\n  - {name: Beta, source_id: [1]}\n";
    std::fs::write(dir.path().join("m.yaml"), text).unwrap();
    let err = manifest::load(&[dir.path().to_path_buf()], &no_env).unwrap_err();
    let rendered = render(&err);
    assert!(rendered.contains("`source_id` is empty") && rendered.contains("m.yaml:2:"), "{rendered}");
    assert!(rendered.contains("leave `source_id` out"), "{rendered}");
    assert!(rendered.contains("m.yaml:3:"), "{rendered}");
}

#[test]
fn a_source_id_a_saved_plan_could_not_carry_is_a_located_error() {
    // The rule saved plans' `source_ids` are read with: one line, at most 256 bytes.
    let dir = tempfile::tempdir().unwrap();
    let long = "9".repeat(257);
    let text = format!(
        "companies:\n  - {{name: Acme, source_id: \"a\\nb\"}}\n  - {{name: Beta, source_id: \"{long}\"}}\n  - {{name: Gamma, source_id: \"{}\"}}\n",
        "9".repeat(256)
    );
    std::fs::write(dir.path().join("m.yaml"), text).unwrap();
    let err = manifest::load(&[dir.path().to_path_buf()], &no_env).unwrap_err();
    let rendered = render(&err);
    assert!(rendered.contains("ozform::manifest::bad_source_id"), "{rendered}");
    assert!(rendered.contains("m.yaml:2:") && rendered.contains("m.yaml:3:"), "{rendered}");
    assert!(!rendered.contains("m.yaml:4:"), "256 bytes is an id: {rendered}");
}

// ---------------------------------------------------------------------------------------------
// The command line.

#[test]
fn validate_prints_a_summary_and_exits_0_for_the_examples() {
    let run = Cli::new().args(["validate", "examples/basic"]).current_dir(root()).run().code(0);
    assert_eq!(run.stdout, "ok: 2 companies, 3 service users, 2 tokens in 2 files\n");
    let run = Cli::new()
        .args(["validate", "examples/multi-env"])
        .env("OZ_VAR_ENV", "prod")
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

// ---------------------------------------------------------------------------------------------
// Hostile input (issue #14): what no file may make the loader do, over arbitrary bytes and
// mutations of the examples, and regression cases generated here.

/// The admin password of the CI job that loads the manifests.
const CANARY: &str = "canary-admin-7f3e9b";

/// A CI job's environment: the admin password, a service user's password, and `OZ_VAR_ENV`. (The
/// service user's password is secret only where a manifest loaded with it names it in a
/// `password`, which a mutation may undo, so only the admin password is a canary.)
fn ci_env(name: &str) -> Option<String> {
    match name {
        "OZ_ADMIN_PASSWORD" => Some(CANARY.to_string()),
        "ACME_WEB_PASSWORD" => Some("web-password".to_string()),
        "OZ_VAR_ENV" => Some("prod".to_string()),
        _ => None,
    }
}

/// The lines of a manifest as YAML counts them (after a byte order mark, bad UTF-8 replaced).
fn yaml_lines(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = String::from_utf8_lossy(bytes).replace("\r\n", "\n").replace('\r', "\n");
    text.split('\n').map(str::to_string).collect()
}

/// Every `file:line:column` a rendering names for `name`.
fn places(rendered: &str, name: &str) -> Vec<(usize, usize)> {
    let prefix = format!("[{name}:");
    rendered
        .lines()
        .filter_map(|line| {
            let place = &line[line.find(&prefix)? + prefix.len()..];
            let (line, column) = place.strip_suffix(']')?.split_once(':')?;
            Some((line.parse().ok()?, column.parse().ok()?))
        })
        .collect()
}

/// Load `bytes` as a manifest in a CI job's environment and check that nothing a hostile file
/// may try gets through: a panic (proptest reports it), a canary secret or a control character
/// in what is printed, unbounded output, a problem without a place, or a place outside the file.
fn check_hostile(bytes: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
    use proptest::prop_assert;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.yaml");
    std::fs::write(&file, bytes).unwrap();
    let err = match manifest::load(std::slice::from_ref(&file), &ci_env) {
        Ok(desired) => {
            let desired = format!("{desired:?}");
            prop_assert!(!desired.contains(CANARY), "{}", desired);
            return Ok(());
        }
        Err(err) => err,
    };
    let rendered = {
        let mut out = String::new();
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
            .with_width(80)
            .render_report(&mut out, &err)
            .unwrap();
        out.replace(&dir.path().display().to_string(), "[TMP]")
    };
    prop_assert!(!rendered.contains(CANARY), "{}", rendered);
    prop_assert!(!has_control(&rendered), "{}", rendered);
    prop_assert!(rendered.len() < 1_000_000, "{} bytes", rendered.len());
    prop_assert!(err.problems.len() <= manifest::MAX_PROBLEMS);
    for problem in &err.problems {
        prop_assert!(problem.labels().is_some() && problem.source_code().is_some(), "{:?}", problem);
    }
    let lines = yaml_lines(bytes);
    let found = places(&rendered, "[TMP]/m.yaml");
    prop_assert!(found.len() >= err.problems.len(), "{}", rendered);
    for (line, column) in found {
        prop_assert!((1..=lines.len()).contains(&line), "line {} of {}:\n{}", line, lines.len(), rendered);
        let length = lines[line - 1].chars().count();
        prop_assert!((1..=length + 1).contains(&column), "column {} of {}:\n{}", column, length, rendered);
    }
    Ok(())
}

/// One change to a manifest's bytes, at a place chosen as a fraction of its length.
#[derive(Debug, Clone)]
enum Mutation {
    Insert(proptest::sample::Index, Vec<u8>),
    Delete(proptest::sample::Index, usize),
    Replace(proptest::sample::Index, u8),
}

fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
    use proptest::prelude::*;
    let chunk = prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..8),
        Just(b"\x1b]0;owned\x07\x1b[2J".to_vec()),
        Just("\"\\e]0;owned\\a\\e[2J\u{202e}\"".as_bytes().to_vec()),
        Just(b"\xef\xbb\xbf".to_vec()),
        Just(b"\xff\xfe\xc3".to_vec()),
        Just(b"\x00\x7f\t\r".to_vec()),
        Just(b"\"${OZ_ADMIN_PASSWORD}\"".to_vec()),
        Just(b"${OZ_ADMIN_PASSWORD:-x}".to_vec()),
        Just(b"${ACME_WEB_PASSWORD}".to_vec()),
        Just(b"{env: ~}".to_vec()),
        Just(b"\n  - ".to_vec()),
        Just(b"\n---\n".to_vec()),
        // A line past column 65,535 with a problem at its end.
        (60_000usize..70_000).prop_map(|n| format!("{{k: {}, tier: gold}}", "v".repeat(n)).into_bytes()),
        (1usize..300).prop_map(|n| "[{".repeat(n).into_bytes()),
        // Block nesting past the parser's depth budget.
        (1usize..100).prop_map(|n| (0..n)
            .flat_map(|i| ["  ".repeat(i), "- a:\n".into()])
            .collect::<String>()
            .into_bytes()),
        (1usize..2_000).prop_map(|n| "- \n".repeat(n).into_bytes()),
    ];
    prop_oneof![
        (any::<proptest::sample::Index>(), chunk).prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<proptest::sample::Index>(), 1usize..64).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<proptest::sample::Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Replace(at, byte)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        match mutation {
            Mutation::Insert(at, chunk) => {
                let at = at.index(bytes.len() + 1);
                bytes.splice(at..at, chunk.iter().copied());
            }
            Mutation::Delete(at, n) if !bytes.is_empty() => {
                let at = at.index(bytes.len());
                bytes.drain(at..(at + n).min(bytes.len()));
            }
            Mutation::Replace(at, byte) if !bytes.is_empty() => {
                let at = at.index(bytes.len());
                bytes[at] = *byte;
            }
            Mutation::Delete(..) | Mutation::Replace(..) => {}
        }
    }
    bytes
}

fn basic_examples() -> Vec<Vec<u8>> {
    example_files("basic").iter().map(|f| std::fs::read(f).unwrap()).collect()
}

proptest::proptest! {
    // A few hundred cases: a few seconds in a debug build.
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_bytes_get_through_to_nothing(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2_000)) {
        check_hostile(&bytes)?;
    }

    #[test]
    fn mutated_examples_get_through_to_nothing(
        example in proptest::sample::select(basic_examples()),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        check_hostile(&mutate(example, &mutations))?;
    }
}

#[test]
fn the_hostile_fixtures_get_through_to_nothing() {
    for name in
        ["terminal_escape.yaml", "raw_control_character.yaml", "not_utf8.yaml", "byte_order_mark.yaml"]
    {
        let bytes = std::fs::read(root().join("tests/fixtures/invalid").join(name)).unwrap();
        check_hostile(&bytes).unwrap();
    }
    let secret = std::fs::read(root().join("tests/fixtures/invalid/secret_interpolation.yaml")).unwrap();
    check_hostile(&secret).unwrap();
}

#[test]
fn a_megabyte_of_empty_items_is_a_flood_counted_in_full_and_shown_capped() {
    // The fuzzer's find was 10 MB of `- ` lines: 3.5 million problems and 4.9 GB. One
    // megabyte keeps a debug build quick; `benches/bench_validate.rs` times the full size.
    let mut text = String::from("companies:\n");
    text.push_str(&"- \n".repeat(350_000));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flood.yaml"), &text).unwrap();
    let err = manifest::load(&[dir.path().to_path_buf()], &no_env).unwrap_err();
    assert_eq!((err.total, err.problems.len()), (350_000, manifest::MAX_PROBLEMS));
    let rendered = render_in(dir.path(), &err);
    assert!(rendered.ends_with("and 349900 more problems\n  help: only the first 100 problems are shown: fix them, then run `ozform validate` again\n"), "{}", &rendered[rendered.len() - 300..]);
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
