//! `floe-s3-server [--host H] [--port P] [--access-key K --secret-key S] ROOT`:
//! an S3-compatible server over the directory ROOT (each bucket a folder),
//! for floe's tests and benchmarks on loopback.
//!
//! The store is s3s-fs's. The accept loop is this file's, and exists for one
//! reason: the `s3s-fs` binary leaves Nagle's algorithm on, so a response
//! written as headers and then body waits for the client's delayed ACK;
//! every such GET took ~40 ms on loopback and made S3 look 7x slower than
//! local files in `scripts/bench-lake-s3.sh`. Real object stores (S3, MinIO)
//! answer with TCP_NODELAY set, as this one does.

use std::path::PathBuf;
use std::process::ExitCode;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use s3s_fs::FileSystem;

const USAGE: &str =
    "usage: floe-s3-server [--host HOST] [--port PORT] [--access-key KEY --secret-key SECRET] ROOT";

#[derive(Debug)]
struct Options {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    root: PathBuf,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let (mut host, mut port) = ("127.0.0.1".to_string(), 8014u16);
    let (mut access, mut secret, mut root) = (None, None, None);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--host" => host = value("--host")?,
            "--port" => {
                let v = value("--port")?;
                port = v.parse().map_err(|_| format!("--port {v:?} is not a port"))?;
            }
            "--access-key" => access = Some(value("--access-key")?),
            "--secret-key" => secret = Some(value("--secret-key")?),
            "-h" | "--help" => return Err(USAGE.into()),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ if root.is_some() => return Err(format!("a second ROOT {arg:?}")),
            _ => root = Some(PathBuf::from(arg)),
        }
    }
    let credentials = match (access, secret) {
        (Some(a), Some(s)) => Some((a, s)),
        (None, None) => None,
        _ => return Err("--access-key and --secret-key go together".into()),
    };
    let root = root.ok_or("ROOT (the directory of the buckets) is missing")?;
    Ok(Options {
        host,
        port,
        credentials,
        root,
    })
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("floe-s3-server: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("floe-s3-server: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("floe-s3-server: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(options: Options) -> Result<(), String> {
    let store = FileSystem::new(&options.root)
        .map_err(|e| format!("opening {}: {e:?}", options.root.display()))?;
    let mut service = S3ServiceBuilder::new(store);
    if let Some((access, secret)) = options.credentials {
        service.set_auth(SimpleAuth::from_single(access, secret));
    }
    let service = service.build();
    let listener = tokio::net::TcpListener::bind((options.host.as_str(), options.port))
        .await
        .map_err(|e| format!("binding {}:{}: {e}", options.host, options.port))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("reading the bound address: {e}"))?;
    // Readiness is a TCP connect (floe's harness); the line is for people.
    println!("server is running at http://{address}");
    let connections = Builder::new(TokioExecutor::new());
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                // A connection that failed before it was accepted (reset,
                // out of descriptors for a moment): the next one may not.
                Err(e) => {
                    eprintln!("floe-s3-server: accepting a connection: {e}");
                    continue;
                }
            },
            _ = interrupted.as_mut() => return Ok(()),
        };
        if let Err(e) = socket.set_nodelay(true) {
            eprintln!("floe-s3-server: setting TCP_NODELAY: {e}");
        }
        let connection = connections
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            // A client that goes away mid-request ends its connection only.
            let _ = connection.await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> impl Iterator<Item = String> {
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn the_options_floe_passes_parse() {
        let o = parse(args("--host 127.0.0.1 --port 9 --access-key a --secret-key s /d")).unwrap();
        assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", 9));
        assert_eq!(o.credentials, Some(("a".into(), "s".into())));
        assert_eq!(o.root, PathBuf::from("/d"));
    }

    #[test]
    fn bad_options_are_refused() {
        for line in ["", "--port x /d", "--access-key a /d", "--bogus /d", "/d /e", "--host"] {
            assert!(parse(args(line)).is_err(), "{line:?}");
        }
    }
}
