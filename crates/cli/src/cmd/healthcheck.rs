//! `prefixcache healthcheck`: asks a running proxy's `/readyz` (or another path) and
//! exits 0 when it answers 2xx, so a container's `HEALTHCHECK` needs no shell or curl.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};

/// The most of the answer read: the status line is all that is needed.
const MAX_READ: usize = 8 * 1024;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The URL to ask (http:// only). Default: `/readyz` on the `listen` address of
    /// the configuration `serve` would load (file, `PREFIXCACHE_*` environment), with
    /// an unspecified address (0.0.0.0, [::]) asked on loopback.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Config file (TOML), as for `serve`.
    #[arg(long, env = "PREFIXCACHE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Time allowed to connect, and then to get the answer.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    prefixcache_core::config::parse_duration(s)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let url = match args.url {
        Some(url) => url,
        None => {
            let config = super::serve::load_config(args.config.as_deref(), Vec::new())?;
            format!("http://{}/readyz", loopback_for(config.listen))
        }
    };
    let (addr, host, path) = parse_url(&url)?;
    match status_of(addr, &host, &path, args.timeout) {
        Ok(status) if (200..300).contains(&status) => {
            eprintln!("{url}: {status}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(status) => {
            eprintln!("unhealthy: {url} answered {status}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("unhealthy: {url}: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The address to ask for a listener bound to `listen`: loopback in place of the
/// unspecified address, which accepts there too.
fn loopback_for(listen: SocketAddr) -> SocketAddr {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// `http://host:port/path` → the address, the `Host` header and the path.
fn parse_url(url: &str) -> anyhow::Result<(SocketAddr, String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("expected an http:// URL, got {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        bail!("expected http://host:port/path, got {url:?}");
    }
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:80")
    } else {
        authority.to_string()
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .ok_or_else(|| anyhow!("{authority} resolves to no address"))?;
    Ok((addr, authority.to_string(), path.to_string()))
}

/// Sends `GET path` and returns the status code of the answer.
fn status_of(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).context("connecting")?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: prefixcache-healthcheck\r\nConnection: close\r\n\r\n"
    )
    .context("sending the request")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < MAX_READ {
        let n = stream.read(&mut chunk).context("reading the answer")?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            anyhow!(
                "not an HTTP answer: {:?}",
                line.lines().next().unwrap_or("")
            )
        })?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_host_and_path() {
        let (addr, host, path) = parse_url("http://127.0.0.1:8080/readyz").unwrap();
        assert_eq!(addr.to_string(), "127.0.0.1:8080");
        assert_eq!(
            (host.as_str(), path.as_str()),
            ("127.0.0.1:8080", "/readyz")
        );
        let (addr, _, path) = parse_url("http://[::1]:9/").unwrap();
        assert_eq!((addr.to_string().as_str(), path.as_str()), ("[::1]:9", "/"));
        let (addr, _, path) = parse_url("http://127.0.0.1").unwrap();
        assert_eq!((addr.port(), path.as_str()), (80, "/"));
        assert!(parse_url("https://127.0.0.1/").is_err());
        assert!(parse_url("http://user:pw@127.0.0.1/").is_err());
    }

    #[test]
    fn unspecified_listen_addresses_are_asked_on_loopback() {
        let v4 = loopback_for("0.0.0.0:8080".parse().unwrap());
        assert_eq!(v4.to_string(), "127.0.0.1:8080");
        let v6 = loopback_for("[::]:8080".parse().unwrap());
        assert_eq!(v6.to_string(), "[::1]:8080");
        let fixed = loopback_for("10.1.2.3:81".parse().unwrap());
        assert_eq!(fixed.to_string(), "10.1.2.3:81");
    }
}
