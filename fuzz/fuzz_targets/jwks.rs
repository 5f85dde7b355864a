#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_fleet::fuzzing::jwks(data));
