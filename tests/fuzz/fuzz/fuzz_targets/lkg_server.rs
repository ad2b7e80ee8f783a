//! libFuzzer target: [`confstore_fuzz::lkg_server`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| confstore_fuzz::lkg_server(data));
