//! deploy/: every Kubernetes manifest passes `kubernetes-validate --strict`, and the base keeps the
//! properties the server depends on (one writer per volume, gRPC probes on the gRPC port, a
//! termination grace longer than the server's shutdown grace plus the preStop pause, "restricted"
//! Pod Security), and the PostgreSQL overlay keeps those of stateless replicas (the store URL only
//! from a Secret, the shared keys mounted, readiness on the gRPC health check, a disruption budget,
//! no volume).
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::helpers::{skip_without, terminate};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every YAML file under deploy/, sorted.
fn yaml_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("deploy/ is readable") {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&deploy_dir(), &mut out);
    out.sort();
    out
}

fn is_kustomization_file(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n == "kustomization.yaml" || n == "kustomization.yml")
}

/// Every YAML file under deploy/ that is a Kubernetes object (complete, or a strategic-merge patch
/// that is itself a valid partial object): all but the kustomization files.
fn resource_files() -> Vec<PathBuf> {
    yaml_files()
        .into_iter()
        .filter(|p| !is_kustomization_file(p))
        .collect()
}

/// `program args...` runs and succeeds.
fn found(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The documents of a YAML file, as JSON (PyYAML's safe loader, which kubernetes-validate brings).
fn yaml_docs(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             with open(sys.argv[1]) as f:\n    \
                 print(json.dumps([d for d in yaml.safe_load_all(f) if d is not None]))",
        ])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "parsing {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML printed JSON")
}

fn only_doc(path: &str) -> Value {
    let mut docs = yaml_docs(&deploy_dir().join(path));
    assert_eq!(docs.len(), 1, "{path}: one object per file");
    docs.remove(0)
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} is a string in {v}"))
}

fn int_at(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{pointer} is an integer in {v}"))
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|l| l.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("no entry named {name:?} in {list}"))
}

/// Every kustomization under deploy/ that `kubectl apply -k` is meant for (components are not).
const KUSTOMIZATIONS: [&str; 4] = [
    "base",
    "overlays/example",
    "overlays/postgres",
    "examples/agent-server",
];

/// `kubectl kustomize deploy/<kustomization>`, written to a file in `dir`.
fn kustomize(kustomization: &str, dir: &Path) -> PathBuf {
    let file = dir.join(format!("{}.yaml", kustomization.replace('/', "-")));
    kustomize_into(&deploy_dir().join(kustomization), &file);
    file
}

/// `kubectl kustomize <root>`, written to `file`.
fn kustomize_into(root: &Path, file: &Path) {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(root)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(file, &out.stdout).unwrap();
}

/// `to` as a path relative to the folder `from` (kustomize refuses absolute paths).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let ups = from.components().count().saturating_sub(1);
    PathBuf::from("../".repeat(ups)).join(to.strip_prefix("/").unwrap())
}

fn kubernetes_validate(paths: &[PathBuf]) {
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(paths)
        .output()
        .expect("kubernetes-validate runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{report}");
    assert!(
        out.status.success(),
        "kubernetes-validate --strict failed:\n{report}"
    );
    for path in paths {
        assert!(
            report.contains(&format!("{} passed", path.display())),
            "{} was not reported as passed:\n{report}",
            path.display()
        );
    }
}

