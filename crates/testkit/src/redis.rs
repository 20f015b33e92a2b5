//! Real Redis for tests: a `redis-server` on a free port in a temp dir (no persistence),
//! killed on drop; a real 3-master Redis Cluster built with `redis-cli --cluster
//! create`; and kill/restart by pid on the same port, for fail-open tests.
//!
//! ```no_run
//! use prefixcache_testkit::redis::{RedisServer, require_redis};
//!
//! if !require_redis("my_test") {
//!     return; // skipped loudly (fails under CI=true)
//! }
//! let mut server = RedisServer::start();
//! let url = server.url(); // redis://127.0.0.1:PORT
//! server.kill();          // SIGKILL, as an outage
//! server.restart();       // same port, empty
//! ```

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{skip_or_fail, which};

/// How long a server may take to accept connections, and a cluster to become ready.
/// Generous: tests must not fail because the machine is busy.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `redis-server` and `redis-cli` are on PATH; applies the skip policy (under
/// `CI=true` a missing server fails the test). `false` means the caller returns.
pub fn require_redis(test: &str) -> bool {
    let found = which("redis-server").is_some() && which("redis-cli").is_some();
    if !found {
        skip_or_fail(
            test,
            "redis-server / redis-cli",
            "Install them (`apt-get install redis-server`, or run `bash .ci/run`).",
        );
    }
    found
}

/// A `redis-server` child process. Killed (SIGKILL) and its temp dir removed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    tls_port: Option<u16>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// A standalone server with no persistence. Panics if it cannot be started.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Like [`RedisServer::start`], with extra `redis-server` arguments (e.g.
    /// `["--requirepass", "secret"]`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut last_err = None;
        // A free port can be taken between our probe and the server's bind: retry.
        for _ in 0..5 {
            let port = match free_port(false) {
                Ok(p) => p,
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            let dir = match tempfile::Builder::new()
                .prefix("prefixcache-redis-")
                .tempdir()
            {
                Ok(d) => d,
                Err(e) => panic!("creating a temp dir for redis-server: {e}"),
            };
            let mut server = RedisServer {
                child: None,
                port,
                tls_port: None,
                dir,
                extra: extra.clone(),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_err = Some(e),
            }
        }
        panic!("could not start redis-server: {last_err:?}");
    }

    /// A server that also serves TLS on [`RedisServer::tls_port`], with a certificate
    /// for `127.0.0.1` signed by a throwaway CA (made with the `openssl` CLI; the CA is
    /// `ca.crt` in [`RedisServer::dir`]). The plain port stays open for readiness checks.
    /// Panics if `openssl` or the server fails; see [`require_openssl`].
    pub fn start_tls() -> RedisServer {
        let mut last_err = None;
        for _ in 0..5 {
            let (port, tls_port) = match (free_port(false), free_port(false)) {
                (Ok(a), Ok(b)) if a != b => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    last_err = Some(e);
                    continue;
                }
                _ => continue,
            };
            let dir = match tempfile::Builder::new()
                .prefix("prefixcache-redis-tls-")
                .tempdir()
            {
                Ok(d) => d,
                Err(e) => panic!("creating a temp dir for redis-server: {e}"),
            };
            if let Err(e) = make_certs(dir.path()) {
                panic!("making TLS certificates with openssl: {e}");
            }
            let d = dir.path().display();
            let extra: Vec<String> = vec![
                "--tls-port".into(),
                tls_port.to_string(),
                "--tls-cert-file".into(),
                format!("{d}/server.crt"),
                "--tls-key-file".into(),
                format!("{d}/server.key"),
                "--tls-ca-cert-file".into(),
                format!("{d}/ca.crt"),
                "--tls-auth-clients".into(),
                "no".into(),
            ];
            let mut server = RedisServer {
                child: None,
                port,
                tls_port: Some(tls_port),
                dir,
                extra,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_err = Some(e),
            }
        }
        panic!("could not start redis-server with TLS: {last_err:?}");
    }

    /// The TLS port of a server from [`RedisServer::start_tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = std::fs::File::create(self.dir.path().join("redis.log"))?;
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = cmd.spawn()?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "redis-server exited ({status}) on port {}: {}",
                    self.port,
                    self.log_tail()
                )));
            }
            // Any reply (PONG, or NOAUTH when a password is set) means it is serving.
            if let Ok(reply) = command(self.port, &["PING"])
                && (reply.is_ok() || reply.text().contains("NOAUTH"))
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!(
                    "redis-server on port {} not ready after {READY_TIMEOUT:?}",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's working directory (its log is `redis.log` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server with SIGKILL (an outage, not a shutdown) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (empty: no persistence).
    /// Panics if the port was taken meanwhile or it does not come up.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                // The old socket may linger briefly; retry until the deadline.
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("restarting redis-server on port {}: {e}", self.port),
            }
        }
    }

    /// Runs one command against this server and returns its reply.
    pub fn command(&self, args: &[&str]) -> io::Result<Reply> {
        command(self.port, args)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the `openssl` CLI is on PATH (for [`RedisServer::start_tls`]); applies the
/// skip policy.
pub fn require_openssl(test: &str) -> bool {
    let found = which("openssl").is_some();
    if !found {
        skip_or_fail(test, "openssl", "Install it (`apt-get install openssl`).");
    }
    found
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
fn make_certs(dir: &Path) -> io::Result<()> {
    let run = |args: &[&str]| -> io::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    };
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )?;
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=prefixcache test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ])?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ])
}

