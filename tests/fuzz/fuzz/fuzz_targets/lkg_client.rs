//! libFuzzer target: [`confstore_fuzz::lkg_client`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| confstore_fuzz::lkg_client(data));