#[test]
fn manifests_pass_strict_schema_validation() {
    if skip_without(
        "kubernetes-validate",
        found("kubernetes-validate", &["--version"]),
    ) {
        return;
    }
    let files = resource_files();
    for expected in [
        "base/configmap.yaml",
        "base/service.yaml",
        "base/statefulset.yaml",
        "components/tls/configmap-tls.yaml",
        "components/tls/workload-tls.yaml",
        "overlays/example/namespace.yaml",
        "overlays/example/configmap-patch.yaml",
        "overlays/example/statefulset-patch.yaml",
        "overlays/postgres/deployment.yaml",
        "overlays/postgres/poddisruptionbudget.yaml",
        "examples/agent-server/deployment.yaml",
    ] {
        assert!(
            files.contains(&deploy_dir().join(expected)),
            "deploy/{expected} is missing"
        );
    }
    kubernetes_validate(&files);

    // What `kubectl apply -k` would send, when kubectl (with its built-in kustomize) is here.
    if !found("kubectl", &["version", "--client"]) {
        eprintln!("NOTE: kubectl not found: the rendered kustomizations were not validated");
        return;
    }
    // Every Kustomization (not Component) under deploy/ is rendered: no overlay is missed.
    for file in yaml_files().iter().filter(|p| is_kustomization_file(p)) {
        let kind = &yaml_docs(file)[0]["kind"];
        let dir = file.parent().unwrap().strip_prefix(deploy_dir()).unwrap();
        assert!(
            kind != "Kustomization" || KUSTOMIZATIONS.iter().any(|k| Path::new(k) == dir),
            "deploy/{} is not in KUSTOMIZATIONS",
            dir.display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let rendered: Vec<PathBuf> = KUSTOMIZATIONS
        .iter()
        .map(|k| kustomize(k, dir.path()))
        .collect();
    kubernetes_validate(&rendered);
}

#[test]
fn base_statefulset_keeps_the_servers_invariants() {
    if skip_without(
        "python3 with PyYAML",
        found("python3", &["-c", "import yaml"]),
    ) {
        return;
    }
    let config = only_doc("base/configmap.yaml");
    let sts = only_doc("base/statefulset.yaml");
    let service = only_doc("base/service.yaml");
    assert_eq!(config["kind"], "ConfigMap");
    assert_eq!(sts["kind"], "StatefulSet");
    let setting = |key: &str| str_at(&config, &format!("/data/{key}")).to_owned();

    // One pod per volume: sled is a single-writer embedded database.
    assert_eq!(int_at(&sts, "/spec/replicas"), 1, "replicas must stay 1");

    let pod = &sts["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(
        str_at(c, "/envFrom/0/configMapRef/name"),
        str_at(&config, "/metadata/name"),
        "the container reads its settings from the ConfigMap"
    );

    // Probes: native gRPC on the plaintext health-only port, as a number, which is where the server
    // serves health (so they keep working when the gRPC port serves TLS).
    let grpc_port = int_at(named(&c["ports"], "grpc"), "/containerPort");
    assert!(
        setting("REGISTRY_LISTEN").ends_with(&format!(":{grpc_port}")),
        "REGISTRY_LISTEN {} is not on the grpc port {grpc_port}",
        setting("REGISTRY_LISTEN")
    );
    let health_port = int_at(named(&c["ports"], "health"), "/containerPort");
    assert_ne!(health_port, grpc_port);
    assert!(
        setting("REGISTRY_HEALTH_LISTEN").ends_with(&format!(":{health_port}")),
        "REGISTRY_HEALTH_LISTEN {} is not on the health port {health_port}",
        setting("REGISTRY_HEALTH_LISTEN")
    );
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let p = &c[probe];
        assert!(p.is_object(), "{probe} is missing");
        for other in ["httpGet", "tcpSocket", "exec"] {
            assert!(
                p.get(other).is_none(),
                "{probe} must be a grpc probe, has {other}"
            );
        }
        assert!(
            p["grpc"]["port"].is_number(),
            "{probe}: grpc.port must be a number (named ports are not allowed), got {}",
            p["grpc"]["port"]
        );
        assert_eq!(int_at(p, "/grpc/port"), health_port, "{probe} port");
    }
    if let Some(service) = c["readinessProbe"]["grpc"].get("service") {
        assert_eq!(service, "", "readiness checks the overall health");
    }

    // Metrics: the container port the Service scrapes is where the server serves them.
    let metrics_port = int_at(named(&c["ports"], "metrics"), "/containerPort");
    assert!(setting("REGISTRY_METRICS_LISTEN").ends_with(&format!(":{metrics_port}")));
    for (name, port) in [("grpc", 50051), ("metrics", 9090)] {
        let sp = named(&service["spec"]["ports"], name);
        assert_eq!(int_at(sp, "/port"), port, "Service port {name}");
        assert_eq!(
            str_at(sp, "/targetPort"),
            name,
            "Service port {name} targets the named port"
        );
    }
    assert_eq!(
        service["spec"]["selector"], sts["spec"]["selector"]["matchLabels"],
        "the Service selects the StatefulSet's pods"
    );

    // Shutdown: SIGKILL must not come before the server's grace after the preStop pause.
    let grace = profile_registry::config::parse_duration(&setting("REGISTRY_SHUTDOWN_GRACE"))
        .expect("REGISTRY_SHUTDOWN_GRACE parses as the server parses it");
    let pause = int_at(c, "/lifecycle/preStop/sleep/seconds");
    let termination = int_at(pod, "/terminationGracePeriodSeconds");
    assert!(
        termination as f64 > grace.as_secs_f64() + pause as f64,
        "terminationGracePeriodSeconds {termination} must exceed shutdown grace {grace:?} + preStop {pause}s"
    );

    // Pod Security Standards "restricted".
    let psc = &pod["securityContext"];
    let csc = &c["securityContext"];
    let either = |key: &str| csc.get(key).or_else(|| psc.get(key)).cloned();
    assert_eq!(either("runAsNonRoot"), Some(Value::Bool(true)));
    assert_ne!(int_at(psc, "/runAsUser"), 0);
    assert_eq!(
        int_at(psc, "/runAsUser"),
        65532,
        "the distroless nonroot user"
    );
    assert_eq!(int_at(psc, "/runAsGroup"), 65532);
    assert_eq!(
        int_at(psc, "/fsGroup"),
        65532,
        "the volume is writable by the server"
    );
    assert_eq!(
        either("seccompProfile").as_ref().map(|s| &s["type"]),
        Some(&Value::from("RuntimeDefault"))
    );
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_ne!(csc["privileged"], true);
    assert!(
        csc["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.contains(&Value::from("ALL"))),
        "capabilities.drop must contain ALL"
    );
    assert!(csc["capabilities"].get("add").is_none());
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(pod[key], true, "{key}");
    }
    assert!(c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object());

    // The data dir lives on the claimed volume (the root filesystem is read-only): the claim is
    // mounted at the data dir's parent, and the server creates the data dir inside it.
    let data_dir = PathBuf::from(setting("REGISTRY_DATA_DIR"));
    let templates = sts["spec"]["volumeClaimTemplates"]
        .as_array()
        .expect("volumeClaimTemplates");
    assert_eq!(templates.len(), 1);
    let claim = str_at(&templates[0], "/metadata/name");
    let mount = named(&c["volumeMounts"], claim);
    assert_eq!(
        Path::new(str_at(mount, "/mountPath")),
        data_dir.parent().unwrap()
    );
    assert_ne!(mount["readOnly"], true);
    assert!(templates[0]["spec"]["resources"]["requests"]["storage"].is_string());

    // Secrets are referenced (never shipped), mounted read-only, and the settings point into them.
    assert_secret_file(
        &sts,
        &config,
        "REGISTRY_AUTH_TOKENS_FILE",
        "profile-registry-tokens",
        "tokens",
    );
    assert_secret_file(
        &sts,
        &config,
        "REGISTRY_SECRET_KEY_FILE",
        "profile-registry-keys",
        "keys",
    );
    for f in resource_files() {
        for doc in yaml_docs(&f) {
            assert_ne!(doc["kind"], "Secret", "{} ships a Secret", f.display());
        }
    }

    // Opt-in TLS: the component mounts the kubernetes.io/tls Secret and points the server at it.
    let mut tls_sts = only_doc("components/tls/workload-tls.yaml");
    let tls_config = only_doc("components/tls/configmap-tls.yaml");
    // The patch merges into the base container and volumes by name.
    let base_volumes = pod["volumes"].as_array().unwrap().clone();
    let tls_pod = &mut tls_sts["spec"]["template"]["spec"];
    tls_pod["volumes"]
        .as_array_mut()
        .unwrap()
        .extend(base_volumes);
    assert_eq!(str_at(tls_pod, "/containers/0/name"), str_at(c, "/name"));
    assert_secret_file(
        &tls_sts,
        &tls_config,
        "REGISTRY_TLS_CERT",
        "profile-registry-tls",
        "tls.crt",
    );
    assert_secret_file(
        &tls_sts,
        &tls_config,
        "REGISTRY_TLS_KEY",
        "profile-registry-tls",
        "tls.key",
    );
}

#[test]
fn postgres_overlay_runs_stateless_replicas_on_a_shared_store() {
    if skip_without(
        "python3 with PyYAML",
        found("python3", &["-c", "import yaml"]),
    ) {
        return;
    }
    let base_config = only_doc("base/configmap.yaml");
    let base_sts = only_doc("base/statefulset.yaml");
    let service = only_doc("base/service.yaml");
    let deploy = only_doc("overlays/postgres/deployment.yaml");
    let pdb = only_doc("overlays/postgres/poddisruptionbudget.yaml");
    assert_eq!(deploy["kind"], "Deployment");
    assert_eq!(pdb["kind"], "PodDisruptionBudget");

    // Replicated and stateless: three pods, no claim, no volume but the two Secrets.
    let replicas = int_at(&deploy, "/spec/replicas");
    assert_eq!(replicas, 3);
    let pod = &deploy["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert!(deploy["spec"].get("volumeClaimTemplates").is_none());
    for volume in pod["volumes"].as_array().expect("volumes") {
        assert!(
            volume["secret"].is_object(),
            "only Secret volumes, got {volume}"
        );
    }
    for mount in c["volumeMounts"].as_array().expect("volumeMounts") {
        named(&pod["volumes"], str_at(mount, "/name"));
    }

    // A rollout brings a pod up (Ready: the database reachable) before it takes an old one down.
    assert_eq!(str_at(&deploy, "/spec/strategy/type"), "RollingUpdate");
    assert_eq!(
        int_at(&deploy, "/spec/strategy/rollingUpdate/maxUnavailable"),
        0
    );
    assert_eq!(int_at(&deploy, "/spec/strategy/rollingUpdate/maxSurge"), 1);

    // The connection string (it holds a password) only ever comes from the Secret.
    let store = named(&c["env"], "REGISTRY_STORE");
    assert!(store.get("value").is_none(), "REGISTRY_STORE is a literal");
    assert_eq!(
        str_at(store, "/valueFrom/secretKeyRef/name"),
        "profile-registry-postgres"
    );
    assert_eq!(str_at(store, "/valueFrom/secretKeyRef/key"), "url");
    for f in resource_files() {
        for doc in yaml_docs(&f) {
            if doc["kind"] == "ConfigMap" {
                assert!(
                    doc["data"].get("REGISTRY_STORE").is_none(),
                    "{} sets REGISTRY_STORE in a ConfigMap",
                    f.display()
                );
            }
        }
    }

    // Every replica mounts the same keys (required with PostgreSQL) and tokens as the base does.
    assert_secret_file(
        &deploy,
        &base_config,
        "REGISTRY_SECRET_KEY_FILE",
        "profile-registry-keys",
        "keys",
    );
    assert_secret_file(
        &deploy,
        &base_config,
        "REGISTRY_AUTH_TOKENS_FILE",
        "profile-registry-tokens",
        "tokens",
    );

    // Readiness is the native gRPC health check on the health-only port: NOT_SERVING while the
    // database is down. Liveness must not be: a database outage would restart every replica at once.
    let grpc_port = int_at(named(&c["ports"], "grpc"), "/containerPort");
    assert_eq!(grpc_port, 50051);
    let health_port = int_at(named(&c["ports"], "health"), "/containerPort");
    assert!(
        str_at(&base_config, "/data/REGISTRY_HEALTH_LISTEN").ends_with(&format!(":{health_port}"))
    );
    let readiness = &c["readinessProbe"];
    assert!(
        readiness["grpc"]["port"].is_number(),
        "readinessProbe: grpc.port must be a number, got {readiness}"
    );
    assert_eq!(int_at(readiness, "/grpc/port"), health_port);
    if let Some(service) = readiness["grpc"].get("service") {
        assert_eq!(service, "", "readiness checks the overall health");
    }
    for probe in ["startupProbe", "livenessProbe"] {
        assert!(c[probe].get("grpc").is_none(), "{probe} must not be gRPC");
        assert_eq!(int_at(&c[probe], "/tcpSocket/port"), grpc_port, "{probe}");
    }

    // Otherwise the base's pod: security context, ports, settings, Secret volumes, preStop, grace.
    let base_pod = &base_sts["spec"]["template"]["spec"];
    for key in [
        "securityContext",
        "terminationGracePeriodSeconds",
        "automountServiceAccountToken",
        "enableServiceLinks",
        "volumes",
    ] {
        assert_eq!(pod[key], base_pod[key], "pod {key} differs from the base's");
    }
    let mut base_c = base_pod["containers"][0].clone();
    let mut same_c = c.clone();
    for probe in ["startupProbe", "livenessProbe"] {
        base_c.as_object_mut().unwrap().remove(probe);
        same_c.as_object_mut().unwrap().remove(probe);
    }
    same_c.as_object_mut().unwrap().remove("env");
    base_c["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["name"] != "data");
    assert_eq!(same_c, base_c, "the container differs from the base's");

    // The Service and the budget select these pods; the budget lets one go at a time.
    assert_selects(
        "the Deployment",
        &deploy["spec"]["selector"]["matchLabels"],
        &deploy,
    );
    assert_selects("the Service", &service["spec"]["selector"], &deploy);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"], deploy["spec"]["selector"]["matchLabels"],
        "the budget covers the Deployment's pods"
    );
    assert!(pdb["spec"]["selector"].get("matchExpressions").is_none());
    let allowed = match pdb["spec"].get("maxUnavailable") {
        Some(max) => max.as_i64().expect("maxUnavailable is a number"),
        None => replicas - int_at(&pdb, "/spec/minAvailable"),
    };
    assert_eq!(allowed, 1, "the budget allows one voluntary disruption");

    // Spread over nodes, so a node failure takes one replica.
    let spreads = pod["topologySpreadConstraints"]
        .as_array()
        .expect("topologySpreadConstraints");
    let by_node = spreads
        .iter()
        .find(|s| s["topologyKey"] == "kubernetes.io/hostname")
        .expect("a spread over kubernetes.io/hostname");
    assert_selects(
        "the spread",
        &by_node["labelSelector"]["matchLabels"],
        &deploy,
    );

    // What `kubectl apply -k` sends: the base's Service and settings, without the StatefulSet and
    // its claim, and without a data dir.
    if !found("kubectl", &["version", "--client"]) {
        eprintln!("NOTE: kubectl not found: the rendered postgres overlay was not checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let docs = yaml_docs(&kustomize("overlays/postgres", dir.path()));
    let mut kinds: Vec<&str> = docs.iter().map(|d| str_at(d, "/kind")).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]
    );
    let of_kind = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap();
    let config = of_kind("ConfigMap");
    assert!(config["data"].get("REGISTRY_DATA_DIR").is_none());
    let rendered = of_kind("Deployment");
    assert_eq!(int_at(rendered, "/spec/replicas"), 3);
    assert_secret_file(
        rendered,
        config,
        "REGISTRY_SECRET_KEY_FILE",
        "profile-registry-keys",
        "keys",
    );
    assert_selects(
        "the Service",
        &of_kind("Service")["spec"]["selector"],
        rendered,
    );
    assert_selects(
        "the budget",
        &of_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        rendered,
    );
}

/// `selector` (label pairs) is not empty and matches the pod template of `workload`.
fn assert_selects(what: &str, selector: &Value, workload: &Value) {
    let labels = &workload["spec"]["template"]["metadata"]["labels"];
    let pairs = selector
        .as_object()
        .unwrap_or_else(|| panic!("{what}: selector is not a map: {selector}"));
    assert!(!pairs.is_empty(), "{what}: empty selector");
    for (key, value) in pairs {
        assert_eq!(
            &labels[key], value,
            "{what} selects {key}={value}, the pods have {labels}"
        );
    }
}

/// `setting` (from `config`) names a file `key` of Secret `secret`, mounted read-only in `sts`.
fn assert_secret_file(sts: &Value, config: &Value, setting: &str, secret: &str, key: &str) {
    let pod = &sts["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["secret"]["secretName"] == secret))
        .unwrap_or_else(|| panic!("no volume of Secret {secret}"));
    if let Some(items) = volume["secret"]["items"].as_array() {
        assert!(
            items.iter().any(|i| i["key"] == key && i["path"] == key),
            "Secret {secret}: key {key} is not projected as {key}"
        );
    }
    let mount = named(
        &pod["containers"][0]["volumeMounts"],
        str_at(volume, "/name"),
    );
    assert_eq!(
        mount["readOnly"], true,
        "Secret {secret} is mounted read-only"
    );
    let expected = Path::new(str_at(mount, "/mountPath")).join(key);
    assert_eq!(
        Path::new(str_at(config, &format!("/data/{setting}"))),
        expected,
        "{setting}"
    );
}

#[test]
fn containerfile_builds_the_locked_binary_into_distroless_nonroot() {
    let text = std::fs::read_to_string(deploy_dir().join("Containerfile")).unwrap();
    for needle in [
        "cargo build --release --locked --bin profile-registry",
        "FROM gcr.io/distroless/cc-debian12:nonroot",
        "USER 65532:65532",
        "EXPOSE 50051 50052 9090",
        r#"ENTRYPOINT ["/profile-registry"]"#,
        r#"CMD ["serve"]"#,
    ] {
        assert!(
            text.contains(needle),
            "deploy/Containerfile lacks {needle:?}"
        );
    }
    // Every source the build needs is copied (build.rs compiles proto/ with protox).
    for path in ["Cargo.toml", "Cargo.lock", "build.rs", "proto", "src"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("COPY ") && l.contains(path)),
            "deploy/Containerfile does not COPY {path}"
        );
    }
}

#[test]
fn tls_component_secures_either_workload_and_keeps_the_grpc_probes() {
    if skip_without(
        "python3 with PyYAML",
        found("python3", &["-c", "import yaml"]),
    ) {
        return;
    }
    // Optional, like the rendering in manifests_pass_strict_schema_validation.
    if !found("kubectl", &["version", "--client"]) {
        eprintln!("NOTE: kubectl not found: the tls component was not rendered");
        return;
    }
    // The example (base + tls) as shipped, and the postgres overlay with the component added.
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let combined = root.join("postgres-tls");
    std::fs::create_dir(&combined).unwrap();
    let deploy = std::fs::canonicalize(deploy_dir()).unwrap();
    std::fs::write(
        combined.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\n\
             components:\n  - {}\n",
            relative(&combined, &deploy.join("overlays/postgres")).display(),
            relative(&combined, &deploy.join("components/tls")).display()
        ),
    )
    .unwrap();
    let postgres_tls = root.join("postgres-tls.yaml");
    kustomize_into(&combined, &postgres_tls);
    for (what, file, kind) in [
        (
            "example",
            kustomize("overlays/example", &root),
            "StatefulSet",
        ),
        ("postgres + tls", postgres_tls, "Deployment"),
    ] {
        let docs = yaml_docs(&file);
        let of_kind = |k: &str| {
            docs.iter()
                .find(|d| d["kind"] == k)
                .unwrap_or_else(|| panic!("{what}: no {k}"))
        };
        let (config, workload) = (of_kind("ConfigMap"), of_kind(kind));
        assert_secret_file(
            workload,
            config,
            "REGISTRY_TLS_CERT",
            "profile-registry-tls",
            "tls.crt",
        );
        assert_secret_file(
            workload,
            config,
            "REGISTRY_TLS_KEY",
            "profile-registry-tls",
            "tls.key",
        );
        // Readiness stays the gRPC health check, on the plaintext health-only port.
        let c = &workload["spec"]["template"]["spec"]["containers"][0];
        let health_port = int_at(named(&c["ports"], "health"), "/containerPort");
        assert_eq!(
            int_at(&c["readinessProbe"], "/grpc/port"),
            health_port,
            "{what}"
        );
        assert!(
            str_at(config, "/data/REGISTRY_HEALTH_LISTEN").ends_with(&format!(":{health_port}")),
            "{what}"
        );
    }
}