/// A local Redis Cluster, each node a [`RedisServer`]: masters only, or masters with
/// replicas (for failover tests).
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` (at least 3) cluster-enabled servers on free ports, joins them
    /// with `redis-cli --cluster create`, and waits until every node reports
    /// `cluster_state:ok`. Panics with the tools' output if that fails.
    pub fn start(masters: usize) -> RedisCluster {
        RedisCluster::start_with_replicas(masters, 0)
    }

    /// Like [`RedisCluster::start`], with `replicas` replicas per master, and waits until
    /// every replica has finished its first sync.
    pub fn start_with_replicas(masters: usize, replicas: usize) -> RedisCluster {
        assert!(masters >= 3, "Redis Cluster needs at least 3 masters");
        let mut last_err = String::new();
        for _ in 0..3 {
            match RedisCluster::try_start(masters, replicas) {
                Ok(c) => return c,
                Err(e) => last_err = e,
            }
        }
        panic!("could not build a Redis Cluster: {last_err}");
    }

    fn try_start(masters: usize, replicas: usize) -> Result<RedisCluster, String> {
        let count = masters * (1 + replicas);
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            // The cluster bus listens on port + 10000, which must be free too.
            let port = free_port(true).map_err(|e| e.to_string())?;
            let dir = tempfile::Builder::new()
                .prefix("prefixcache-redis-cluster-")
                .tempdir()
                .map_err(|e| e.to_string())?;
            let mut node = RedisServer {
                child: None,
                port,
                tls_port: None,
                dir,
                extra: [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            };
            node.spawn().map_err(|e| e.to_string())?;
            nodes.push(node);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running redis-cli: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let cluster = RedisCluster { nodes };
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        loop {
            let ready = self.nodes.iter().all(|n| {
                n.command(&["CLUSTER", "INFO"]).is_ok_and(|r| {
                    let info = r.text();
                    info.contains("cluster_state:ok") && info.contains(&known)
                }) && n.command(&["ROLE"]).is_ok_and(|r| {
                    // A replica is ready once connected and synced.
                    let role = r.text();
                    !role.starts_with("slave") || role.contains("connected")
                })
            });
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("cluster not ready after {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...` (the proxy's cluster URL form).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The node that owns the slot of `key` now (the one that answers it without a
    /// redirect).
    pub fn owner_of(&self, key: &str) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.command(&["ROLE"])
                .is_ok_and(|r| r.text().starts_with("master"))
                && n.command(&["EXISTS", key]).is_ok_and(|r| r.is_ok())
        })
    }

    /// The replicas of master `master` (indices into [`RedisCluster::nodes`]).
    pub fn replicas_of(&self, master: usize) -> Vec<usize> {
        let Ok(id) = self.nodes[master].command(&["CLUSTER", "MYID"]) else {
            return Vec::new();
        };
        let id = id.text();
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| {
                *i != master
                    && n.command(&["CLUSTER", "NODES"]).is_ok_and(|r| {
                        r.text()
                            .lines()
                            .any(|l| l.contains("myself") && l.contains(&id))
                    })
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// A manual failover (`CLUSTER FAILOVER` on `replica`): waits until the replica is a
    /// master and every node agrees on the cluster's shape again. Panics if that does
    /// not happen within the ready timeout.
    pub fn fail_over_to(&self, replica: usize) {
        let reply = self.nodes[replica]
            .command(&["CLUSTER", "FAILOVER"])
            .unwrap_or_else(|e| panic!("CLUSTER FAILOVER: {e}"));
        assert!(reply.is_ok(), "CLUSTER FAILOVER: {reply:?}");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let promoted = self.nodes[replica]
                .command(&["ROLE"])
                .is_ok_and(|r| r.text().starts_with("master"));
            if promoted && self.wait_ready().is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "failover did not complete");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A RESP reply, enough for test assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// Not an error reply.
    pub fn is_ok(&self) -> bool {
        !matches!(self, Reply::Error(_))
    }

    /// The reply as text (bulk strings lossily, arrays joined by newlines).
    pub fn text(&self) -> String {
        match self {
            Reply::Status(s) | Reply::Error(s) => s.clone(),
            Reply::Integer(n) => n.to_string(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Bulk(None) | Reply::Array(None) => String::new(),
            Reply::Array(Some(items)) => {
                items.iter().map(Reply::text).collect::<Vec<_>>().join("\n")
            }
        }
    }
}

/// Sends one command to `127.0.0.1:port` on a fresh connection and reads the reply.
pub fn command(port: u16, args: &[&str]) -> io::Result<Reply> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    stream.write_all(&req)?;
    read_reply(&mut BufReader::new(stream))
}

fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(line.len().min(1));
    let int = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad RESP: {line}")))
    };
    Ok(match kind {
        "+" => Reply::Status(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Integer(int(rest)?),
        "$" => {
            let n = int(rest)?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0; n as usize + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                Reply::Bulk(Some(buf))
            }
        }
        "*" => {
            let n = int(rest)?;
            if n < 0 {
                Reply::Array(None)
            } else {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(read_reply(r)?);
                }
                Reply::Array(Some(items))
            }
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad RESP: {line}"),
            ));
        }
    })
}

