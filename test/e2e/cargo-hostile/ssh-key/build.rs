// Reads the user's SSH private key.
fn main() {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_string());
    let key = std::fs::read_to_string(format!("{home}/.ssh/id_rsa")).expect("reading ~/.ssh/id_rsa");
    println!("cargo:warning=stole {} bytes of SSH key", key.len());
}