/// The README's `docker run` line: its port, volume and data dir agree with the image, and the
/// server arguments after the image name serve as printed (the binary run here as the image runs
/// it, with the image's REGISTRY_DATA_DIR pointed at a temp dir).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_docker_run_line_serves_as_printed() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("docker run "))
        .expect("README shows a docker run line");
    let words: Vec<&str> = line.split_whitespace().skip(2).collect();
    let (mut ports, mut volumes): (Vec<&&str>, Vec<&&str>) = (Vec::new(), Vec::new());
    let mut rest = words.iter();
    let image = loop {
        match rest.next().copied() {
            Some("--rm") => {}
            Some("-p") => ports.extend(rest.next()),
            Some("-v") => volumes.extend(rest.next()),
            Some(word) => break word,
            None => panic!("no image in {line}"),
        }
    };
    let args: Vec<&str> = rest.copied().collect();
    assert!(image.starts_with("profile-registry:"), "{line}");
    assert_eq!(
        ports,
        [&"127.0.0.1:50051:50051"],
        "published on this machine only"
    );
    assert_eq!(
        volumes,
        [&"profile-registry-data:/var/lib/profile-registry"],
        "{line}"
    );
    let containerfile = std::fs::read_to_string(deploy_dir().join("Containerfile")).unwrap();
    assert!(containerfile.contains("ENV REGISTRY_DATA_DIR=/var/lib/profile-registry/data"));
    assert!(containerfile.contains("--chown=65532:65532 /out/state /var/lib/profile-registry"));
    assert_eq!(
        args.windows(2).find(|w| w[0] == "--listen").map(|w| w[1]),
        Some("0.0.0.0:50051"),
        "inside a container the server listens on all interfaces: {line}"
    );

    if std::net::TcpListener::bind("0.0.0.0:50051").is_err() {
        eprintln!("SKIPPED the run of the docker line's arguments: port 50051 is in use here");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(crate::helpers::binary())
        .args(&args)
        .env("REGISTRY_DATA_DIR", data.path().join("data"))
        .env_remove("REGISTRY_AUTH_TOKENS_FILE")
        .env_remove("REGISTRY_LISTEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let serving = loop {
        if let Ok(channel) = tonic::transport::Channel::from_static("http://127.0.0.1:50051")
            .connect()
            .await
        {
            let reply = tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await;
            if let Ok(r) = reply {
                break r.into_inner().status;
            }
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the docker line's server did not answer within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(serving, 1, "health SERVING");
    assert!(
        data.path().join("data").join("db").exists(),
        "the image's data dir is used"
    );
    let code = tokio::task::spawn_blocking(move || terminate(&mut child))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "exit 0 on SIGTERM");
}

/// The agent-server example: a first `sync --once`, then `sync` as a native sidecar, writing into an
/// emptyDir that the agent-server mounts at its SDK profiles folder ($OH_PERSISTENCE_DIR/profiles);
/// the token only from a Secret; keys masked unless changed on purpose.
#[test]
fn agent_server_example_syncs_into_the_sdk_profiles_folder() {
    if skip_without(
        "python3 with PyYAML",
        found("python3", &["-c", "import yaml"]),
    ) {
        return;
    }
    let docs = yaml_docs(&deploy_dir().join("examples/agent-server/deployment.yaml"));
    let of_kind = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap();
    let (deployment, config) = (of_kind("Deployment"), of_kind("ConfigMap"));
    let pod = &deployment["spec"]["template"]["spec"];
    let setting = |key: &str| str_at(config, &format!("/data/{key}")).to_owned();
    let mount_of = |container: &Value, volume: &str| {
        container["volumeMounts"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == volume))
            .map(|m| str_at(m, "/mountPath").to_owned())
    };

    let agent = named(&pod["containers"], "agent-server");
    let persistence = str_at(named(&agent["env"], "OH_PERSISTENCE_DIR"), "/value");
    let profiles = format!("{persistence}/profiles");
    assert_eq!(
        mount_of(agent, "profiles").as_deref(),
        Some(profiles.as_str())
    );
    assert!(named(&pod["volumes"], "profiles")["emptyDir"].is_object());
    assert_eq!(setting("REGISTRY_SYNC_DIR"), profiles);
    assert_eq!(setting("REGISTRY_SYNC_SECRETS"), "redacted");

    let init = pod["initContainers"].as_array().expect("initContainers");
    let args: Vec<&Value> = init.iter().map(|c| &c["args"]).collect();
    assert_eq!(args[0], &serde_json::json!(["sync", "--once"]));
    assert_eq!(args[1], &serde_json::json!(["sync"]));
    assert!(
        init[0].get("restartPolicy").is_none(),
        "the first sync runs to completion"
    );
    assert_eq!(
        init[1]["restartPolicy"], "Always",
        "the sidecar keeps running"
    );
    for c in init {
        assert_eq!(mount_of(c, "profiles").as_deref(), Some(profiles.as_str()));
        assert_eq!(
            str_at(c, "/envFrom/0/configMapRef/name"),
            str_at(config, "/metadata/name")
        );
        let token = named(&c["env"], "REGISTRY_TOKEN");
        assert!(
            token["valueFrom"]["secretKeyRef"].is_object(),
            "the token only from a Secret"
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    }
    // One user for both sides: the sync writes mode 0600 files the agent-server must read.
    assert!(pod["securityContext"]["runAsUser"].is_i64());
}
