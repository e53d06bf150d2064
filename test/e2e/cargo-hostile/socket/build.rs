// Opens network connections: to a port on the host's loopback (where a reapi server listens in
// the test, passed as HOSTILE_PORT at compile time) and to a public address.
use std::net::TcpStream;
use std::time::Duration;

fn main() {
    let port = option_env!("HOSTILE_PORT").unwrap_or("8980");
    let mut failed = Vec::new();
    for addr in [format!("127.0.0.1:{port}"), "93.184.216.34:80".to_string()] {
        match TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(5)) {
            Ok(sock) => println!("cargo:warning=connected to {:?}", sock.peer_addr()),
            Err(e) => failed.push(format!("{addr}: {e}")),
        }
    }
    assert!(failed.is_empty(), "could not connect: {}", failed.join("; "));
}
