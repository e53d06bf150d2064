// A fork bomb: every copy starts copies of itself, forever. Only run it in a sandbox: the test never
// runs this one locally.
use std::process::Command;

fn main() {
    if std::env::var("HOSTILE_I_MEAN_IT").is_err() && std::env::var("OUT_DIR").map(|d| !d.starts_with("/build-")).unwrap_or(true) {
        // Outside reapi's sandbox (OUT_DIR is not under /build-script or a verifier's /build-*): refuse.
        panic!("the fork bomb only runs in reapi's build-script sandbox");
    }
    let me = std::env::current_exe().unwrap();
    loop {
        let _ = Command::new(&me).env("HOSTILE_I_MEAN_IT", "1").spawn();
    }
}
