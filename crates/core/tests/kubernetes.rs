//! The Kubernetes manifests in `deploy/kubernetes/`: each validated offline against the
//! Kubernetes API schemas (`kubernetes-validate --strict`, oldest and newest supported
//! version), and checked against each other and the proxy: selectors match the pod's
//! labels, the probes ask `/readyz` and `/healthz`, the pod runs as the image's user on
//! a read-only root, the grace period outlasts `shutdown_delay` + `drain_timeout`, and
//! the ConfigMap is a configuration the proxy accepts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use prefixcache_core::config::{Config, Layers, parse_duration};
use prefixcache_testkit::{require_python, workspace_root};
use serde_json::Value;

/// Kubernetes versions the manifests must validate against: the oldest we claim and the
/// newest the schema package knows.
const VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];

fn dir() -> PathBuf {
    workspace_root().join("deploy/kubernetes")
}

/// Every YAML file of the directory, parsed by PyYAML into JSON: file name -> documents.
fn manifests(python: &std::path::Path) -> BTreeMap<String, Vec<Value>> {
    const SCRIPT: &str = r#"
import json, pathlib, sys, yaml
out = {}
for p in sorted(pathlib.Path(sys.argv[1]).glob("*.yaml")):
    out[p.name] = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
print(json.dumps(out))
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn one<'a>(all: &'a BTreeMap<String, Vec<Value>>, file: &str) -> &'a Value {
    let docs = all
        .get(file)
        .unwrap_or_else(|| panic!("deploy/kubernetes/{file} is missing"));
    assert_eq!(docs.len(), 1, "{file} holds one resource");
    &docs[0]
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let Some(python) = require_python(
        "manifests_validate_against_the_kubernetes_schemas",
        &["kubernetes_validate", "yaml"],
    ) else {
        return;
    };
    let all = manifests(&python);
    let kustomization = one(&all, "kustomization.yaml");
    let mut files: Vec<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    // Applied by hand (documented in their headers), validated all the same.
    files.push("secret.example.yaml".into());
    for name in all.keys() {
        assert!(
            files.contains(name) || name == "kustomization.yaml" || name == "servicemonitor.yaml",
            "{name} is neither in the kustomization nor documented as applied by hand"
        );
    }
    for version in VERSIONS {
        let out = Command::new(&python)
            .args(["-m", "kubernetes_validate", "--strict", "-k", version])
            .args(files.iter().map(|f| dir().join(f)))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && !text.contains("WARN") && !text.contains("ERROR"),
            "kubernetes-validate {version}:\n{text}"
        );
        assert_eq!(
            text.matches(" passed for resource ").count(),
            files.len(),
            "every file validated against {version}:\n{text}"
        );
    }
}

#[test]
fn manifests_agree_with_each_other_and_with_the_proxy() {
    let Some(python) = require_python(
        "manifests_agree_with_each_other_and_with_the_proxy",
        &["yaml"],
    ) else {
        return;
    };
    let all = manifests(&python);
    let deployment = one(&all, "deployment.yaml");
    let pod = &deployment["spec"]["template"];
    let labels = pod["metadata"]["labels"].as_object().unwrap();
    let selects_pods = |selector: &Value, what: &str| {
        let wanted = selector["matchLabels"].as_object().unwrap();
        assert!(!wanted.is_empty(), "{what} selects something");
        for (k, v) in wanted {
            assert_eq!(labels.get(k), Some(v), "{what} selects the pods by {k}");
        }
    };
    selects_pods(&deployment["spec"]["selector"], "the Deployment");
    selects_pods(
        &one(&all, "poddisruptionbudget.yaml")["spec"]["selector"],
        "the PodDisruptionBudget",
    );
    let service = one(&all, "service.yaml");
    selects_pods(
        &serde_json::json!({"matchLabels": service["spec"]["selector"]}),
        "the Service",
    );
    let monitor = one(&all, "servicemonitor.yaml");
    assert_eq!(monitor["kind"], "ServiceMonitor");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the Service"
        );
    }
    let port_names: Vec<&str> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(port_names.contains(&monitor["spec"]["endpoints"][0]["port"].as_str().unwrap()));
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let hpa = one(&all, "horizontalpodautoscaler.yaml");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );

    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    // The image's user (deploy/docker/Dockerfile: USER 10001:10001) on a read-only root.
    let dockerfile =
        std::fs::read_to_string(workspace_root().join("deploy/docker/Dockerfile")).unwrap();
    assert!(dockerfile.contains("USER 10001:10001"));
    let pod_security = &pod["spec"]["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true);
    assert_eq!(pod_security["runAsUser"], 10001);
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());

    // The ConfigMap's variables and file, with the Secret's, make a valid configuration.
    let configmap = one(&all, "configmap.yaml");
    let data = configmap["data"].as_object().unwrap();
    let mut env: Vec<(String, String)> = data
        .iter()
        .filter(|(k, _)| k.starts_with("PREFIXCACHE_"))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let secret = one(&all, "secret.example.yaml");
    for var in container["env"].as_array().unwrap() {
        let key_ref = &var["valueFrom"]["secretKeyRef"];
        assert_eq!(key_ref["name"], secret["metadata"]["name"]);
        let key = key_ref["key"].as_str().unwrap();
        let value = secret["stringData"][key]
            .as_str()
            .unwrap_or_else(|| panic!("the Secret example has no {key}"));
        env.push((var["name"].as_str().unwrap().to_string(), value.to_string()));
    }
    let config = Config::load(Layers {
        file: Some(data["prefixcache.toml"].as_str().unwrap().to_string()),
        env,
        flags: vec![],
    })
    .unwrap_or_else(|e| panic!("the ConfigMap is not a valid configuration: {e}"));
    assert!(
        config.ignored_env.is_empty(),
        "variables that set no config key: {:?}",
        config.ignored_env
    );
    let grace = Duration::from_secs(
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap(),
    );
    assert!(
        grace > config.shutdown_delay + config.drain_timeout,
        "terminationGracePeriodSeconds ({grace:?}) must outlast shutdown_delay ({:?}) + drain_timeout ({:?})",
        config.shutdown_delay,
        config.drain_timeout
    );
    // The readiness probe notices the shutdown within the delay.
    let readiness = &container["readinessProbe"];
    let noticed = Duration::from_secs(
        readiness["periodSeconds"].as_u64().unwrap()
            * readiness["failureThreshold"].as_u64().unwrap(),
    );
    assert!(
        noticed < config.shutdown_delay,
        "{noticed:?} vs {:?}",
        config.shutdown_delay
    );
    assert_eq!(
        parse_duration(data["PREFIXCACHE_SHUTDOWN_DELAY"].as_str().unwrap()).unwrap(),
        config.shutdown_delay
    );
}
