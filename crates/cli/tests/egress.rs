//! The way out to the upstream as corporate networks have it, end to end through the
//! real `prefixcache serve`: an HTTPS upstream whose certificate a throwaway private CA
//! signed (refused with a clear 502 without `upstream_ca_file`, served with it, HTTP/2
//! negotiated), a CONNECT proxy in between (Debian's `tinyproxy`) taken from
//! `HTTPS_PROXY` or `upstream_proxy` and skipped for hosts in `NO_PROXY`, and an
//! upstream that requires a client certificate (mTLS).
//!
//! The HTTPS upstream is a TLS terminator written here (rustls) in front of the mock
//! upstream; it records what each handshake negotiated. Certificates are made with the
//! `openssl` command line.

// Test helpers outside #[test] fns are not covered by clippy's test exemption.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prefixcache_testkit::process::Service;
use prefixcache_testkit::{skip_or_fail, which};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_prefixcache");

fn require(test: &str, programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| which(p).is_none())
        .collect();
    if !missing.is_empty() {
        skip_or_fail(
            test,
            &missing.join(", "),
            "Install Debian's openssl and tinyproxy (`scripts/test` does).",
        );
    }
    missing.is_empty()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA (`ca.pem`), a server certificate for `localhost` and 127.0.0.1
/// (`server.pem`, `server.key`) and a client certificate (`client.pem`, `client.key`),
/// all signed by the CA.
fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=prefixcache test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        ),
        (
            "client",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        ),
    ] {
        let subject = format!("/CN={name}");
        let (key, csr, pem, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let mut req = vec!["req", "-subj", &subject];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(dir, &req);
        std::fs::write(dir.join(&extfile), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                &extfile,
                "-out",
                &pem,
            ],
        );
    }
}

/// What one TLS handshake at the upstream negotiated.
#[derive(Debug, Clone)]
struct Handshake {
    alpn: Option<String>,
    client_certificate: bool,
}

/// An HTTPS upstream: TLS (the server certificate; a client certificate required when
/// `require_client_cert`) in front of `backend`, recording every handshake.
struct TlsUpstream {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    /// The accept loop, which owns the connections' tasks; aborted on drop.
    _task: tokio::task::JoinSet<()>,
}

