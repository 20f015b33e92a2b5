//! Real processes for end-to-end tests: start the `prefixcache` binary (or anything that
//! prints `listening on http://ADDR`), learn its address, stop it with SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running server process, killed on drop if still alive.
#[derive(Debug)]
pub struct Service {
    child: Child,
    /// `http://127.0.0.1:PORT`, as the process printed it.
    pub url: String,
    /// The admin listener's `http://127.0.0.1:PORT`, when the process printed one
    /// (`prefixcache admin listening on http://ADDR/dashboard`, before its main line).
    pub admin_url: Option<String>,
    name: String,
}

impl Service {
    /// Starts `program args...` with `envs`, and waits (up to 120 s: first runs may
    /// load tokenizer tables in an unoptimised build) for a stdout line containing
    /// `listening on http://...`. Panics with what the process printed if it exits or
    /// never says so.
    pub fn start(program: &Path, args: &[&str], envs: &[(&str, &str)]) -> Service {
        Service::start_in(program, args, envs, None)
    }

    /// [`Service::start`] with the working directory `dir` (default: the test's).
    pub fn start_in(
        program: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        dir: Option<&Path>,
    ) -> Service {
        let name = format!("{} {}", program.display(), args.join(" "));
        let mut cmd = Command::new(program);
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let Some(stdout) = child.stdout.take() else {
            panic!("{name}: stdout was not captured");
        };
        let (tx, rx) = mpsc::channel();
        let (admin_tx, admin_rx) = mpsc::channel();
        // Reads stdout for the process's whole life so it never blocks on a full pipe;
        // ends when the process closes stdout.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[child stdout] {line}");
                if !sent && let Some(i) = line.find("admin listening on http://") {
                    let url = line[i + "admin listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .trim_end_matches("/dashboard")
                        .to_string();
                    let _ = admin_tx.send(url);
                } else if !sent && let Some(i) = line.find("listening on http://") {
                    let url = line[i + "listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send(url);
                    sent = true;
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => Service {
                child,
                url,
                // Printed before the main address, so it is in the channel by now.
                admin_url: admin_rx.try_recv().ok(),
                name,
            },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "{name} did not report its address (exit status: {status:?}); its stderr is above"
                );
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status (killing it after 60 s).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal_term();
        self.wait()
    }

    /// Sends SIGTERM without waiting (the process drains; see [`Service::wait`]).
    pub fn signal_term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits for the exit status (killing the process after 60 s).
    pub fn wait(&mut self) -> ExitStatus {
        for _ in 0..600 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("{} did not exit within 60 s", self.name);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
