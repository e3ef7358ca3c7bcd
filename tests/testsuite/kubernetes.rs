//! The Kubernetes manifests of `contrib/kubernetes/` (issue #23): every overlay builds with
//! `kubectl kustomize` (Debian's `kubernetes-client`, or any kubectl with kustomize 4 or newer),
//! every resource it makes validates with `kubernetes-validate` (from `PyPI`) against the current
//! Kubernetes schema it ships, in strict mode; the `ServiceMonitor` (a CRD no schema covers)
//! is checked against the Service it selects; and what the issue asks of the workload holds in
//! what the overlays make: non-root, a read-only root filesystem, requests and limits, probes
//! on `/healthz` and `/readyz`, the admin password from a Secret, and a Role with exactly what
//! the token store recipe and its Lease lock need. A missing tool fails these tests.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::python_tools::python_tool;
use common::{Cli, root};
use serde_json::{Value, json};

const OVERLAYS: [&str; 3] = ["configmap", "git-sync", "cronjob"];

/// `kubectl kustomize` of an overlay, as YAML.
fn kustomize(overlay: &str) -> String {
    let dir = root().join("contrib/kubernetes/overlays").join(overlay);
    let out = Command::new("kubectl").arg("kustomize").arg(&dir).output().unwrap_or_else(|e| {
        panic!("cannot run `kubectl` ({e}): install Debian's `kubernetes-client` (`.ci/run` does when it is missing)")
    });
    assert!(
        out.status.success(),
        "kubectl kustomize {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// YAML documents as JSON values (with `PyYAML`, which `kubernetes-validate` brings).
fn documents(yaml: &str) -> Vec<Value> {
    use std::io::Write as _;
    let mut child = Command::new(python_tool("python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn of_kind<'v>(docs: &'v [Value], kind: &str) -> Vec<&'v Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn every_overlay_builds_and_every_resource_validates_against_the_current_kubernetes_schema() {
    let dir = tempfile::tempdir().unwrap();
    for overlay in OVERLAYS {
        let yaml = kustomize(overlay);
        let docs = documents(&yaml);
        let file = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &yaml).unwrap();
        let out =
            Command::new(python_tool("kubernetes-validate")).arg("--strict").arg(&file).output().unwrap();
        let said =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "kubernetes-validate --strict {overlay}:\n{said}");
        // Each resource of a built-in kind passed; only the ServiceMonitor has no schema.
        for doc in &docs {
            let kind = doc["kind"].as_str().unwrap();
            let name = doc["metadata"]["name"].as_str().unwrap();
            let passed = format!("passed for resource {}/{name}", kind.to_lowercase());
            if kind == "ServiceMonitor" {
                assert!(said.contains("Couldn't find schema for kind ServiceMonitor"), "{said}");
            } else {
                assert!(said.contains(&passed), "{overlay}: {kind}/{name} was not validated:\n{said}");
            }
        }
        assert!(!said.contains("ERROR"), "{said}");
        assert!(
            docs.iter().all(|d| d["metadata"]["namespace"] == "ozform" || d["kind"] == "Namespace"),
            "{overlay}: one namespace"
        );
    }
}

/// The pod spec of the overlay's workload (the Deployment's, or that of the jobs of the `CronJob`).
fn pod(docs: &[Value]) -> Value {
    if let Some(deployment) = of_kind(docs, "Deployment").first() {
        return deployment["spec"]["template"]["spec"].clone();
    }
    of_kind(docs, "CronJob")[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"].clone()
}

#[test]
fn the_workload_runs_non_root_read_only_bounded_probed_with_the_password_from_a_secret() {
    for overlay in OVERLAYS {
        let docs = documents(&kustomize(overlay));
        let pod = pod(&docs);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{overlay}");
        assert_eq!(pod["serviceAccountName"], "ozform", "{overlay}");
        for container in pod["containers"].as_array().unwrap() {
            let name = container["name"].as_str().unwrap();
            let security = &container["securityContext"];
            assert_eq!(security["readOnlyRootFilesystem"], true, "{overlay}/{name}");
            assert_eq!(security["allowPrivilegeEscalation"], false, "{overlay}/{name}");
            assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{overlay}/{name}");
            for bound in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        container["resources"][bound][resource].is_string(),
                        "{overlay}/{name}: {bound}.{resource}"
                    );
                }
            }
        }
        let ozform = &pod["containers"][0];
        let args: Vec<&str> =
            ozform["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(args[0], "reconcile", "{overlay}");
        assert_eq!(args.contains(&"--once"), overlay == "cronjob", "{overlay}: {args:?}");
        // The admin password is a file from the Secret `ozform-admin`, never a literal.
        let file = args
            .iter()
            .find_map(|a| a.strip_prefix("--admin-password-file="))
            .expect("the password from a file");
        let volume =
            pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "admin-password").unwrap();
        assert_eq!(volume["secret"]["secretName"], "ozform-admin");
        let mount = ozform["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "admin-password")
            .unwrap();
        assert!(Path::new(file).starts_with(mount["mountPath"].as_str().unwrap()));
        let env: Vec<&str> =
            ozform["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert!(!env.contains(&"OZ_ADMIN_PASSWORD"), "{overlay}: no password in the environment");
        if overlay == "cronjob" {
            continue;
        }
        assert_eq!(ozform["livenessProbe"]["httpGet"]["path"], "/healthz", "{overlay}");
        assert_eq!(ozform["readinessProbe"]["httpGet"]["path"], "/readyz", "{overlay}");
        assert!(
            args.contains(&"--metrics-listen=0.0.0.0:9090"),
            "{overlay}: the probes and the scraper reach it"
        );
        let manifests = args.last().unwrap();
        let mounted = ozform["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| manifests.starts_with(m["mountPath"].as_str().unwrap()));
        assert!(mounted, "{overlay}: the manifests {manifests} are on a volume");
    }
}

#[test]
fn the_role_allows_exactly_what_the_token_store_recipe_and_its_lease_lock_need() {
    for overlay in OVERLAYS {
        let docs = documents(&kustomize(overlay));
        let role = of_kind(&docs, "Role")[0];
        let rules: BTreeSet<(String, String, String)> = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rule| {
                let groups = rule["apiGroups"].as_array().unwrap().clone();
                let resources = rule["resources"].as_array().unwrap().clone();
                let verbs = rule["verbs"].as_array().unwrap().clone();
                groups.into_iter().flat_map(move |g| {
                    let verbs = verbs.clone();
                    resources.clone().into_iter().flat_map(move |r| {
                        let g = g.clone();
                        verbs.clone().into_iter().map(move |v| {
                            (
                                g.as_str().unwrap().to_string(),
                                r.as_str().unwrap().to_string(),
                                v.as_str().unwrap().to_string(),
                            )
                        })
                    })
                })
            })
            .collect();
        let mut expected = BTreeSet::new();
        for verb in ["get", "list", "create", "patch", "delete"] {
            expected.insert((String::new(), "secrets".to_string(), verb.to_string()));
        }
        for verb in ["get", "create", "update", "delete"] {
            expected.insert(("coordination.k8s.io".to_string(), "leases".to_string(), verb.to_string()));
        }
        assert_eq!(rules, expected, "{overlay}");
        let binding = of_kind(&docs, "RoleBinding")[0];
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "ozform", "namespace": "ozform"}])
        );
        assert!(of_kind(&docs, "ClusterRole").is_empty(), "nothing cluster-wide");
    }
    // What the recipe runs: `kubectl` on secrets (the Role's first rule), nothing else.
    let recipe = std::fs::read_to_string(root().join("contrib/token-stores/kubernetes")).unwrap();
    for verb in ["\"get\", \"secrets\"", "\"apply\", \"--server-side\"", "\"delete\", \"secret\""] {
        assert!(recipe.contains(verb), "the recipe no longer runs {verb}: update the Role");
    }
}