impl TlsUpstream {
    async fn start(pki: &Path, backend: SocketAddr, require_client_cert: bool) -> TlsUpstream {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(pki.join("server.pem"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(pki.join("server.key")).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(pki.join("ca.pem")).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(certs, key).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let seen = handshakes.clone();
        let mut task = tokio::task::JoinSet::new();
        task.spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    break;
                };
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                connections.spawn(async move {
                    // A refused handshake (unknown CA, no client certificate) just ends.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (_, session) = tls.get_ref();
                    seen.lock().unwrap().push(Handshake {
                        alpn: session
                            .alpn_protocol()
                            .map(|p| String::from_utf8_lossy(p).into_owned()),
                        client_certificate: session
                            .peer_certificates()
                            .is_some_and(|c| !c.is_empty()),
                    });
                    // The mock speaks HTTP/1.1 and HTTP/2 with prior knowledge alike.
                    let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsUpstream {
            addr,
            handshakes,
            _task: task,
        }
    }

    /// `https://localhost:PORT`: the name the server certificate is for.
    fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

/// Debian's tinyproxy on a free loopback port, logging every connection.
struct Tinyproxy {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Tinyproxy {
    fn start(dir: &Path) -> Tinyproxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("tinyproxy.log");
        let conf = dir.join("tinyproxy.conf");
        // No ConnectPort line: CONNECT is allowed to any port.
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\nAllow 127.0.0.1\n\
                 LogFile \"{}\"\nLogLevel Connect\n",
                log.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        for _ in 0..600 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Tinyproxy { child, port, log };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("tinyproxy did not listen on {port} within 30 s");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many CONNECT requests tinyproxy has logged.
    fn connects(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("CONNECT "))
            .count()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mock() -> Service {
    Service::start(
        BIN.as_ref(),
        &["mock-upstream", "--listen", "127.0.0.1:0"],
        &[],
    )
}

fn serve(upstream: &str, env: &[(&str, &str)]) -> Service {
    let mut all = vec![
        ("PREFIXCACHE_CONFIG", "/dev/null"),
        ("RUST_LOG", "warn"),
        ("PREFIXCACHE_STORE_KIND", "memory"),
    ];
    all.extend_from_slice(env);
    Service::start(
        BIN.as_ref(),
        &["serve", "--listen", "127.0.0.1:0", "--upstream", upstream],
        &all,
    )
}

fn mock_addr(mock: &Service) -> SocketAddr {
    mock.url.trim_start_matches("http://").parse().unwrap()
}

/// A chat completion through the proxy; `no-store` so each one goes upstream.
async fn ask(proxy: &Service) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", proxy.url))
        .header("authorization", "Bearer sk-egress")
        .header("cache-control", "no-store")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_refused_without_the_ca_file_and_trusted_with_it() {
    if !require(
        "a_private_ca_is_refused_without_the_ca_file_and_trusted_with_it",
        &["openssl"],
    ) {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let mock = mock();
    let upstream = TlsUpstream::start(pki.path(), mock_addr(&mock), false).await;

    let untrusting = serve(&upstream.url(), &[]);
    let (status, body) = ask(&untrusting).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("certificate") && message.contains("upstream_ca_file"),
        "the 502 says why and what fixes it: {message}"
    );

    let ca = pki.path().join("ca.pem");
    let trusting = serve(
        &upstream.url(),
        &[("PREFIXCACHE_UPSTREAM_CA_FILE", ca.to_str().unwrap())],
    );
    let (status, body) = ask(&trusting).await;
    assert_eq!(status, 200, "{body}");
    let last = upstream.handshakes().last().cloned().unwrap();
    assert_eq!(
        last.alpn.as_deref(),
        Some("h2"),
        "HTTP/2 is still negotiated"
    );

    // A file that is not a CA bundle stops the proxy at start-up, not at a request.
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.url(),
        ])
        .env("PREFIXCACHE_CONFIG", "/dev/null")
        .env("PREFIXCACHE_STORE_KIND", "memory")
        .env(
            "PREFIXCACHE_UPSTREAM_CA_FILE",
            pki.path().join("missing.pem"),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("upstream_ca_file") && stderr.contains("missing.pem"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_is_reached_through_a_connect_proxy_unless_no_proxy_names_it() {
    const TEST: &str = "the_upstream_is_reached_through_a_connect_proxy_unless_no_proxy_names_it";
    if !require(TEST, &["openssl", "tinyproxy"]) {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let ca = pki.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let mock = mock();
    let upstream = TlsUpstream::start(pki.path(), mock_addr(&mock), false).await;
    let tinyproxy = Tinyproxy::start(pki.path());
    let through = |before: usize| tinyproxy.connects() > before;

    // HTTPS_PROXY from the environment, as curl reads it.
    let before = tinyproxy.connects();
    let proxied = serve(
        &upstream.url(),
        &[
            ("PREFIXCACHE_UPSTREAM_CA_FILE", ca),
            ("HTTPS_PROXY", &tinyproxy.url()),
        ],
    );
    assert_eq!(ask(&proxied).await.0, 200);
    assert!(through(before), "the call went through tinyproxy");

    // NO_PROXY names the upstream host: straight there.
    let before = tinyproxy.connects();
    let direct = serve(
        &upstream.url(),
        &[
            ("PREFIXCACHE_UPSTREAM_CA_FILE", ca),
            ("HTTPS_PROXY", &tinyproxy.url()),
            ("NO_PROXY", "localhost"),
        ],
    );
    assert_eq!(ask(&direct).await.0, 200);
    assert!(!through(before), "NO_PROXY=localhost bypasses the proxy");

    // The config key, without any environment variable; and NO_PROXY still honoured.
    let before = tinyproxy.connects();
    let configured = serve(
        &upstream.url(),
        &[
            ("PREFIXCACHE_UPSTREAM_CA_FILE", ca),
            ("PREFIXCACHE_UPSTREAM_PROXY", &tinyproxy.url()),
        ],
    );
    assert_eq!(ask(&configured).await.0, 200);
    assert!(
        through(before),
        "upstream_proxy sends the call through tinyproxy"
    );
    let before = tinyproxy.connects();
    let excepted = serve(
        &upstream.url(),
        &[
            ("PREFIXCACHE_UPSTREAM_CA_FILE", ca),
            ("PREFIXCACHE_UPSTREAM_PROXY", &tinyproxy.url()),
            ("NO_PROXY", "localhost"),
        ],
    );
    assert_eq!(ask(&excepted).await.0, 200);
    assert!(!through(before), "NO_PROXY applies to upstream_proxy too");

    // upstream_proxy = "none" ignores HTTPS_PROXY.
    let before = tinyproxy.connects();
    let off = serve(
        &upstream.url(),
        &[
            ("PREFIXCACHE_UPSTREAM_CA_FILE", ca),
            ("PREFIXCACHE_UPSTREAM_PROXY", "none"),
            ("HTTPS_PROXY", &tinyproxy.url()),
        ],
    );
    assert_eq!(ask(&off).await.0, 200);
    assert!(!through(before), "upstream_proxy = none connects directly");
    assert!(
        upstream
            .handshakes()
            .iter()
            .all(|h| h.alpn.as_deref() == Some("h2")),
        "HTTP/2 through the tunnel too: {:?}",
        upstream.handshakes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_upstream_gets_the_client_certificate() {
    if !require("an_mtls_upstream_gets_the_client_certificate", &["openssl"]) {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let ca = pki.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let mock = mock();
    let upstream = TlsUpstream::start(pki.path(), mock_addr(&mock), true).await;

    let anonymous = serve(&upstream.url(), &[("PREFIXCACHE_UPSTREAM_CA_FILE", ca)]);
    let (status, body) = ask(&anonymous).await;
    assert_eq!(status, 502, "no client certificate, no answer: {body}");

    let (cert, key) = (pki.path().join("client.pem"), pki.path().join("client.key"));
    let identified = serve(
        &upstream.url(),
        &[
            ("PREFIXCACHE_UPSTREAM_CA_FILE", ca),
            ("PREFIXCACHE_UPSTREAM_CLIENT_CERT", cert.to_str().unwrap()),
            ("PREFIXCACHE_UPSTREAM_CLIENT_KEY", key.to_str().unwrap()),
        ],
    );
    let (status, body) = ask(&identified).await;
    assert_eq!(status, 200, "{body}");
    let last = upstream.handshakes().last().cloned().unwrap();
    assert!(last.client_certificate, "{last:?}");
    assert_eq!(last.alpn.as_deref(), Some("h2"));
}
