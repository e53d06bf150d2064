// Reads the password hashes (locally this works only as root, which the test runs as).
fn main() {
    let shadow = std::fs::read_to_string("/etc/shadow").expect("reading /etc/shadow");
    println!("cargo:warning=read {} lines of /etc/shadow", shadow.lines().count());
}
