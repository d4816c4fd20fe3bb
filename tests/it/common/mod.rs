//! Helpers shared by the integration tests.
#![allow(dead_code)]

/// Runs each named `fn(Backend)` as two tests, `name::sqlite` and
/// `name::postgres`: the store suites run on both backends.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::common::server::Backend;

            #[test]
            fn sqlite() {
                super::$name(Backend::Sqlite)
            }

            #[test]
            fn postgres() {
                super::$name(Backend::Postgres)
            }
        }
    )*};
}

use std::path::Path;

/// Reads a hex vector from `tests/vectors/NAME` (whitespace ignored).
pub fn vector(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hex(&text)
}

/// Decodes hex, ignoring whitespace.
pub fn hex(text: &str) -> Vec<u8> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    ::hex::decode(clean).expect("test vector is valid hex")
}

pub fn hex16(text: &str) -> [u8; 16] {
    hex(text).try_into().expect("16 bytes")
}
pub mod fake_nas;
pub mod freeradius;
pub mod pg;
pub mod server;