#[test]
fn the_service_monitor_scrapes_the_metrics_port_of_the_service_it_selects() {
    for overlay in ["configmap", "git-sync"] {
        let docs = documents(&kustomize(overlay));
        let service = of_kind(&docs, "Service")[0];
        let monitor = of_kind(&docs, "ServiceMonitor")[0];
        let labels = service["metadata"]["labels"].as_object().unwrap();
        for (key, value) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(labels.get(key), Some(value), "{overlay}: the monitor selects the Service by {key}");
        }
        let endpoint = &monitor["spec"]["endpoints"][0];
        assert_eq!(endpoint["path"], "/metrics");
        let port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == endpoint["port"])
            .unwrap();
        // The Service's selector picks the workload's pods, on the port the metrics listen on.
        let deployment = of_kind(&docs, "Deployment")[0];
        let pod_labels = deployment["spec"]["template"]["metadata"]["labels"].as_object().unwrap();
        for (key, value) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(pod_labels.get(key), Some(value), "{overlay}");
        }
        let container_port = &deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0];
        assert_eq!(port["targetPort"], container_port["name"]);
        assert_eq!(container_port["containerPort"], 9090);
    }
}

#[test]
fn the_overlays_example_manifests_are_valid() {
    let manifests = root().join("contrib/kubernetes/overlays/configmap/manifests");
    Cli::new().args([std::ffi::OsStr::new("validate"), manifests.as_os_str()]).run().code(0);
}
