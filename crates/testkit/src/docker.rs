//! The local Docker engine for container tests: whether it answers (the skip policy),
//! the images they run (the project's image from the binary under test, stand-ins for
//! public images from `deploy/docker/offline-images.sh`), and compose projects that are
//! taken down, volumes and all, when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{skip_or_fail, workspace_root};

/// The tag container tests give the image built from the binary under test.
pub const TEST_IMAGE: &str = "prefixcache:test";

/// Whether `docker` and `docker-compose` are there and the engine answers; applies the
/// skip policy (fails under `CI=true`) when they are not.
pub fn require_docker(test: &str) -> bool {
    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    let compose = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(engine && compose) {
        skip_or_fail(
            test,
            "a Docker engine that answers, with docker-compose",
            "Install Debian's docker.io and docker-compose and start the engine (`scripts/test` does both).",
        );
    }
    engine && compose
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Builds the stand-ins `names` (see `offline-images.sh`) that are not present yet.
pub fn ensure_base_images(names: &[&str]) {
    let script = workspace_root().join("deploy/docker/offline-images.sh");
    run(Command::new("bash").arg(script).args(names));
}

/// Builds [`TEST_IMAGE`] from `binary` with `deploy/docker/build-image.sh`, after the
/// runtime base it needs.
pub fn build_test_image(binary: &Path) {
    ensure_base_images(&["debian"]);
    let script = workspace_root().join("deploy/docker/build-image.sh");
    run(Command::new("bash")
        .arg(script)
        .arg("--binary")
        .arg(binary)
        .args(["--tag", TEST_IMAGE]));
}

/// A compose project of this test process, taken down (`down -v`) on drop, after
/// printing its services' last log lines if the test failed.
#[derive(Debug)]
pub struct Compose {
    file: PathBuf,
    project: String,
    env: Vec<(String, String)>,
    profiles: Vec<String>,
}

impl Compose {
    /// A project for `file` (relative to the workspace root) with `env` for the compose
    /// file's variables. Every port variable of the file should be set to "" in `env`,
    /// so the engine picks free host ports.
    pub fn new(file: &str, env: &[(&str, &str)], profiles: &[&str]) -> Compose {
        static N: AtomicU32 = AtomicU32::new(0);
        let project = format!(
            "pctest{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Compose {
            file: workspace_root().join(file),
            project,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            profiles: profiles.iter().map(|p| p.to_string()).collect(),
        }
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    /// `docker-compose ARGS` for this project.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("-f").arg(&self.file).args(["-p", &self.project]);
        for p in &self.profiles {
            cmd.args(["--profile", p]);
        }
        cmd.args(args).envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs `docker-compose ARGS`, panicking with its output if it fails.
    pub fn run(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&run(&mut self.command(args)).stdout).into_owned()
    }

    /// `docker-compose up -d`.
    pub fn up(&self) {
        self.run(&["up", "-d", "--no-build"]);
    }

    /// The `127.0.0.1:PORT` on which `service`'s `port` is published.
    pub fn addr(&self, service: &str, port: u16) -> String {
        let out = self.run(&["port", service, &port.to_string()]);
        let addr = out.trim();
        assert!(
            !addr.is_empty() && !addr.ends_with(":0"),
            "{service}:{port} is not published ({out:?})"
        );
        addr.to_string()
    }

    /// The container id of `service`'s first container.
    pub fn container(&self, service: &str) -> String {
        let out = self.run(&["ps", "-q", service]);
        let id = out.trim();
        assert!(!id.is_empty(), "{service} has no container");
        id.to_string()
    }

    /// The name of one of the project's networks (`default`, `store`, ...).
    pub fn network(&self, name: &str) -> String {
        format!("{}_{name}", self.project)
    }

    /// Prints the last `lines` log lines of every service on stderr.
    pub fn print_logs(&self, lines: u32) {
        if let Ok(out) = self
            .command(&["logs", "--no-color", "--tail", &lines.to_string()])
            .output()
        {
            eprintln!(
                "---- logs of compose project {} ----\n{}{}",
                self.project,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs(60);
        }
        let _ = self
            .command(&["down", "-v", "--remove-orphans", "-t", "5"])
            .output();
    }
}
