// Prints something from every dependency whose build script ran, and from our own build script.
use num_traits::{Float, PrimInt};
use std::ffi::CStr;
use typenum::Unsigned;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}

fn zlib() -> String {
    let version = unsafe { CStr::from_ptr(libz_sys::zlibVersion()) }.to_string_lossy().into_owned();
    let data = b"reapi";
    let crc = unsafe { libz_sys::crc32(0, data.as_ptr(), data.len() as _) };
    // Only the major version: the point is that the system library was found and linked.
    format!("zlib {} crc32 {:08x}", version.split('.').next().unwrap_or("?"), crc)
}

fn failing() -> anyhow::Result<()> {
    let inner: Result<(), std::io::Error> = Err(std::io::Error::new(std::io::ErrorKind::Other, "disk on fire"));
    anyhow::Context::context(inner, "while saving")?;
    Ok(())
}

extern "C" {
    fn demo_fletcher32(data: *const u8, len: usize) -> u32;
}

fn is_serialize<T: serde::Serialize>(_: &T) -> bool {
    true
}

fn main() {
    println!("libc: EXIT_FAILURE={} page size known={}", libc::EXIT_FAILURE, unsafe { libc::sysconf(libc::_SC_PAGESIZE) } > 0);
    println!("num-traits: 7^3={} sqrt(2)={:.6} ones(255u8)={}", num_traits::pow(7u32, 3), Float::sqrt(2f64), PrimInt::count_ones(255u8));
    println!("typenum: U7+U5={} U2^U10={}", <typenum::Sum<typenum::U7, typenum::U5> as Unsigned>::to_u32(), <typenum::Exp<typenum::U2, typenum::U10> as Unsigned>::to_u64());
    println!("libz-sys: {}", zlib());
    println!("crc32fast: {:08x}", crc32fast::hash(b"reapi"));
    println!("serde: serializable={}", is_serialize(&("x", 1u8)));
    println!("anyhow: {:#}", failing().unwrap_err());
    let tokens: proc_macro2::TokenStream = "fn answer ( ) -> u8 { 42 }".parse().unwrap();
    println!("proc-macro2: {}", tokens);
    println!("own: greeting={:?} words={}", generated::GREETING, generated::GREETING_WORDS);
    let greeting = generated::GREETING.as_bytes();
    println!("own: C checksum of the greeting {:08x}", unsafe { demo_fletcher32(greeting.as_ptr(), greeting.len()) });
    #[cfg(demo_generated)]
    println!("own: cfg demo_generated is set");
    #[cfg(not(demo_generated))]
    println!("own: cfg demo_generated is NOT set");
    println!("own: {}", env!("DEMO_BUILD_INFO"));
    println!("rustc: release={}", env!("DEMO_RUSTC_RELEASE"));
    let manifest = env!("DEMO_MANIFEST_DIR");
    println!("own: manifest dir is the host's: {}", std::path::Path::new(manifest).join("Cargo.toml").exists());
}