/// A port free on 127.0.0.1 now (and, for cluster nodes, port + 10000 too).
fn free_port(with_bus: bool) -> io::Result<u16> {
    for _ in 0..50 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if !with_bus {
            return Ok(port);
        }
        if port <= 55535 && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10000)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other("no free port pair for a cluster node"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_serves_dies_and_comes_back_on_the_same_port() {
        if !require_redis("a_server_starts_serves_dies_and_comes_back_on_the_same_port") {
            return;
        }
        let mut server = RedisServer::start();
        let port = server.port();
        assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
        assert_eq!(
            server.command(&["SET", "k", "v"]).unwrap(),
            Reply::Status("OK".into())
        );
        assert_eq!(server.command(&["GET", "k"]).unwrap().text(), "v");
        assert!(server.pid().is_some());

        server.kill();
        assert!(server.pid().is_none());
        assert!(command(port, &["PING"]).is_err(), "refused while down");

        server.restart();
        assert_eq!(server.port(), port);
        assert_eq!(
            server.command(&["PING"]).unwrap(),
            Reply::Status("PONG".into())
        );
        assert_eq!(
            server.command(&["GET", "k"]).unwrap(),
            Reply::Bulk(None),
            "no persistence"
        );
    }

    #[test]
    fn extra_arguments_reach_the_server() {
        if !require_redis("extra_arguments_reach_the_server") {
            return;
        }
        let server = RedisServer::start_with(&["--requirepass", "s3cret"]);
        assert!(
            server
                .command(&["GET", "k"])
                .unwrap()
                .text()
                .contains("NOAUTH")
        );
    }

    #[test]
    fn a_three_master_cluster_covers_every_slot() {
        if !require_redis("a_three_master_cluster_covers_every_slot") {
            return;
        }
        let cluster = RedisCluster::start(3);
        assert_eq!(cluster.nodes().len(), 3);
        assert!(cluster.url().starts_with("redis+cluster://127.0.0.1:"));
        assert_eq!(cluster.url().matches(',').count(), 2);
        for node in cluster.nodes() {
            let info = node.command(&["CLUSTER", "INFO"]).unwrap().text();
            assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
            assert!(info.contains("cluster_known_nodes:3"), "{info}");
        }
        // A key lives on exactly one master; the others redirect.
        let replies: Vec<Reply> = cluster
            .nodes()
            .iter()
            .map(|n| n.command(&["SET", "some-key", "v"]).unwrap())
            .collect();
        assert_eq!(
            replies.iter().filter(|r| r.is_ok()).count(),
            1,
            "{replies:?}"
        );
        assert!(replies.iter().any(|r| r.text().starts_with("MOVED")));
    }
}
